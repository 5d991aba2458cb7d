"""The 1-D k-means solver and cluster pruning (prunekit.cluster; chapter 3).

What is checked:

* ``kmeans_1d``: the exact optimum on small inputs (brute force over all interval
  partitions, also as a property test, and an independent O(k n^2) DP), inertia <=
  scikit-learn's ``KMeans(n_init=10, random_state=0)`` on several distributions,
  ascending centres, labels = nearest centre (ties to the lower index), determinism,
  purity, validation, and the NumPy (CPU) and torch (CUDA) code paths giving identical
  results;
* the solver's parts: the DP variants agree, chunked prefix sums equal plain ones, the
  table-based labels equal a binary search, including at the midpoints themselves;
* ``kmeans_mask``: whole clusters, smallest |centre| first, the count nearest to the
  target with the documented tie rules, sparsity 0 and 1, nesting, the info table.
"""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest
import torch
from _kmeans_data import distribution
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import prunekit as pk
from prunekit import _arrays
from prunekit._validation import check_weight
from prunekit.cluster import _ops, solver
from prunekit.cluster._ops import NUMPY, NumpyOps, TorchOps

sklearn_cluster = pytest.importorskip("sklearn.cluster")
threadpoolctl = pytest.importorskip("threadpoolctl")  # a scikit-learn dependency

# small tensors, and the torch path run on the CPU: one thread avoids OpenMP spin-waits
pytestmark = pytest.mark.usefixtures("one_thread")

HYPO = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------



def inertia(x: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor) -> float:
    x = x.detach().reshape(-1).double().cpu()
    return float(((x - centers.double().cpu()[labels.reshape(-1).cpu()]) ** 2).sum())


def brute_force_optimum(values: np.ndarray, k: int) -> float:
    """Minimum inertia over every split of the sorted values into k intervals."""
    v = np.sort(values.astype(np.float64))
    n = v.size
    best = np.inf
    for cuts in itertools.combinations(range(1, n), k - 1):
        total = sum(((p - p.mean()) ** 2).sum() for p in np.split(v, cuts))
        best = min(best, total)
    return best


def reference_optimum(values: np.ndarray, k: int) -> float:
    """Textbook O(k n^2) DP (Wang & Song 2011), written independently of prunekit."""
    v = np.sort(values.astype(np.float64))
    n = v.size
    p1 = np.concatenate([[0.0], np.cumsum(v)])
    p2 = np.concatenate([[0.0], np.cumsum(v * v)])
    D = np.full((k + 1, n + 1), np.inf)
    D[0, 0] = 0.0
    for j in range(1, k + 1):
        for i in range(j, n + 1):
            t = np.arange(j - 1, i)
            cost = (p2[i] - p2[t]) - (p1[i] - p1[t]) ** 2 / (i - t)
            D[j, i] = np.min(D[j - 1, t] + cost)
    return float(D[k, n])


def sklearn_inertia(x: torch.Tensor, k: int) -> float:
    data = x.detach().reshape(-1, 1).double().cpu().numpy()
    with threadpoolctl.threadpool_limits(1):  # OpenMP threads crawl on a busy machine
        fit = sklearn_cluster.KMeans(n_clusters=k, n_init=10, random_state=0).fit(data)
    return float(((data[:, 0] - fit.cluster_centers_[fit.labels_, 0]) ** 2).sum())


def check_nearest(x: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor) -> None:
    """labels[i] is the lowest index among the centres nearest to x[i] (exact float64)."""
    xd = x.detach().reshape(-1, 1).double().cpu()
    d = (xd - centers.double().cpu()[None, :]).abs()
    dmin = d.min(dim=1).values
    first = (d == dmin[:, None]).double().argmax(dim=1)  # first index attaining the min
    assert torch.equal(labels.reshape(-1).cpu(), first)


@contextlib.contextmanager
def torch_path(on: bool = True):
    """Run the solver's torch implementation on the CPU (the code CUDA tensors use)."""
    before = _ops.FORCE_TORCH
    _ops.FORCE_TORCH = on
    try:
        yield
    finally:
        _ops.FORCE_TORCH = before


# --------------------------------------------------------------------------------------
# kmeans_1d: exactness and quality
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_kmeans_1d_is_the_brute_force_optimum_on_tiny_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    n = 6 + seed  # 6..11 values
    # integer-valued data has duplicates and ties at midpoints; random data has neither
    data = [torch.randint(-4, 5, (n,), generator=g).double(), torch.randn(n, generator=g, dtype=torch.float64)]
    for x in data:
        d = x.unique().numel()
        for k in range(1, min(d, 5) + 1):
            centers, labels = pk.kmeans_1d(x, k)
            best = brute_force_optimum(x.numpy(), k)
            assert inertia(x, centers, labels) <= best * (1 + 1e-12) + 1e-12
            check_nearest(x, centers, labels)


@pytest.mark.parametrize("name", ["normal", "laplace", "bimodal", "trained"])
@pytest.mark.parametrize("k", [2, 3, 8, 16])
def test_kmeans_1d_matches_an_independent_dp_on_small_inputs(name, k):
    x = distribution(name, 150, seed=k).double()  # 150 distinct values: the exact path
    centers, labels = pk.kmeans_1d(x, k)
    best = reference_optimum(x.numpy(), k)
    assert inertia(x, centers, labels) == pytest.approx(best, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", ["normal", "laplace", "bimodal", "trained", "pruned"])
@pytest.mark.parametrize("k", [4, 16])
def test_kmeans_1d_is_at_least_as_good_as_sklearn(name, k):
    """n = 6000 distinct values: the summary DP + Lloyd path (not the exact one)."""
    x = distribution(name, 6000, seed=10 + k)
    ours = inertia(x, *pk.kmeans_1d(x, k))
    assert ours <= sklearn_inertia(x, k) * (1 + 1e-6)  # float32 centres: rounding only


def test_kmeans_1d_with_many_clusters_beats_sklearn():
    x = distribution("normal", 4000, seed=3)
    ours = inertia(x, *pk.kmeans_1d(x, 64))
    assert ours <= sklearn_inertia(x, 64) * (1 + 1e-6)


@pytest.mark.parametrize("name", ["normal", "laplace", "bimodal"])
def test_kmeans_1d_summary_path_reaches_the_exact_optimum(monkeypatch, name):
    """6000 distinct values, k=8: summary DP + refinement + Lloyd versus the exact DP."""
    x = distribution(name, 6000, seed=1).double()
    ours = inertia(x, *pk.kmeans_1d(x, 8))
    monkeypatch.setattr(solver, "_EXACT_MAX", 10**9)  # force the exact DP over all values
    exact = inertia(x, *pk.kmeans_1d(x, 8))
    assert ours == pytest.approx(exact, rel=1e-9)


def dp_problem(m: int, seed: int = 0):
    """Prefix sums (counts, values, squares) of m sorted random values, as float64 tensors."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(m, generator=g, dtype=torch.float64).sort().values
    zero = torch.zeros(1, dtype=torch.float64)
    W = torch.arange(m + 1, dtype=torch.float64)
    return W, torch.cat([zero, v.cumsum(0)]), torch.cat([zero, (v * v).cumsum(0)]), v


@pytest.mark.parametrize("m", [40, 200])
def test_exact_dp_paths_agree(monkeypatch, m):
    """Dense rows without and with pivot rows (small problems), divide and conquer (larger
    ones), each in NumPy and in torch (the CUDA code), give the same optimal cuts."""
    W, S, Q, v = dp_problem(m)
    torch_ops = TorchOps(torch.device("cpu"))
    for k in (2, 5, 9):
        cuts = {}
        for name, ops, args in (("numpy", NUMPY, [t.numpy() for t in (W, S, Q)]),
                                ("torch", torch_ops, [W, S, Q])):
            cuts[f"{name} pivots"] = solver.dp_cuts(*args, k, ops)
            with monkeypatch.context() as mp:
                mp.setattr(solver, "_PIVOT_MIN", 10**9)  # every row dense
                cuts[f"{name} dense"] = solver.dp_cuts(*args, k, ops)
                mp.setattr(solver, "_DENSE_WORK", 0)  # divide and conquer
                cuts[f"{name} monotone"] = solver.dp_cuts(*args, k, ops)
        first = cuts["numpy pivots"]
        assert all(c == first for c in cuts.values()), cuts
        assert first == sorted(first) and len(first) == k + 1 and first[0] == 0 and first[-1] == m
        x = v.numpy()
        cost = sum(((x[a:b] - x[a:b].mean()) ** 2).sum() for a, b in zip(first, first[1:]))
        assert cost == pytest.approx(reference_optimum(x, k), rel=1e-12)


# --------------------------------------------------------------------------------------
# kmeans_1d: contract
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_kmeans_1d_shapes_dtypes_order_and_nearest_labels(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 9, 11, generator=g).to(dtype)
    centers, labels = pk.kmeans_1d(x, 6)
    assert centers.shape == (6,) and centers.dtype == dtype and centers.device == x.device
    assert labels.shape == x.shape and labels.dtype == torch.int64
    assert bool((centers[1:] > centers[:-1]).all())
    check_nearest(x, centers, labels)
    assert torch.equal(torch.bincount(labels.reshape(-1), minlength=6) > 0, torch.ones(6, dtype=torch.bool))


def test_kmeans_1d_half_way_values_go_to_the_lower_centre():
    x = torch.tensor([0.0, 0.0, 1.0, 2.0, 2.0])  # 1.0 is half-way between centres 0 and 2
    centers, labels = pk.kmeans_1d(x, 2)
    check_nearest(x, centers, labels)


def test_kmeans_1d_is_deterministic_pure_and_accepts_parameters():
    w = nn.Parameter(distribution("normal", 5000, seed=4).view(50, 100))
    before = w.detach().clone()
    a = pk.kmeans_1d(w, 8)
    b = pk.kmeans_1d(w, 8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(w.detach(), before) and w.grad is None


@pytest.mark.parametrize("n, k, dp_max", [(40, 5, 1024), (300, 16, 1024), (5000, 8, 1024),
                                          (5000, 64, 1024), (1500, 100, 1024), (70000, 16, 1024),
                                          (5000, 16, 8)])
def test_numpy_and_torch_code_paths_agree(monkeypatch, n, k, dp_max):
    """On the CPU the core runs in NumPy; elsewhere (CUDA) in torch. Same results (70000
    values: chunked prefix sums and table labels; more clusters than ``dp_max``: the
    equal-count start used beyond 1024 clusters)."""
    monkeypatch.setattr(solver, "_DP_MAX_CLUSTERS", dp_max)
    x = distribution("normal", n, seed=n + k)
    c1, l1 = pk.kmeans_1d(x, k)
    m1 = pk.kmeans_mask(x, 0.4, n_clusters=k)
    monkeypatch.setattr(_ops, "FORCE_TORCH", True)
    c2, l2 = pk.kmeans_1d(x, k)
    assert torch.equal(c1, c2) and torch.equal(l1, l2)
    assert torch.equal(m1, pk.kmeans_mask(x, 0.4, n_clusters=k))


def test_kmeans_1d_constant_and_few_distinct_values():
    x = torch.full((4, 4), 0.25)
    centers, labels = pk.kmeans_1d(x, 1)
    assert centers.tolist() == [0.25] and not labels.any()
    with pytest.raises(ValueError, match=r"must be <= the number of distinct values in 'x' \(1\)\. Got 2"):
        pk.kmeans_1d(x, 2)
    x = torch.tensor([1.0, 1.0, 3.0, 3.0, 3.0, 7.0])
    centers, labels = pk.kmeans_1d(x, 3)  # k = number of distinct values: each its own centre
    assert centers.tolist() == [1.0, 3.0, 7.0] and labels.tolist() == [0, 0, 1, 1, 1, 2]
    with pytest.raises(ValueError, match=r"\(3\)\. Got 4 instead"):
        pk.kmeans_1d(x, 4)


@pytest.mark.parametrize("bad, exc, match", [
    (True, TypeError, "must be an integer >= 1. Got True"),
    (2.0, TypeError, "Got 2.0"),
    ("3", TypeError, "Got '3'"),
    (0, ValueError, "Got 0"),
    (-2, ValueError, "Got -2"),
])
def test_kmeans_1d_rejects_bad_n_clusters(bad, exc, match):
    with pytest.raises(exc, match=f"'n_clusters' parameter of kmeans_1d {match}".replace(" Got", ".*Got")):
        pk.kmeans_1d(torch.randn(10), bad)


def test_kmeans_1d_rejects_bad_tensors_and_leaves_them_alone():
    x = torch.tensor([1.0, float("nan"), 2.0])
    before = x.clone()
    with pytest.raises(ValueError, match="'x' parameter of kmeans_1d must contain only finite values"):
        pk.kmeans_1d(x, 2)
    assert torch.equal(x.isnan(), before.isnan()) and x[0] == 1.0 and x[2] == 2.0
    with pytest.raises(ValueError, match="finite"):
        pk.kmeans_1d(torch.tensor([1.0, float("inf")]), 1)
    with pytest.raises(TypeError, match="floating-point"):
        pk.kmeans_1d(torch.arange(5), 2)
    with pytest.raises(TypeError, match="torch.Tensor"):
        pk.kmeans_1d([0.1, 0.2], 1)
    with pytest.raises(ValueError, match="non-empty"):
        pk.kmeans_1d(torch.empty(0), 1)


# --------------------------------------------------------------------------------------
# kmeans_mask
# --------------------------------------------------------------------------------------


def test_kmeans_mask_sparsity_zero_and_one():
    w = distribution("normal", 1000, seed=2).view(20, 50)
    assert pk.kmeans_mask(w, 0.0).all()
    assert not pk.kmeans_mask(w, 1.0).any()
    mask = pk.kmeans_mask(w, 0.0)
    assert mask.dtype == torch.bool and mask.shape == w.shape


@pytest.mark.parametrize("sparsity", [0.1, 0.3, 0.5, 0.72, 0.9])
@pytest.mark.parametrize("k", [4, 8, 16])
def test_kmeans_mask_prunes_whole_clusters_nearest_to_the_target(sparsity, k):
    w = distribution("laplace", 3000, seed=k).view(60, 50)
    before = w.clone()
    mask, info = pk.kmeans_mask(w, sparsity, n_clusters=k, return_info=True)
    assert torch.equal(w, before)
    centers, labels = pk.kmeans_1d(w, k)
    assert info.centers == tuple(centers.tolist())
    # whole clusters: every cluster is kept or pruned entirely
    for c in range(k):
        members = mask[labels == c]
        assert members.all() or not members.any()
    pruned = [not bool(mask[labels == c].any()) for c in range(k)]
    assert tuple(pruned) == info.pruned_clusters
    # smallest |centre| first
    mags = centers.abs()
    if any(pruned) and not all(pruned):
        assert mags[torch.tensor(pruned)].max() <= mags[~torch.tensor(pruned)].min()
    # the number of weights pruned is the nearest achievable to round(s * n)
    target = round(sparsity * w.numel())
    sizes = torch.bincount(labels.reshape(-1), minlength=k)
    achievable = torch.cat([torch.zeros(1, dtype=torch.long), sizes[mags.argsort(stable=True)].cumsum(0)])
    n_pruned = int((~mask).sum())
    assert abs(n_pruned - target) == int((achievable - target).abs().min())
    assert info.n_pruned == n_pruned and info.n_target == target
    assert info.achieved_sparsity == n_pruned / w.numel() and info.requested_sparsity == sparsity
    assert info.sizes == tuple(sizes.tolist())


def test_kmeans_mask_tie_rules():
    w = torch.tensor([-1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0])  # centres -1, 0, 1
    # |-1| == |1|: the negative centre goes first
    assert pk.kmeans_mask(w, 6 / 8, n_clusters=3).tolist() == [False] * 6 + [True] * 2
    # target 5: pruning 4 or 6 weights is equally near; the smaller count wins
    mask, info = pk.kmeans_mask(w, 5 / 8, n_clusters=3, return_info=True)
    assert int((~mask).sum()) == 4 and info.n_clusters_pruned == 1


def test_kmeans_masks_of_one_weight_are_nested():
    w = distribution("normal", 2000, seed=7)
    masks = [pk.kmeans_mask(w, s, n_clusters=8) for s in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)]
    for low, high in zip(masks, masks[1:]):
        assert not (high & ~low).any()  # everything pruned at low is pruned at high


def test_kmeans_mask_info_prints_a_table():
    w = distribution("normal", 500, seed=1)
    mask, info = pk.kmeans_mask(w, 0.5, n_clusters=4, return_info=True)
    text = str(info)
    assert "requested sparsity 50.00%" in text and "achieved" in text
    assert len(text.splitlines()) == 1 + 2 + 4  # title, header and rule, 4 clusters
    row = info.as_dict()
    assert row["requested"] == 0.5 and row["n_clusters"] == 4
    assert row["achieved"] == pytest.approx(float((~mask).float().mean()))


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"sparsity": 1.5}, ValueError, "'sparsity' parameter of kmeans_mask"),
    ({"sparsity": True}, TypeError, "'sparsity' parameter of kmeans_mask"),
    ({"n_clusters": 0}, ValueError, "'n_clusters' parameter of kmeans_mask"),
    ({"n_clusters": 8.0}, TypeError, "'n_clusters' parameter of kmeans_mask"),
    ({"n_clusters": 11}, ValueError, r"distinct values in 'weight' \(10\)"),
    ({"return_info": 1}, TypeError, "'return_info' parameter of kmeans_mask"),
])
def test_kmeans_mask_rejects_bad_arguments(kwargs, exc, match):
    w = torch.arange(10.0)
    args = {"sparsity": 0.5, "n_clusters": 3, **kwargs}
    sparsity = args.pop("sparsity")
    with pytest.raises(exc, match=match):
        pk.kmeans_mask(w, sparsity, **args)
    assert torch.equal(w, torch.arange(10.0))


# --------------------------------------------------------------------------------------
# Property tests
# --------------------------------------------------------------------------------------

# a coarse grid (duplicates, values exactly half-way between centres) mixed with floats;
# magnitudes stay comparable (float64 prefix sums cannot tell 1e-60 from 0 next to 0.25)
_value = st.one_of(st.integers(-8, 8).map(lambda i: i / 4),
                   st.floats(-5, 5, allow_nan=False).filter(lambda v: v == 0 or abs(v) >= 1e-3))
_values = st.lists(_value, min_size=1, max_size=9)


@HYPO
@given(values=_values, k=st.integers(1, 4), dtype=st.sampled_from([torch.float64, torch.float32]),
       use_torch=st.booleans())
def test_kmeans_1d_is_optimal_on_tiny_inputs_property(values, k, dtype, use_torch):
    x = torch.tensor(values, dtype=dtype)
    k = min(k, x.unique().numel())
    with torch_path(use_torch):
        centers, labels = pk.kmeans_1d(x, k)
    assert centers.dtype == dtype and labels.shape == x.shape
    assert bool((centers[1:] > centers[:-1]).all())
    check_nearest(x, centers, labels)
    best = brute_force_optimum(x.double().numpy(), k)
    # float32 centres: the inertia of rounded centres, up to float32 rounding of the data
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert inertia(x, centers, labels) <= best * (1 + tol) + tol


@HYPO
@given(values=st.lists(_value, min_size=2, max_size=300), k=st.integers(1, 12),
       sparsity=st.floats(0, 1))
def test_numpy_and_torch_paths_agree_property(values, k, sparsity):
    x = torch.tensor(values, dtype=torch.float32)
    k = min(k, x.unique().numel())
    c1, l1 = pk.kmeans_1d(x, k)
    m1, i1 = pk.kmeans_mask(x, sparsity, n_clusters=k, return_info=True)
    with torch_path():
        c2, l2 = pk.kmeans_1d(x, k)
        m2, i2 = pk.kmeans_mask(x, sparsity, n_clusters=k, return_info=True)
    assert torch.equal(c1, c2) and torch.equal(l1, l2) and torch.equal(m1, m2) and i1 == i2
    check_nearest(x, c1, l1)


@HYPO
@given(values=st.lists(_value, min_size=2, max_size=200), k=st.integers(1, 8),
       s1=st.floats(0, 1), s2=st.floats(0, 1))
def test_kmeans_mask_prunes_whole_clusters_and_nests_property(values, k, s1, s2):
    x = torch.tensor(values, dtype=torch.float64)
    k = min(k, x.unique().numel())
    low, high = sorted((s1, s2))
    m_low, info = pk.kmeans_mask(x, low, n_clusters=k, return_info=True)
    m_high = pk.kmeans_mask(x, high, n_clusters=k)
    assert not (m_high & ~m_low).any()  # what the lower sparsity prunes stays pruned
    _, labels = pk.kmeans_1d(x, k)
    pruned = torch.tensor(info.pruned_clusters)
    assert torch.equal(m_low, ~pruned[labels])  # exactly the weights of the pruned clusters
    assert info.sizes == tuple(torch.bincount(labels, minlength=k).tolist())


# --------------------------------------------------------------------------------------
# The solver's parts
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, dtype", [(300_000, torch.float32), (70_000, torch.float64),
                                      (5_000, torch.float32)])
@pytest.mark.parametrize("use_torch", [False, True])
def test_chunked_prefix_sums_equal_plain_ones(n, dtype, use_torch):
    x = (distribution("laplace", n, seed=n) * 3 + 1).to(dtype)
    with torch_path(use_torch):
        srt = solver.Sorted(x)
    assert srt.b > 1  # chunked: sums inside a chunk are completed on demand
    v = np.sort(x.double().numpy()) - srt.shift
    S = np.concatenate([[0.0], np.cumsum(v)])
    Q = np.concatenate([[0.0], np.cumsum(v * v)])
    g = np.random.default_rng(0)
    idx = np.concatenate([[0, 1, n - 1, n], np.arange(0, n + 1, srt.b)[:50],  # chunk edges
                          np.arange(srt.b - 1, n, srt.b)[:50], g.integers(0, n + 1, 500)])
    got_s, got_q = srt.prefix(srt.ops.ints(idx))
    got_s, got_q = np.asarray(srt.ops.tensor(got_s)), np.asarray(srt.ops.tensor(got_q))
    assert np.allclose(got_s, S[idx], rtol=1e-10, atol=1e-12 * np.abs(v).sum())
    assert np.allclose(got_q, Q[idx], rtol=1e-10, atol=1e-12 * Q[-1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_table_labels_equal_a_binary_search(dtype):
    """NumpyOps.labels (a table over the top 16 bits) == searchsorted, also at and next to
    every midpoint, at +-0, for subnormal and huge values, and with several midpoints
    sharing one table bin."""
    g = np.random.default_rng(1)
    mids = np.sort(np.concatenate([g.standard_normal(13), [1.0, 1.0 + 1e-6, -0.0, 3e-39]])).astype(dtype)
    tiny = np.finfo(dtype).smallest_subnormal
    special = np.array([0.0, -0.0, tiny, -tiny, 1e30, -1e30, np.finfo(dtype).max, -np.finfo(dtype).max],
                       dtype=dtype)
    near = np.concatenate([mids, np.nextafter(mids, dtype(np.inf)), np.nextafter(mids, dtype(-np.inf))])
    x = np.concatenate([g.standard_normal(200_000).astype(dtype), special, near]).astype(dtype)
    g.shuffle(x)
    assert x.size >= _arrays._LUT_MIN
    got = NumpyOps.labels(x, mids)
    assert got.dtype == np.int64
    assert np.array_equal(got, np.searchsorted(mids, x, side="left"))
    assert np.array_equal(TorchOps.labels(torch.from_numpy(x), torch.from_numpy(mids)).numpy(), got)


def test_round_down_keys_count_exactly():
    """x <= round_down(mid) iff x <= mid for float32 x and float64 mid, in both implementations."""
    g = np.random.default_rng(2)
    x = np.sort(g.standard_normal(5000).astype(np.float32))
    mid = np.concatenate([x[::97].astype(np.float64), x[::89].astype(np.float64) + 1e-12,
                          x[::83].astype(np.float64) - 1e-12, g.standard_normal(50)])
    want = np.array([np.count_nonzero(x.astype(np.float64) <= m) for m in mid])
    for ops, xs, ms in ((NUMPY, x, mid), (TorchOps(torch.device("cpu")), torch.from_numpy(x), torch.from_numpy(mid))):
        keys = ops.round_down(ms, xs.dtype)
        assert np.array_equal(np.asarray(ops.count_le(xs, keys)), want)


def test_finiteness_is_read_off_the_sorted_ends():
    x = torch.tensor([3.0, float("nan"), -1.0])
    assert check_weight(x, "f", finite=False) is x  # the helper skips its own pass
    for bad in (float("nan"), float("inf"), float("-inf")):
        x = torch.tensor([0.5, bad, -1.0, 2.0])
        for use_torch in (False, True):
            with torch_path(use_torch):
                assert not solver.Sorted(x).finite
    assert solver.Sorted(torch.tensor([0.5, -1.0])).finite
    # the tensor's error comes before the other arguments', as before
    with pytest.raises(ValueError, match="'x' parameter of kmeans_1d must contain only finite"):
        pk.kmeans_1d(torch.tensor([1.0, float("nan")]), 0)
    with pytest.raises(ValueError, match="'weight' parameter of kmeans_mask must contain only finite"):
        pk.kmeans_mask(torch.tensor([1.0, float("inf")]), 2.0)
    with pytest.raises(ValueError, match="f can only cluster finite values; 'v' has NaN"):
        solver.cluster_values(torch.tensor([float("nan"), 1.0]), 1, "f", "'v'")

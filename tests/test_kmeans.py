"""K-means (chapter 3): 1-D k-means, cluster masks, the source's code, prune(method="kmeans"),
weight sharing and Deep Compression's size accounting.

What is checked:

* ``kmeans_1d``: the exact optimum on small inputs (brute force over all interval
  partitions, and an independent O(k n^2) DP), inertia <= scikit-learn's
  ``KMeans(n_init=10, random_state=0)`` on several distributions, ascending centres,
  labels = nearest centre (ties to the lower index), determinism, purity, and the
  NumPy (CPU) and torch (CUDA) code paths giving identical results;
* ``kmeans_mask``: whole clusters, smallest |centre| first, the count nearest to the
  target with the documented tie rules, sparsity 0 and 1, nesting, the info table;
* ``source_kmeans_mask``: reproduces the documented problems;
* ``prune(method="kmeans")``: both scopes, nested re-pruning, bad input leaves the model
  untouched;
* ``share_weights``: at most 2**bits shared values, zeros stay zero, centroid gradients
  are the sums of their weights' gradients, fine-tuning keeps sharing, state_dict and
  deepcopy;
* ``compression_report`` on hand-computed examples (including the paper's).
"""

from __future__ import annotations

import copy
import io
import itertools

import numpy as np
import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit import reference, sharing
from prunekit.cluster import solver as km

sklearn_cluster = pytest.importorskip("sklearn.cluster")
threadpoolctl = pytest.importorskip("threadpoolctl")  # a scikit-learn dependency


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


def distribution(name: str, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if name == "normal":
        return torch.randn(n, generator=g)
    if name == "laplace":
        u = torch.rand(n, generator=g) - 0.5
        return -torch.sign(u) * torch.log1p(-2 * u.abs())
    if name == "bimodal":
        a = torch.randn(n, generator=g)
        return torch.where(torch.rand(n, generator=g) < 0.3, 0.3 * a - 2.0, 0.5 * a + 1.0)
    if name == "trained":  # peaked, heavy-tailed, slightly skewed: like a trained layer
        z = torch.randn(n, generator=g)
        chi = torch.randn(n, 3, generator=g).pow(2).sum(1) / 3  # Student-t with 3 dof
        return 0.05 * z / chi.sqrt() + 0.002
    if name == "pruned":  # a magnitude-pruned layer's survivors: two tails, a gap at zero
        z = 0.05 * torch.randn(n * 3, generator=g)
        return z[z.abs() > 0.05][:n]
    raise ValueError(name)


def check_nearest(x: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor) -> None:
    """labels[i] is the lowest index among the centres nearest to x[i] (exact float64)."""
    xd = x.detach().reshape(-1, 1).double().cpu()
    d = (xd - centers.double().cpu()[None, :]).abs()
    dmin = d.min(dim=1).values
    first = (d == dmin[:, None]).double().argmax(dim=1)  # first index attaining the min
    assert torch.equal(labels.reshape(-1).cpu(), first)


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))


def snapshot(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(model: nn.Module, state: dict) -> bool:
    now = model.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)


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
    monkeypatch.setattr(km, "_EXACT_MAX", 10**9)  # force the exact DP over all values
    exact = inertia(x, *pk.kmeans_1d(x, 8))
    assert ours == pytest.approx(exact, rel=1e-9)


def test_exact_dp_paths_agree(monkeypatch):
    """Dense rows (small problems), divide and conquer (NumPy) and divide and conquer
    (torch, the CUDA code) give the same optimal cuts."""
    g = torch.Generator().manual_seed(0)
    W = torch.arange(201, dtype=torch.float64)
    v = torch.randn(200, generator=g, dtype=torch.float64).sort().values
    S = torch.cat([torch.zeros(1, dtype=torch.float64), v.cumsum(0)])
    Q = torch.cat([torch.zeros(1, dtype=torch.float64), (v * v).cumsum(0)])

    def backtrack(args):
        cuts = [200]
        for arg in reversed(args):
            cuts.append(int(arg[cuts[-1]]))
        return [0, *cuts[::-1]]

    for k in (2, 5, 9):
        dense = km._dp(W, S, Q, k).tolist()
        with monkeypatch.context() as mp:
            mp.setattr(km, "_DENSE_WORK", 0)
            dc = km._dp(W, S, Q, k).tolist()
        dc_torch = backtrack(km._dp_rows(W, S, Q, k, km._TorchOps(W.device)))
        assert dense == dc == dc_torch
        assert dense == sorted(dense) and len(dense) == k + 1
        x = v.numpy()
        cost = sum(((x[a:b] - x[a:b].mean()) ** 2).sum() for a, b in zip(dense, dense[1:]))
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


@pytest.mark.parametrize("n, k", [(40, 5), (300, 16), (5000, 8), (5000, 64), (1500, 100)])
def test_numpy_and_torch_code_paths_agree(monkeypatch, n, k):
    """On the CPU the core runs in NumPy; elsewhere (CUDA) in torch. Same results."""
    x = distribution("normal", n, seed=n + k)
    c1, l1 = pk.kmeans_1d(x, k)
    m1 = pk.kmeans_mask(x, 0.4, n_clusters=k)
    monkeypatch.setattr(km, "_FORCE_TORCH", True)
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
    assert len(text.splitlines()) == 1 + 1 + 4
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
# The source document's kmeans()
# --------------------------------------------------------------------------------------


def test_source_kmeans_mask_reproduces_the_documented_problems():
    w = distribution("normal", 1500, seed=0).view(30, 50)
    with threadpoolctl.threadpool_limits(1):
        at0 = reference.source_kmeans_mask(w, 8, 0.0, seed=0)
        at5 = reference.source_kmeans_mask(w, 8, 0.5, seed=0)
        fit = sklearn_cluster.KMeans(n_clusters=8, random_state=0).fit(w.reshape(-1, 1).numpy())
    # sparsity 0 still prunes (the cluster with the smallest |centre|)
    assert 0.0 < 1 - at0.float().mean() < 0.5
    # "sparsity" is a fraction of clusters: 0.5 prunes far more than half of the weights
    assert float(1 - at5.float().mean()) > 0.6
    # ... while prunekit's kmeans_mask lands near the request
    assert abs(pk.sparsity(w * pk.kmeans_mask(w, 0.5, n_clusters=8)) - 0.5) < 0.1
    assert at0.dtype == torch.bool and at0.shape == w.shape
    # the source's loop equals the vectorised mask[labels]: same clustering, same mask
    mags = torch.tensor(fit.cluster_centers_[:, 0]).abs()
    keep_cluster = mags > torch.quantile(mags, 0.5)
    assert torch.equal(at5, keep_cluster[torch.as_tensor(fit.labels_).long()].view(w.shape))
    assert int((~keep_cluster).sum()) == 4  # half of the *clusters*


# --------------------------------------------------------------------------------------
# prune(method="kmeans")
# --------------------------------------------------------------------------------------

LINEARS = ["0", "2", "4"]


def test_prune_kmeans_layer_scope_is_kmeans_mask_per_layer():
    model = mlp()
    weights = {n: model.get_submodule(n).weight.detach().clone() for n in LINEARS}
    info = {}
    pk.prune(model, 0.6, method="kmeans", n_clusters=6, info=info)
    for n in LINEARS:
        expected = pk.kmeans_mask(weights[n], 0.6, n_clusters=6)
        assert torch.equal(model.get_submodule(n).weight_mask.bool(), expected)
        assert info[n].n_pruned == int((~expected).sum())
    assert set(info) == set(LINEARS)


def test_prune_kmeans_global_scope_clusters_all_layers_together():
    model = mlp(1)
    weights = [model.get_submodule(n).weight.detach().clone() for n in LINEARS]
    flat = torch.cat([w.reshape(-1) for w in weights])
    expected = pk.kmeans_mask(flat, 0.7, n_clusters=8)
    info = {}
    pk.prune(model, 0.7, method="kmeans", scope="global", info=info)
    got = torch.cat([model.get_submodule(n).weight_mask.bool().reshape(-1) for n in LINEARS])
    assert torch.equal(got, expected)
    assert info["global"].n_pruned == int((~expected).sum())
    assert pk.sparsity(model) == pytest.approx(info["global"].achieved_sparsity)
    per_layer = [float((model.get_submodule(n).weight == 0).float().mean()) for n in LINEARS]
    assert max(per_layer) - min(per_layer) > 0.01  # layers end up at different sparsities


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_prune_kmeans_is_nested_and_clusters_only_unpruned_weights(scope):
    model = mlp(2)
    pk.prune(model, 0.3, method="kmeans", scope=scope, n_clusters=5)
    first = {n: model.get_submodule(n).weight_mask.bool().clone() for n in LINEARS}
    info = {}
    pk.prune(model, 0.75, method="kmeans", scope=scope, n_clusters=5, info=info)
    for n in LINEARS:
        now = model.get_submodule(n).weight_mask.bool()
        assert not (now & ~first[n]).any()  # never revived
    for row in info.values():
        assert row.n_already_pruned > 0
        assert sum(row.sizes) == row.n_weights - row.n_already_pruned  # pruned ones not clustered
    total = sum(int((model.get_submodule(n).weight_mask == 0).sum()) for n in LINEARS)
    assert total == sum(row.n_pruned for row in info.values())
    assert pk.sparsity(model) > 0.5


def test_prune_kmeans_warns_when_already_past_the_target():
    model = mlp(3)
    pk.prune(model, 0.8, method="l1")
    before = snapshot(model)
    with pytest.warns(UserWarning, match="already pruned"):
        pk.prune(model, 0.5, method="kmeans")
    assert same_state(model, before)


def test_prune_kmeans_accepts_a_per_layer_plan():
    model = mlp(4)
    pk.prune(model, {"0": 0.5, "4": 0.9}, method="kmeans", n_clusters=4)
    assert not hasattr(model[2], "weight_mask")
    assert pk.sparsity(model[4].weight) > 0.6


@pytest.mark.parametrize("options, exc, match", [
    ({"n_clusters": True}, TypeError, "'n_clusters' parameter of prune"),
    ({"n_clusters": 0}, ValueError, "'n_clusters' parameter of prune"),
    ({"n_clusters": 2.5}, TypeError, "'n_clusters' parameter of prune"),
    ({"n_clusters": 50}, ValueError, r"unpruned weights of layer '4' \(48\)"),  # 3x16 layer
    ({"info": []}, TypeError, "'info' parameter of prune"),
    ({"bits": 4}, TypeError, "unexpected keyword"),
])
def test_prune_kmeans_bad_options_leave_the_model_untouched(options, exc, match):
    model = mlp(5)
    before = snapshot(model)
    info = {}
    opts = {"info": info, **options}
    with pytest.raises(exc, match=match):
        pk.prune(model, 0.5, method="kmeans", **opts)
    assert same_state(model, before) and info == {}
    assert not any(hasattr(m, "weight_mask") for m in model.modules())


def test_prune_kmeans_with_nan_weights_leaves_the_model_untouched():
    model = mlp(6)
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    keys = set(model.state_dict())
    with pytest.raises(ValueError, match="finite"):
        pk.prune(model, 0.5, method="kmeans")
    assert set(model.state_dict()) == keys


# --------------------------------------------------------------------------------------
# Weight sharing
# --------------------------------------------------------------------------------------


def pruned_mlp(seed=0, sparsity=0.7) -> nn.Sequential:
    model = mlp(seed)
    pk.prune(model, sparsity)
    return model


@pytest.mark.parametrize("init", sharing.SHARING_INITS)
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_share_weights_uses_at_most_2_to_the_bits_values_and_keeps_zeros(init, bits):
    model = pruned_mlp()
    zeros = {n: model.get_submodule(n).weight == 0 for n in LINEARS}
    before = {n: pk.effective_tensor(model.get_submodule(n)).clone() for n in LINEARS}
    pk.share_weights(model, bits=bits, init=init)
    for n in LINEARS:
        layer = model.get_submodule(n)
        w = layer.weight
        assert torch.equal(w == 0, zeros[n])
        assert w[w != 0].unique().numel() <= 2 ** bits
        shared = layer.parametrizations.weight[0]
        assert shared.codebook.numel() == 2 ** bits
        assert torch.equal(w, shared.codebook[shared.indices.long()] * shared.mask)
        # every weight sits at the nearest centroid of its original value
        orig = before[n][~zeros[n]]
        cb = shared.codebook.detach()
        nearest = cb[(orig[:, None] - cb[None, :]).abs().argmin(1)]
        assert torch.allclose(w[~zeros[n]], nearest)
    assert pk.sparsity(model) == pytest.approx(0.7, abs=0.01)


def test_share_weights_centroids_are_the_means_of_their_weights():
    model = pruned_mlp(1)
    orig = pk.effective_tensor(model[0]).clone()
    pk.share_weights(model, n_clusters=5)
    shared = model[0].parametrizations.weight[0]
    for c in range(5):
        members = orig[(shared.indices.long() == c) & shared.mask]
        if members.numel():
            assert shared.codebook[c].item() == pytest.approx(members.double().mean().item(), abs=1e-6)


def test_share_weights_kmeans_init_has_the_lowest_error():
    model = pruned_mlp(2)
    orig = pk.effective_tensor(model[0]).clone()
    errors = {}
    for init in sharing.SHARING_INITS:
        m = copy.deepcopy(model)
        pk.share_weights(m, bits=3, init=init)
        errors[init] = float(((m[0].weight.detach() - orig) ** 2).sum())
    assert errors["kmeans"] <= min(errors.values()) * (1 + 1e-6)


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    model = pruned_mlp(3)
    pk.share_weights(model, bits=3)
    x = torch.randn(9, 12, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (9,), generator=torch.Generator().manual_seed(1))
    nn.functional.cross_entropy(model(x), y).backward()
    # by hand: the same network with plain weight tensors, then sum per centroid
    plain = [model.get_submodule(n).weight.detach().clone().requires_grad_(True) for n in LINEARS]
    h = x
    for i, (n, w) in enumerate(zip(LINEARS, plain)):
        h = nn.functional.linear(h, w, model.get_submodule(n).bias)
        if i < 2:
            h = torch.relu(h)
    nn.functional.cross_entropy(h, y).backward()
    for n, w in zip(LINEARS, plain):
        shared = model.get_submodule(n).parametrizations.weight[0]
        idx, mask = shared.indices.long(), shared.mask
        expected = torch.stack([w.grad[(idx == c) & mask].sum() for c in range(8)])
        assert torch.allclose(shared.codebook.grad, expected, atol=1e-6)
        assert model.get_submodule(n).parametrizations.weight.original.grad is None


def test_fine_tuning_moves_centroids_and_keeps_sharing():
    model = pruned_mlp(4)
    pk.share_weights(model, bits=2)
    zeros = model[0].weight == 0
    before = model[0].parametrizations.weight[0].codebook.detach().clone()
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # plain SGD steps over every parameter, as an optimizer would take
        x, y = torch.randn(16, 12, generator=g), torch.randint(0, 3, (16,), generator=g)
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= 0.1 * p.grad
    after = model[0].parametrizations.weight[0].codebook.detach()
    assert not torch.equal(before, after)
    assert torch.equal(model[0].weight == 0, zeros)
    w = model[0].weight
    assert w[w != 0].unique().numel() <= 4


def test_shared_model_survives_state_dict_and_deepcopy():
    model = pruned_mlp(5)
    pk.share_weights(model, bits=3)
    with torch.no_grad():
        model[0].parametrizations.weight[0].codebook.add_(0.01)  # as after fine-tuning
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = pruned_mlp(6)  # prepared the same way: pruned, then shared
    pk.share_weights(fresh, bits=3)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(5, 12)
    assert torch.equal(fresh(x), model(x))
    twin = copy.deepcopy(model)
    assert torch.equal(twin(x), model(x))
    with torch.no_grad():
        twin[0].parametrizations.weight[0].codebook.mul_(2)
    assert not torch.equal(twin(x), model(x))  # an independent copy


def test_share_weights_exclude_and_unpruned_layers():
    model = mlp(7)  # not pruned: every weight is shared, none is zero
    pk.share_weights(model, n_clusters=3, exclude=["4"])
    assert model[0].weight.unique().numel() <= 3 and pk.sparsity(model[0].weight) == 0.0
    assert not hasattr(model[4], "parametrizations")


@pytest.mark.parametrize("kwargs, exc, match", [
    ({}, TypeError, "exactly one of 'bits' and 'n_clusters'"),
    ({"bits": 3, "n_clusters": 8}, TypeError, "exactly one"),
    ({"bits": 0}, ValueError, "'bits' parameter of share_weights"),
    ({"bits": 17}, ValueError, "'bits' parameter of share_weights"),
    ({"bits": True}, TypeError, "'bits' parameter of share_weights"),
    ({"n_clusters": 0}, ValueError, "'n_clusters' parameter of share_weights"),
    ({"bits": 2, "init": "forgy"}, ValueError, "'init' parameter of share_weights"),
    ({"bits": 2, "exclude": ["nope"]}, ValueError, "'exclude' parameter of share_weights"),
])
def test_share_weights_bad_arguments_leave_the_model_untouched(kwargs, exc, match):
    model = pruned_mlp(8)
    before = snapshot(model)
    with pytest.raises(exc, match=match):
        pk.share_weights(model, **kwargs)
    assert same_state(model, before)


def test_share_weights_refuses_shared_or_nan_layers_without_changes():
    model = pruned_mlp(9)
    pk.share_weights(model, bits=2, exclude=["4"])
    before = snapshot(model)
    with pytest.raises(ValueError, match="already shares weights"):
        pk.share_weights(model, bits=2)
    assert same_state(model, before)
    assert not hasattr(model[4], "parametrizations")  # the valid layer was not shared either
    model = pruned_mlp(10)
    with torch.no_grad():
        model[2].weight_orig[0, 0] = float("inf")
        model[2].weight_mask[0, 0] = 1.0
    before = snapshot(model)
    with pytest.raises(ValueError, match="finite"):
        pk.share_weights(model, bits=2)
    assert same_state(model, before)


# --------------------------------------------------------------------------------------
# Compressed size
# --------------------------------------------------------------------------------------


def test_compression_report_reproduces_the_papers_example():
    """Deep Compression: 16 weights, 4 shared values: 16*32 / (16*2 + 4*32) = 3.2."""
    layer = nn.Linear(4, 4, bias=False)
    pk.share_weights(layer, bits=2)
    row = pk.compression_report(layer).rows[0]
    assert (row.format, row.value_bits, row.codebook_size) == ("dense", 2, 4)
    assert row.compressed_bits == 16 * 2 + 4 * 32 and row.dense_bits == 512
    assert row.ratio == pytest.approx(3.2)


def hand_layer(positions, n=16, values=None) -> nn.Linear:
    layer = nn.Linear(n, 1, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
        for i, p in enumerate(positions):
            layer.weight[0, p] = values[i] if values else 1.0 + i
    return layer


def test_relative_index_fillers_follow_figure_2_of_the_paper():
    # Non-zeros at 1, 4, 15 with 3-bit relative indices: the gap 4 -> 15 skips 10 zeros,
    # more than 7, so one filler zero is stored (at 12): 4 entries in all.
    layer = hand_layer([1, 4, 15])
    row = pk.compression_report(layer, index_bits=3).rows[0]
    assert (row.nonzeros, row.fillers, row.format) == (3, 1, "sparse")
    assert row.compressed_bits == 4 * (3 + 32)  # not shared: 32-bit values
    assert row.ratio == pytest.approx(512 / 140)


@pytest.mark.parametrize("positions, index_bits, fillers", [
    ([0, 8], 3, 0),      # 7 zeros in between: fits in 3 bits
    ([0, 9], 3, 1),      # 8 zeros: one filler
    ([10], 3, 1),        # 10 leading zeros: one filler
    ([0, 17, 35], 3, 4),  # 16 zeros -> 2 fillers, 17 zeros -> 2 fillers
    ([2, 40], 5, 1),     # 37 zeros with 5-bit indices (range 31): one filler
])
def test_filler_counts(positions, index_bits, fillers):
    layer = hand_layer(positions, n=64)
    row = pk.compression_report(layer, index_bits=index_bits).rows[0]
    assert row.fillers == fillers
    assert row.compressed_bits == (len(positions) + fillers) * (index_bits + 32)


def test_compression_report_of_a_pruned_and_shared_model():
    layer = hand_layer([1, 4, 15], values=[-0.5, 0.5, 0.6])
    pk.share_weights(layer, n_clusters=2)  # codebook of 2 values: 1-bit codes
    row = pk.compression_report(layer, index_bits=3).rows[0]
    assert row.codebook_size == 2 and row.value_bits == 1
    assert row.compressed_bits == 4 * (3 + 1) + 2 * 32
    model = pruned_mlp(11, sparsity=0.9)
    pk.share_weights(model, bits=4)
    report = pk.compression_report(model)
    biases = sum(model.get_submodule(n).bias.numel() for n in LINEARS)
    assert report.other_params == biases
    assert report.dense_bytes == 4 * sum(p.numel() for p in mlp(11).parameters())
    expected = (sum(r.compressed_bits for r in report.rows) + 32 * biases) / 8
    assert report.compressed_bytes == expected
    assert report.ratio > 5
    assert all(r.index_bits == 5 and r.value_bits == 4 for r in report.rows)
    text = str(report)
    assert "total" in text and "Linear" in text and "Parametrized" not in text
    assert report.as_dicts()[-1]["layer"] == "total"


def test_compression_report_rejects_bad_arguments():
    with pytest.raises(TypeError, match="'model' parameter of compression_report"):
        pk.compression_report(torch.zeros(3))
    with pytest.raises(ValueError, match="'index_bits' parameter of compression_report"):
        pk.compression_report(nn.Linear(2, 2), index_bits=0)


# --------------------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU; the torch code path it runs is also checked on "
                           "the CPU by test_numpy_and_torch_code_paths_agree")
def test_cuda_results_match_the_cpu_and_stay_on_the_device():
    x = distribution("normal", 20000, seed=0).view(100, 200)
    c_cpu, l_cpu = pk.kmeans_1d(x, 16)
    c_gpu, l_gpu = pk.kmeans_1d(x.cuda(), 16)
    assert c_gpu.is_cuda and l_gpu.is_cuda
    assert torch.allclose(c_gpu.cpu(), c_cpu, rtol=1e-5, atol=1e-6)
    assert (l_gpu.cpu() != l_cpu).float().mean() < 1e-3  # float rounding at boundaries only
    mask = pk.kmeans_mask(x.cuda(), 0.5, n_clusters=8)
    assert mask.is_cuda and abs(pk.sparsity(x.cuda() * mask) - 0.5) < 0.1
    model = mlp().cuda()
    pk.prune(model, 0.6, method="kmeans", scope="global")
    pk.share_weights(model, bits=3)
    out = model(torch.randn(4, 12, device="cuda"))
    out.sum().backward()
    assert model[0].parametrizations.weight[0].codebook.grad.is_cuda
    assert pk.compression_report(model).ratio > 1

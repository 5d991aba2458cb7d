"""One-shot kernels: N:M masks, Wanda row masks, input statistics, SparseGPT.

Brute-force references written here (stable argsorts, a column-by-column SparseGPT without
lazy updates) pin the exact semantics; property tests vary shapes, ties and sparsities.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import prunekit as pk
from prunekit.oneshot import (
    InputStats,
    _inverse_factor,
    nm_mask,
    row_mask_from_scores,
    sparsegpt,
    sparsegpt_into,
    wanda_mask,
    wanda_scores,
)

pytestmark = pytest.mark.usefixtures("one_thread")

HYPO = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INF = math.inf
# few distinct values: plenty of ties; -inf marks already pruned entries
TIED = st.sampled_from([-INF, -1.0, 0.0, 0.0, 0.5, 1.0, 2.0, 2.0, 3.0])
FINITE = st.sampled_from([-1.0, 0.0, 0.0, 0.5, 1.0, 2.0, 2.0, 3.0])
NM = st.sampled_from([(0, 1), (1, 2), (2, 4), (1, 4), (3, 4), (4, 8), (2, 3), (5, 16)])


# --------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------


def ref_nm(scores: np.ndarray, n: int, m: int) -> np.ndarray:
    """Rows along the last axis: per group of m, prune the m-n lowest (stable: lower index first)."""
    g = scores.reshape(-1, m)
    keep = np.ones(g.shape, dtype=bool)
    for r in range(g.shape[0]):
        order = np.argsort(g[r], kind="stable")
        keep[r, order[: m - n]] = False
        keep[r, g[r] == -np.inf] = False
    return keep.reshape(scores.shape)


def ref_rows(scores: np.ndarray, k: int) -> np.ndarray:
    keep = np.ones(scores.shape, dtype=bool)
    for r in range(scores.shape[0]):
        keep[r, np.argsort(scores[r], kind="stable")[:k]] = False
    return keep


def ref_sparsegpt(W, H, sparsity=None, n=None, m=None, blocksize=128, percdamp=0.01):
    """The paper's Algorithm 1 column by column: every column updates all later ones at once."""
    W, H = W.clone().double(), H.clone().double()
    out, cols = W.shape
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H.diagonal().add_(percdamp * H.diagonal().mean())
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    d = U.diagonal()
    keep = torch.ones(W.shape, dtype=torch.bool)
    for j in range(cols):
        if n is None and j % blocksize == 0:
            j2 = min(j + blocksize, cols)
            s = W[:, j:j2] ** 2 / d[j:j2] ** 2
            k = round(sparsity * (out * j2)) - round(sparsity * (out * j))
            block = torch.ones(s.numel(), dtype=torch.bool)
            block[torch.argsort(s.reshape(-1), stable=True)[:k]] = False
            keep[:, j:j2] = block.view(s.shape)
        if n is not None and j % m == 0:
            s = W[:, j:j + m] ** 2 / d[j:j + m] ** 2
            block = torch.ones(s.shape, dtype=torch.bool)
            block.scatter_(1, torch.argsort(s, dim=1, stable=True)[:, : m - n], False)
            keep[:, j:j + m] = block
        e = W[:, j] * (~keep[:, j]) / U[j, j]
        W[:, j:] -= torch.outer(e, U[j, j:])
    return W * keep, keep


def correlated(rows: int, cols: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Calibration inputs with strongly correlated features (what makes the OBS update pay)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g, dtype=dtype) / cols ** 0.5 + torch.eye(cols, dtype=dtype)
    scale = torch.rand(cols, generator=g, dtype=dtype) * 3 + 0.1  # uneven feature scales
    return (torch.randn(rows, cols, generator=g, dtype=dtype) @ mix) * scale


def problem(out, cols, rows, seed, dtype=torch.float64):
    x = correlated(rows, cols, seed, dtype)
    w = torch.randn(out, cols, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
    return w, x, 2 / rows * x.T @ x


def recon(w, w_hat, x) -> float:
    return float(((w - w_hat).double() @ x.double().T).square().sum())


def nm_groups(keep: torch.Tensor, m: int) -> torch.Tensor:
    """Kept count per N:M group (groups along dim 1, per output and kernel position)."""
    t = keep if keep.dim() > 1 else keep.unsqueeze(0)
    return t.movedim(1, -1).reshape(-1, m).sum(1)


# --------------------------------------------------------------------------------------
# nm_mask
# --------------------------------------------------------------------------------------


@st.composite
def nm_case(draw, elements=TIED):
    n, m = draw(NM)
    rank = draw(st.sampled_from([1, 2, 3, 4]))
    groups = draw(st.integers(1, 4))
    shape = {1: (groups * m,), 2: (draw(st.integers(1, 5)), groups * m),
             3: (draw(st.integers(1, 3)), groups * m, draw(st.integers(1, 3))),
             4: (draw(st.integers(1, 3)), groups * m, draw(st.integers(1, 2)), draw(st.integers(1, 3)))}[rank]
    scores = draw(arrays(np.float64, shape, elements=elements))
    return scores, n, m


@HYPO
@given(nm_case())
def test_nm_mask_matches_brute_force_grouping_along_the_input_dim(case):
    scores, n, m = case
    t = torch.from_numpy(scores.copy())
    keep = nm_mask(t, n, m)
    assert keep.dtype == torch.bool and keep.shape == t.shape and keep.is_contiguous()
    dim = 0 if t.dim() == 1 else 1
    moved = np.moveaxis(scores, dim, -1)
    expected = np.moveaxis(ref_nm(np.ascontiguousarray(moved), n, m), -1, dim)
    assert np.array_equal(keep.numpy(), expected)
    assert torch.equal(t, torch.from_numpy(scores))  # input untouched


@HYPO
@given(nm_case(elements=FINITE))
def test_nm_mask_keeps_exactly_n_of_every_m_when_scores_are_finite(case):
    scores, n, m = case
    keep = nm_mask(torch.from_numpy(scores), n, m)
    assert (nm_groups(keep, m) == n).all()


@HYPO
@given(nm_case())
def test_nm_mask_never_keeps_minus_inf_and_keeps_at_most_n(case):
    scores, n, m = case
    t = torch.from_numpy(scores)
    keep = nm_mask(t, n, m)
    assert not keep[t == -INF].any()
    finite = nm_groups(t != -INF, m)
    assert torch.equal(nm_groups(keep, m), torch.clamp(finite, max=n))


@pytest.mark.parametrize("n, m", [(2, 4), (1, 8), (5, 16)])
def test_nm_mask_large_tensors_take_the_sort_path_with_the_same_semantics(n, m):
    g = torch.Generator().manual_seed(m)
    t = torch.randint(0, 4, (256, 64 * m), generator=g).double()  # 16,384 groups: above the pairwise limit
    t[t == 0] = -INF
    groups = t.numpy().reshape(-1, m)
    order = np.argsort(groups, axis=1, kind="stable")
    expected = np.ones(groups.shape, dtype=bool)
    np.put_along_axis(expected, order[:, : m - n], False, axis=1)
    expected &= groups != -np.inf
    assert np.array_equal(nm_mask(t, n, m).numpy(), expected.reshape(t.shape))


def test_nm_mask_ties_prune_the_lower_index_first():
    assert nm_mask(torch.zeros(1, 4), 2, 4).tolist() == [[False, False, True, True]]
    assert nm_mask(torch.tensor([[1.0, 2.0, 1.0, 2.0]]), 1, 4).tolist() == [[False, False, False, True]]
    assert nm_mask(torch.tensor([[-INF, -INF, -INF, 5.0]]), 2, 4).tolist() == [[False, False, False, True]]


@pytest.mark.parametrize("n, m", [(2, 4), (1, 3), (3, 8), (0, 5)])
def test_nm_mask_on_one_group_agrees_with_mask_from_scores(n, m):
    g = torch.Generator().manual_seed(m)
    for _ in range(20):
        row = torch.randint(0, 3, (m,), generator=g).float()
        assert torch.equal(nm_mask(row, n, m), pk.mask_from_scores(row, 1 - n / m))


def test_nm_mask_conv_groups_run_along_in_at_each_kernel_position():
    scores = torch.zeros(1, 4, 1, 2)
    scores[0, :, 0, 0] = torch.tensor([1.0, 4.0, 3.0, 2.0])
    scores[0, :, 0, 1] = torch.tensor([9.0, 8.0, 7.0, 6.0])
    keep = nm_mask(scores, 2, 4)
    assert keep[0, :, 0, 0].tolist() == [False, True, True, False]
    assert keep[0, :, 0, 1].tolist() == [True, True, False, False]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_nm_mask_is_dtype_agnostic(dtype):
    t = torch.randint(-8, 8, (6, 16), generator=torch.Generator().manual_seed(0)).double() / 4
    assert torch.equal(nm_mask(t.to(dtype), 2, 4), nm_mask(t, 2, 4))


def test_nm_mask_2_4_is_what_semi_structured_sparsity_expects():
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    keep = nm_mask(w.abs(), 2, 4)
    assert (keep.view(64, 32, 4).sum(-1) == 2).all()  # 2 of every 4 consecutive entries of a row


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(n=4, m=4), ValueError, r"The 'n' parameter of nm_mask must be an integer in the range \[0, m - 1\] = \[0, 3\] \(m=4\)\. Got 4 instead\."),
    (dict(n=5, m=4), ValueError, "'n' parameter of nm_mask .* Got 5 instead"),
    (dict(n=-1, m=4), ValueError, "'n' parameter of nm_mask .* Got -1 instead"),
    (dict(n=0, m=0), ValueError, r"The 'm' parameter of nm_mask must be an integer >= 1\. Got 0 instead\."),
    (dict(n=2.0, m=4), TypeError, r"The 'n' parameter of nm_mask must be an integer\. Got 2\.0 instead\."),
    (dict(n=2, m=4.0), TypeError, "The 'm' parameter of nm_mask must be an integer"),
    (dict(n=True, m=4), TypeError, "The 'n' parameter of nm_mask must be an integer. Got True instead."),
    (dict(n=2, m=True), TypeError, "The 'm' parameter of nm_mask must be an integer"),
])
def test_nm_mask_refuses_bad_n_and_m(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        nm_mask(torch.ones(2, 8), **kwargs)


def test_nm_mask_names_the_input_dimension_m_must_divide():
    with pytest.raises(ValueError, match=r"^The 'm' parameter of nm_mask must divide the input dimension "
                                         r"\(in=30\)\. Got 4 instead\.$"):
        nm_mask(torch.ones(3, 30), 2, 4)
    with pytest.raises(ValueError, match=r"\(in=6\)\. Got 4 instead"):
        nm_mask(torch.ones(8, 6, 4, 4), 2, 4)  # conv: the in dim (6), not the kernel's


@pytest.mark.parametrize("scores, exc, match", [
    ([1.0, 2.0], TypeError, "The 'scores' parameter of nm_mask must be a torch.Tensor. Got list instead."),
    (torch.ones(2, 4, dtype=torch.int64), TypeError, "must be a floating-point tensor"),
    (torch.ones(0, 4), ValueError, "must be a non-empty tensor"),
    (torch.tensor([[1.0, float("nan"), 2.0, 3.0]]), ValueError, "must be free of NaN. Got .* with 1 NaN"),
])
def test_nm_mask_refuses_bad_scores(scores, exc, match):
    with pytest.raises(exc, match=match):
        nm_mask(scores, 2, 4)


# --------------------------------------------------------------------------------------
# row_mask_from_scores, wanda_scores, wanda_mask
# --------------------------------------------------------------------------------------


@HYPO
@given(scores=arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 40)), elements=TIED),
       s=st.floats(0, 1))
def test_row_mask_matches_brute_force_with_exact_counts_per_row(scores, s):
    t = torch.from_numpy(scores.copy())
    keep = row_mask_from_scores(t, s)
    k = round(s * scores.shape[1])
    assert np.array_equal(keep.numpy(), ref_rows(scores, k))
    assert (keep.sum(1) == scores.shape[1] - k).all()
    assert torch.equal(t, torch.from_numpy(scores))


@pytest.mark.parametrize("cols", [1000, 1001])
@pytest.mark.parametrize("s", [0.001, 0.3, 0.5, 0.7, 0.999])
def test_row_mask_large_rows_with_ties_take_either_selection_path(cols, s):
    t = torch.randint(0, 7, (5, cols), generator=torch.Generator().manual_seed(cols)).double()
    keep = row_mask_from_scores(t, s)
    assert np.array_equal(keep.numpy(), ref_rows(t.numpy(), round(s * cols)))


def test_row_mask_conv_rows_are_filters():
    t = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    keep = row_mask_from_scores(t, 0.25)
    assert keep.shape == t.shape
    assert (keep.reshape(4, -1).sum(1) == 9).all()
    assert torch.equal(keep.reshape(4, -1), row_mask_from_scores(t.reshape(4, -1), 0.25))


def test_row_mask_refuses_one_dimensional_scores_and_bad_sparsity():
    with pytest.raises(ValueError, match="'scores' parameter of row_mask_from_scores must be a tensor with at least 2"):
        row_mask_from_scores(torch.ones(4), 0.5)
    with pytest.raises(ValueError, match="'sparsity' parameter of row_mask_from_scores .* Got 1.5 instead"):
        row_mask_from_scores(torch.ones(2, 4), 1.5)


@HYPO
@given(w=arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 12)),
                elements=st.floats(-4, 4, allow_subnormal=False)),
       data=st.data(), s=st.floats(0, 1))
def test_wanda_mask_is_a_per_row_mask_of_abs_w_times_input_norm(w, data, s):
    norms = data.draw(arrays(np.float64, (w.shape[1],), elements=st.floats(0, 5, allow_subnormal=False)))
    weight, x_norms = torch.from_numpy(w.copy()), torch.from_numpy(norms.copy())
    scores = wanda_scores(weight, x_norms)
    assert torch.equal(scores, torch.from_numpy(np.abs(w) * norms[None, :]))
    keep = wanda_mask(weight, x_norms, s)
    assert np.array_equal(keep.numpy(), ref_rows(np.abs(w) * norms[None, :], round(s * w.shape[1])))
    assert torch.equal(weight, torch.from_numpy(w)) and torch.equal(x_norms, torch.from_numpy(norms))


def test_wanda_keeps_small_weights_on_outlier_features_that_magnitude_prunes():
    w = torch.tensor([[0.1, 1.0, 0.9, 0.8]])
    norms = torch.tensor([100.0, 1.0, 1.0, 1.0])  # feature 0 is an outlier (large activations)
    assert wanda_mask(w, norms, 0.5).tolist() == [[True, True, False, False]]
    assert pk.magnitude_mask(w, 0.5).tolist() == [[False, True, True, False]]


def test_wanda_mask_n_m_and_invariance_to_the_norms_scale():
    g = torch.Generator().manual_seed(0)
    w, norms = torch.randn(8, 16, generator=g), torch.rand(16, generator=g)
    keep = wanda_mask(w, norms, n=2, m=4)
    assert torch.equal(keep, nm_mask(w.abs() * norms, 2, 4))
    assert torch.equal(wanda_mask(w, norms, 0.5, n=2, m=4), keep)  # sparsity 1 - n/m is allowed
    assert torch.equal(wanda_mask(w, 7.0 * norms, 0.5), wanda_mask(w, norms, 0.5))
    with pytest.raises(ValueError, match="'sparsity' parameter of wanda_mask must be omitted or 1 - n/m"):
        wanda_mask(w, norms, 0.3, n=2, m=4)
    with pytest.raises(TypeError, match="needs either 'sparsity' or both 'n' and 'm'"):
        wanda_mask(w, norms)
    with pytest.raises(TypeError, match="only one of 'n' and 'm'"):
        wanda_mask(w, norms, n=2)


def test_wanda_conv_reads_the_weight_as_out_by_in_times_kernel():
    g = torch.Generator().manual_seed(0)
    w, norms = torch.randn(4, 3, 2, 2, generator=g), torch.rand(12, generator=g)
    assert torch.equal(wanda_scores(w, norms), (w.reshape(4, -1).abs() * norms).view(4, 3, 2, 2))


@pytest.mark.parametrize("norms, exc, match", [
    (torch.ones(5), ValueError, r"'input_norms' parameter of wanda_scores must be a 1-D tensor of shape \(4,\)"),
    (torch.tensor([1.0, -1.0, 0.0, 2.0]), ValueError, "must be finite and non-negative .* minimum -1.0"),
    (torch.tensor([1.0, INF, 0.0, 2.0]), ValueError, "finite and non-negative"),
    ([1.0, 1.0, 1.0, 1.0], TypeError, "must be a floating-point torch.Tensor"),
])
def test_wanda_scores_refuses_bad_norms(norms, exc, match):
    with pytest.raises(exc, match=match):
        wanda_scores(torch.ones(2, 4), norms)


def test_wanda_scores_refuses_bad_weights():
    with pytest.raises(ValueError, match="'weight' parameter of wanda_scores must have at least 2 dimensions"):
        wanda_scores(torch.ones(4), torch.ones(4))
    with pytest.raises(ValueError, match="must contain only finite values"):
        wanda_scores(torch.tensor([[1.0, INF]]), torch.ones(2))


# --------------------------------------------------------------------------------------
# InputStats
# --------------------------------------------------------------------------------------


def test_input_stats_accumulates_norms_and_hessian_over_batches_of_any_rank():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(3, 5, 6, generator=g, dtype=torch.float64), torch.randn(7, 6, generator=g,
                                                                                   dtype=torch.float64)]
    stats = InputStats(hessian=True, dtype=torch.float64)
    for b in batches:
        assert stats.update(b) is None
    x = torch.cat([b.reshape(-1, 6) for b in batches])
    assert stats.n_rows == 22
    torch.testing.assert_close(stats.norms(), torch.linalg.vector_norm(x, dim=0))
    torch.testing.assert_close(stats.hessian(), 2 / 22 * x.T @ x)


def test_input_stats_float32_on_the_input_device_and_without_hessian_by_default():
    stats = InputStats()
    stats.update(torch.ones(4, 3, dtype=torch.float16))
    assert stats.sum_sq.dtype == torch.float32 and stats.gram is None
    assert stats.norms().tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(RuntimeError, match=r"InputStats\(hessian=True\)"):
        stats.hessian()
    with pytest.raises(RuntimeError, match="needs at least one update"):
        InputStats().norms()


@pytest.mark.parametrize("bad, exc, match", [
    (torch.ones(2, 4), ValueError, r"'x' parameter of InputStats.update must be shaped \(\.\.\., 3\)"),
    (torch.tensor([[1.0, float("nan"), 0.0]]), ValueError, "must be finite"),
    (torch.tensor([[1.0, INF, 0.0]]), ValueError, "must be finite"),
    (torch.ones(2, 3, dtype=torch.int32), TypeError, "must be a floating-point tensor"),
    ([1.0, 2.0, 3.0], TypeError, "must be a floating-point tensor"),
])
def test_input_stats_bad_batch_leaves_the_state_untouched(bad, exc, match):
    stats = InputStats(hessian=True)
    stats.update(torch.arange(6.0).view(2, 3))
    before = (stats.n_rows, stats.sum_sq.clone(), stats.gram.clone())
    with pytest.raises(exc, match=match):
        stats.update(bad)
    assert stats.n_rows == before[0]
    assert torch.equal(stats.sum_sq, before[1]) and torch.equal(stats.gram, before[2])


def test_input_stats_as_a_forward_pre_hook_does_not_change_the_layer_output():
    layer = torch.nn.Linear(3, 2)
    stats = InputStats()
    x = torch.randn(5, 3)
    expected = layer(x)
    handle = layer.register_forward_pre_hook(lambda mod, args: stats.update(args[0]))
    assert torch.equal(layer(x), expected)
    handle.remove()
    assert stats.n_rows == 5


# --------------------------------------------------------------------------------------
# SparseGPT
# --------------------------------------------------------------------------------------


@SLOW
@given(out=st.integers(1, 12), cols=st.integers(1, 40), rows=st.integers(1, 80), seed=st.integers(0, 10 ** 6),
       s=st.floats(0, 1), blocksize=st.sampled_from([1, 3, 8, 16, 128]))
def test_sparsegpt_matches_column_by_column_algorithm_with_exact_total_count(out, cols, rows, seed, s, blocksize):
    w, _, h = problem(out, cols, rows, seed)
    new, keep = sparsegpt(w, h, sparsity=s, blocksize=blocksize)
    assert int((~keep).sum()) == round(s * w.numel())
    assert bool((new[~keep] == 0).all())
    ref_w, ref_keep = ref_sparsegpt(w, h, sparsity=s, blocksize=blocksize)
    # same masks unless two scores were equal to rounding
    assert (keep == ref_keep).float().mean() >= 0.98
    if torch.equal(keep, ref_keep):
        torch.testing.assert_close(new, ref_w, rtol=1e-9, atol=1e-9 * float(w.abs().max()) + 1e-12)


@SLOW
@given(out=st.integers(1, 10), groups=st.integers(1, 12), rows=st.integers(4, 80), seed=st.integers(0, 10 ** 6),
       nm=st.sampled_from([(2, 4), (1, 4), (4, 8), (1, 2), (2, 3), (5, 16)]), blocks=st.integers(1, 4))
def test_sparsegpt_n_m_keeps_n_of_every_m_and_matches_the_reference(out, groups, rows, seed, nm, blocks):
    n, m = nm
    w, _, h = problem(out, groups * m, rows, seed)
    new, keep = sparsegpt(w, h, n=n, m=m, blocksize=blocks * m)
    assert (nm_groups(keep, m) == n).all()
    ref_w, ref_keep = ref_sparsegpt(w, h, n=n, m=m)
    assert (keep == ref_keep).float().mean() >= 0.98
    if torch.equal(keep, ref_keep):
        torch.testing.assert_close(new, ref_w, rtol=1e-9, atol=1e-9 * float(w.abs().max()) + 1e-12)


def test_sparsegpt_large_n_m_groups_take_the_sort_path_with_the_same_result():
    w, _, h = problem(1100, 32, 100, 7)  # 16 * 16 * 1100 comparisons: above the pairwise limit
    new, keep = sparsegpt(w, h, n=4, m=16, blocksize=16)
    ref_w, ref_keep = ref_sparsegpt(w, h, n=4, m=16)
    assert (nm_groups(keep, 16) == 4).all()
    assert torch.equal(keep, ref_keep)
    torch.testing.assert_close(new, ref_w)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kw", [dict(sparsity=0.5), dict(sparsity=0.8), dict(n=2, m=4)])
def test_sparsegpt_reconstructs_better_than_magnitude_and_than_its_mask_alone(seed, kw):
    w, x, h = problem(48, 96, 400, seed, torch.float32)
    new, keep = sparsegpt(w, h, blocksize=32, **kw)
    ours = recon(w, new, x)
    mask_only = recon(w, w * keep, x)
    magnitude = nm_mask(w.abs(), 2, 4) if "n" in kw else pk.magnitude_mask(w, kw["sparsity"])
    # measured over 8 seeds: 0.66-0.89 of mask-only, 0.28-0.58 of magnitude's error
    assert ours < 0.95 * mask_only
    assert ours < 0.7 * recon(w, w * magnitude, x)
    assert not torch.equal(new[keep], w[keep])  # the kept weights changed


@pytest.mark.parametrize("kw", [dict(sparsity=0.4, blocksize=4), dict(sparsity=0.75), dict(n=1, m=4)])
def test_sparsegpt_ties_prune_the_lower_row_major_index_of_each_block_first(kw):
    # a diagonal H: no compensation, so the scores stay tied exactly as built
    w = torch.randint(-1, 2, (6, 12), generator=torch.Generator().manual_seed(0)).double()
    h = torch.diag(torch.tensor([2.0, 0.0, 2.0] * 4, dtype=torch.float64))  # column 1, 4, ... dead
    new, keep = sparsegpt(w, h, **kw)
    ref_w, ref_keep = ref_sparsegpt(w, h, **kw)
    assert torch.equal(keep, ref_keep) and torch.equal(new, ref_w)


def test_sparsegpt_float32_and_float64_agree():
    w, x, h = problem(32, 64, 300, 0)
    new64, keep64 = sparsegpt(w, h, sparsity=0.5, blocksize=16)
    new32, keep32 = sparsegpt(w.float(), h.float(), sparsity=0.5, blocksize=16)
    assert new32.dtype == torch.float32 and new64.dtype == torch.float64
    assert (keep32 == keep64).float().mean() >= 0.99
    assert recon(w, new32, x) == pytest.approx(recon(w, new64, x), rel=1e-3)
    # a float32 weight with a float64 Hessian is computed in float64, returned in float32
    new_mixed, keep_mixed = sparsegpt(w.float(), h, sparsity=0.5, blocksize=16)
    assert new_mixed.dtype == torch.float32 and torch.equal(keep_mixed, keep64)


def test_sparsegpt_half_weight_comes_back_half():
    w, _, h = problem(8, 16, 50, 0, torch.float32)
    new, keep = sparsegpt(w.half(), h, n=2, m=4)
    assert new.dtype == torch.float16 and (nm_groups(keep, 4) == 2).all()


def test_sparsegpt_dead_inputs_make_a_singular_hessian_work():
    w, x, _ = problem(16, 32, 200, 3)
    x[:, [0, 5, 17]] = 0  # inputs that never fire: H has zero rows and columns
    h = 2 / 200 * x.T @ x
    assert torch.linalg.matrix_rank(h) == 29
    for kw in (dict(sparsity=0.5, percdamp=0.0), dict(sparsity=0.5), dict(n=2, m=4, percdamp=0.0)):
        new, keep = sparsegpt(w, h, **kw)
        assert torch.isfinite(new).all()
        assert (new[:, [0, 5, 17]] == 0).all()  # the reference code's choice
        ref_w, ref_keep = ref_sparsegpt(w, h, **kw)
        assert torch.equal(keep, ref_keep)
        torch.testing.assert_close(new, ref_w)


def test_sparsegpt_refuses_a_hessian_that_dampening_cannot_fix_and_leaves_inputs_untouched():
    w, x, _ = problem(4, 16, 5, 0)  # 5 rows, 16 features: rank 5, no dead column
    h = 2 / 5 * x.T @ x
    w0, h0 = w.clone(), h.clone()
    with pytest.raises(ValueError, match=r"'hessian' parameter of sparsegpt must be positive definite after "
                                         r"dampening \(percdamp=0.0\)"):
        sparsegpt(w, h, sparsity=0.5, percdamp=0.0)
    assert torch.equal(w, w0) and torch.equal(h, h0)
    sparsegpt(w, h, sparsity=0.5)  # 1 % dampening makes it positive definite
    assert torch.equal(w, w0) and torch.equal(h, h0)


@pytest.mark.parametrize("cols, seed", [(1, 0), (7, 1), (64, 2), (200, 3)])
def test_sparsegpt_inverse_factor_is_the_upper_cholesky_factor_of_the_inverse(cols, seed):
    _, _, h = problem(1, cols, max(2, cols // 2), seed)  # rank-deficient: only dampening makes it definite
    paper = h.clone()
    paper.diagonal().add_(0.01 * paper.diagonal().mean())
    expected = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(paper)), upper=True)
    u = _inverse_factor(h.clone(), 0.01, "sparsegpt")
    torch.testing.assert_close(u, expected, rtol=1e-7, atol=1e-9 * float(expected.abs().max()))
    assert torch.equal(u, u.triu())


def test_sparsegpt_sparsity_zero_keeps_everything_and_one_prunes_everything():
    w, _, h = problem(6, 10, 40, 1)
    new, keep = sparsegpt(w, h, sparsity=0.0)
    assert keep.all() and torch.equal(new, w)
    new, keep = sparsegpt(w, h, sparsity=1.0)
    assert not keep.any() and (new == 0).all()


@pytest.mark.parametrize("kw", [dict(sparsity=0.5), dict(n=2, m=4)])
def test_sparsegpt_conv_weight_is_the_flattened_weight_swept_in_nm_mask_order(kw):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 8, 3, 3, generator=g, dtype=torch.float64)
    images = torch.nn.functional.avg_pool2d(torch.randn(20, 8, 8, 8, generator=g, dtype=torch.float64), 3, 1)
    x = torch.nn.functional.unfold(images, 3).transpose(1, 2)  # (20, 16, 72): weight.reshape(6, -1) order
    stats = InputStats(hessian=True, dtype=torch.float64)
    stats.update(x)
    h = stats.hessian()
    new, keep = sparsegpt(w, h, blocksize=16, **kw)
    assert new.shape == keep.shape == w.shape
    flat = w.reshape(6, 72)
    if "n" in kw:
        assert (nm_groups(keep, 4) == 2).all()  # groups along `in`, as nm_mask's
        perm = torch.arange(72).view(8, 9).T.reshape(-1)  # columns in (kH, kW, in) order
        ref_w, ref_keep = sparsegpt(flat[:, perm], h[perm][:, perm], blocksize=16, **kw)
        inverse = torch.argsort(perm)
        ref_w, ref_keep = ref_w[:, inverse], ref_keep[:, inverse]
    else:
        assert int((~keep).sum()) == round(0.5 * w.numel())
        ref_w, ref_keep = sparsegpt(flat, h, blocksize=16, **kw)
    assert torch.equal(keep.reshape(6, 72), ref_keep) and torch.equal(new.reshape(6, 72), ref_w)
    rows = x.reshape(-1, 72)
    assert recon(flat, new.reshape(6, -1), rows) < 0.8 * recon(flat, (w * keep).reshape(6, -1), rows)


def test_sparsegpt_docstring_example_is_the_obs_update():
    # prune w0 = 0.5 of two inputs with H = [[2, 1], [1, 2]]: w1 += -H10/H11 * (0 - 0.5) = 0.25
    w = torch.tensor([[0.5, 1.0]])
    new, keep = sparsegpt(w, torch.tensor([[2.0, 1.0], [1.0, 2.0]]), sparsity=0.5, percdamp=0.0)
    assert keep.tolist() == [[False, True]]
    torch.testing.assert_close(new, torch.tensor([[0.0, 1.25]]))


@pytest.mark.parametrize("args, kwargs, exc, match", [
    ((torch.ones(4), torch.eye(4)), dict(sparsity=0.5), ValueError, "'weight' parameter of sparsegpt must have at least 2"),
    ((torch.ones(2, 4), torch.eye(3)), dict(sparsity=0.5), ValueError, r"'hessian' parameter of sparsegpt must be a \(4, 4\) tensor"),
    ((torch.ones(2, 4), torch.full((4, 4), INF)), dict(sparsity=0.5), ValueError, "'hessian' parameter of sparsegpt must be finite"),
    ((torch.ones(2, 4), "H"), dict(sparsity=0.5), TypeError, "'hessian' parameter of sparsegpt must be a floating-point"),
    ((torch.ones(2, 4), torch.eye(4)), dict(sparsity=1.5), ValueError, "'sparsity' parameter of sparsegpt"),
    ((torch.ones(2, 4), torch.eye(4)), dict(), TypeError, "needs either 'sparsity' or both 'n' and 'm'"),
    ((torch.ones(2, 6), torch.eye(6)), dict(n=2, m=4), ValueError, r"must divide the input dimension \(in=6\)\. Got 4 instead"),
    ((torch.ones(2, 8), torch.eye(8)), dict(n=2, m=4, blocksize=6), ValueError, "'blocksize' parameter of sparsegpt must be a multiple of m=4"),
    ((torch.ones(2, 8), torch.eye(8)), dict(n=4, m=4), ValueError, "'n' parameter of sparsegpt"),
    ((torch.ones(2, 8), torch.eye(8)), dict(sparsity=0.5, blocksize=0), ValueError, "'blocksize' parameter of sparsegpt must be an integer >= 1"),
    ((torch.ones(2, 8), torch.eye(8)), dict(sparsity=0.5, percdamp=-0.1), ValueError, "'percdamp' parameter of sparsegpt must be a finite real number >= 0. Got -0.1"),
    ((torch.ones(2, 8), torch.eye(8)), dict(sparsity=0.5, percdamp="1%"), TypeError, "'percdamp' parameter"),
    ((torch.ones(2, 8), torch.eye(8)), dict(sparsity=0.5, percdamp=INF), ValueError, "'percdamp' parameter"),
])
def test_sparsegpt_bad_arguments_raise_and_leave_inputs_untouched(args, kwargs, exc, match):
    before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    with pytest.raises(exc, match=match):
        sparsegpt(*args, **kwargs)
    for a, b in zip(args, before):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_results_stay_on_the_device_and_agree_with_cpu():
    w, x, h = problem(64, 128, 512, 0, torch.float32)
    new_cpu, keep_cpu = sparsegpt(w, h, n=2, m=4)
    new, keep = sparsegpt(w.cuda(), h.cuda(), n=2, m=4)
    assert new.is_cuda and keep.is_cuda
    assert (keep.cpu() == keep_cpu).float().mean() >= 0.99
    assert recon(w, new.cpu(), x) == pytest.approx(recon(w, new_cpu, x), rel=1e-3)
    stats = InputStats(hessian=True)
    stats.update(x.cuda())
    assert stats.sum_sq.is_cuda
    torch.testing.assert_close(stats.hessian().cpu(), h, rtol=1e-4, atol=1e-3)
    keep_w = wanda_mask(w.cuda(), stats.norms(), n=2, m=4)
    assert keep_w.is_cuda and torch.equal(keep_w.cpu(), wanda_mask(w, stats.norms().cpu(), n=2, m=4))
    assert torch.equal(row_mask_from_scores(w.cuda(), 0.5).cpu(), row_mask_from_scores(w, 0.5))


# -- memory: what prunekit.prune's SparseGPT path does without copies ------------------------


def test_inverse_factor_works_in_the_hessians_own_memory():
    _, _, h = problem(1, 64, 200, 0, dtype=torch.float32)
    u = _inverse_factor(h, 0.01, "sparsegpt")
    assert u.data_ptr() == h.data_ptr()  # no (C, C) copy: the factor overwrote H


def test_take_hessian_hands_over_the_gram_matrix_scaled_in_place():
    x = correlated(50, 6, 0, torch.float32)
    stats = InputStats(hessian=True)
    stats.update(x[:20])
    stats.update(x[20:])
    expected = stats.hessian()
    storage = stats.gram.data_ptr()
    h = stats._take_hessian()
    assert h.data_ptr() == storage and stats.gram is None
    torch.testing.assert_close(h, expected, rtol=0, atol=0)


@pytest.mark.parametrize("kw", [dict(sparsity=0.5), dict(n=2, m=4)])
def test_sparsegpt_into_writes_what_sparsegpt_returns(kw):
    w, _, h = problem(6, 16, 40, 3)
    prior = torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) > 0.2
    expected_new, expected_keep = sparsegpt(w * prior, h, **kw)
    expected_keep &= prior
    expected_new = expected_new * expected_keep
    target = w.clone()
    keep = sparsegpt_into(target, h.clone(), prior=prior, **kw)
    assert torch.equal(keep, expected_keep)
    torch.testing.assert_close(target, expected_new, rtol=0, atol=0)


def test_sparsegpt_into_leaves_the_weight_alone_when_the_hessian_fails():
    w, x, _ = problem(4, 16, 5, 0)  # rank 5 of 16: singular without dampening
    h = 2 / 5 * x.T @ x
    w0 = w.clone()
    with pytest.raises(ValueError, match="'hessian' parameter of sparsegpt must be positive definite"):
        sparsegpt_into(w, h, sparsity=0.5, percdamp=0.0)
    assert torch.equal(w, w0)

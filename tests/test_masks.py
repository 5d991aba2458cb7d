"""Tensor-level masks: parity with torch.nn.utils.prune, exact counts, ties, nesting, purity.

Every mask function promises (DESIGN.md section 3): a ``torch.bool`` tensor shaped like the
weight, ``True`` = keep, exactly ``round(sparsity * n)`` units pruned (the count torch uses),
the lowest scores pruned first, ties broken by lower index first (so masks are deterministic
and nested), and inputs never modified.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.utils.prune as torch_prune
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

import prunekit as pk
from prunekit import _select

SPARSITIES = [0.0, 1.0, 0.5, 0.9, 0.333, 0.999]
SHAPES = [(7,), (1,), (13, 11), (64, 32), (8, 3, 3, 3), (16, 8, 5, 5), (6, 4, 1, 1)]
BIG = 300_000 + 17  # > 4 * 65536: exercises the sampled selection path of kth_smallest

HYPO = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def n_pruned(s: float, n: int) -> int:
    """The count DESIGN.md and torch.nn.utils.prune use: Python's round(s * n)."""
    return round(s * n)


def tie_free(shape, seed=0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g, dtype=dtype)
    assert t.abs().unique().numel() == t.numel(), "test data must be tie-free"
    return t


def big_tie_free(seed=0) -> torch.Tensor:
    """BIG distinct magnitudes (integers, exact in float32), shuffled, random signs."""
    g = torch.Generator().manual_seed(seed)
    mags = torch.randperm(BIG, generator=g).float() + 1.0
    signs = torch.randint(0, 2, (BIG,), generator=g).float() * 2 - 1
    return mags * signs


def torch_l1_mask(t: torch.Tensor, s: float) -> torch.Tensor:
    return torch_prune.L1Unstructured(amount=s).compute_mask(t, torch.ones_like(t)).bool()


def reference_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Prune the k lowest scores; among equal scores the lower flat index first."""
    flat = scores.reshape(-1).double().numpy()
    order = np.argsort(flat, kind="stable")  # stable: equal scores stay in index order
    keep = np.ones(flat.size, dtype=bool)
    keep[order[:k]] = False
    return torch.from_numpy(keep).view(scores.shape)


# --------------------------------------------------------------------------------------
# Parity with torch.nn.utils.prune on tie-free tensors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("s", SPARSITIES)
def test_magnitude_mask_matches_torch_l1_unstructured(shape, s):
    w = tie_free(shape, seed=len(shape) * 100 + shape[0])
    mask = pk.magnitude_mask(w, s)
    assert torch.equal(mask, torch_l1_mask(w, s))
    assert torch.equal(pk.magnitude_mask(w, s, p=2), mask)  # single weights: L1 == L2


@pytest.mark.parametrize("s", SPARSITIES)
def test_magnitude_mask_matches_torch_on_large_tensor(s):
    w = big_tie_free().view(BIG)
    mask = pk.magnitude_mask(w, s)
    assert torch.equal(mask, torch_l1_mask(w, s))
    assert int((~mask).sum()) == n_pruned(s, BIG)


def test_magnitude_mask_matches_torch_on_large_float64_conv_weight():
    w = tie_free((256, 128, 3, 3), seed=3, dtype=torch.float64)  # 294,912 entries
    assert torch.equal(pk.magnitude_mask(w, 0.333), torch_l1_mask(w, 0.333))


@pytest.mark.parametrize("shape", [(13, 11), (16, 8, 5, 5), (1, 5), (300, 4, 3, 3)])
@pytest.mark.parametrize("s", SPARSITIES)
@pytest.mark.parametrize("p", [1, 2])
def test_channel_mask_matches_torch_ln_structured(shape, s, p):
    w = tie_free(shape, seed=shape[0] + 7 * len(shape))
    expected = torch_prune.LnStructured(amount=s, n=p, dim=0).compute_mask(w, torch.ones_like(w)).bool()
    assert torch.equal(pk.channel_mask(w, s, p=p), expected)


@pytest.mark.parametrize("shape", [(9,), (13, 11), (8, 3, 3, 3)])
@pytest.mark.parametrize("s", SPARSITIES)
def test_gradient_mask_matches_torch_with_importance_scores(shape, s):
    w = tie_free(shape, seed=1)
    g = tie_free(shape, seed=2)
    taylor = pk.gradient_mask(w, g, s, criterion="taylor")
    assert torch.equal(taylor, torch_l1_mask(w * g, s))
    assert torch.equal(pk.gradient_mask(w, g, s), taylor)  # "taylor" is the default
    assert torch.equal(pk.gradient_mask(w, g, s, criterion="gradient"), torch_l1_mask(g, s))


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_gradient_mask_matches_torch_l1_unstructured_on_module(s):
    torch.manual_seed(0)
    layer = torch.nn.Linear(20, 10)
    w = tie_free((10, 20), seed=5)
    g = tie_free((10, 20), seed=6)
    with torch.no_grad():
        layer.weight.copy_(w)
    torch_prune.l1_unstructured(layer, "weight", amount=s, importance_scores=(w * g).abs())
    assert torch.equal(pk.gradient_mask(w, g, s, criterion="taylor"), layer.weight_mask.bool())


def test_gradient_and_taylor_criteria_rank_differently():
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    g = torch.tensor([0.4, 0.1, 0.1, 0.01])
    # |g| = .4, .1, .1, .01 -> prune index 3 then index 1 (tie with 2, lower index first)
    assert pk.gradient_mask(w, g, 0.5, criterion="gradient").tolist() == [True, False, True, False]
    # |w*g| = .4, .2, .3, .04 -> prune index 3 and 1
    assert pk.gradient_mask(w, g, 0.25, criterion="taylor").tolist() == [True, True, True, False]
    assert pk.gradient_mask(w, g, 0.75, criterion="gradient").tolist() == [True, False, False, False]
    assert pk.gradient_mask(w, g, 0.75, criterion="taylor").tolist() == [True, False, False, False]
    w2 = torch.tensor([10.0, 1.0])
    g2 = torch.tensor([0.1, 0.5])  # |g| prunes index 0, |w*g| = 1.0, 0.5 prunes index 1
    assert pk.gradient_mask(w2, g2, 0.5, criterion="gradient").tolist() == [False, True]
    assert pk.gradient_mask(w2, g2, 0.5, criterion="taylor").tolist() == [True, False]


def test_mask_from_scores_ranks_raw_scores_not_magnitudes():
    scores = torch.tensor([-5.0, 3.0, -1.0, 0.5, 2.0])
    assert pk.mask_from_scores(scores, 0.4).tolist() == [False, True, False, True, True]
    assert torch.equal(pk.mask_from_scores(scores, 0.4), reference_mask(scores, 2))


@pytest.mark.parametrize("s", SPARSITIES)
def test_mask_from_scores_matches_torch_on_nonnegative_scores(s):
    scores = tie_free((40, 30), seed=9).abs()
    assert torch.equal(pk.mask_from_scores(scores, s), torch_l1_mask(scores, s))


# --------------------------------------------------------------------------------------
# Hand-built examples: group norms under L1 and L2
# --------------------------------------------------------------------------------------


def test_channel_mask_l1_and_l2_choose_different_channels():
    # channel 0: L1 = 3, L2 = 3; channel 1: L1 = 4, L2 = 2 -> L1 prunes 0, L2 prunes 1
    w = torch.tensor([[3.0, 0.0, 0.0, 0.0], [1.0, -1.0, 1.0, -1.0], [5.0, 5.0, 5.0, 5.0]])
    l1 = pk.channel_mask(w, 1 / 3, p=1)
    l2 = pk.channel_mask(w, 1 / 3, p=2)
    assert l1.all(dim=1).tolist() == [False, True, True]
    assert l2.all(dim=1).tolist() == [True, False, True]
    # whole channels: every row is all-True or all-False
    for m in (l1, l2):
        assert torch.equal(m.all(dim=1), m.any(dim=1))
    # and conv-shaped: the same rows as filters
    w4 = w.view(3, 1, 2, 2)
    assert pk.channel_mask(w4, 1 / 3, p=1).flatten(1).all(dim=1).tolist() == [False, True, True]
    assert pk.channel_mask(w4, 1 / 3, p=2).flatten(1).all(dim=1).tolist() == [True, False, True]


def test_kernel_mask_l1_and_l2_choose_different_kernels():
    w = torch.zeros(2, 2, 2, 2)
    w[0, 0] = torch.tensor([[3.0, 0.0], [0.0, 0.0]])    # L1 3, L2 3
    w[0, 1] = torch.tensor([[1.0, -1.0], [1.0, 1.0]])   # L1 4, L2 2
    w[1, 0] = torch.full((2, 2), 5.0)
    w[1, 1] = torch.full((2, 2), -6.0)
    l1 = pk.kernel_mask(w, 0.25, p=1).all(dim=(2, 3))
    l2 = pk.kernel_mask(w, 0.25, p=2).all(dim=(2, 3))
    assert l1.tolist() == [[False, True], [True, True]]
    assert l2.tolist() == [[True, False], [True, True]]


def test_docstring_examples_hold():
    w = torch.tensor([[0.1, -0.5], [2.0, -0.05]])
    assert pk.magnitude_mask(w, 0.5).tolist() == [[False, True], [True, False]]
    w = torch.arange(16.0).reshape(2, 2, 2, 2)
    assert pk.kernel_mask(w, 0.25).all(dim=(2, 3)).tolist() == [[False, True], [True, True]]


# --------------------------------------------------------------------------------------
# kernel_mask against a hand-written reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16, 8, 5, 5), (4, 4, 1, 1), (3, 5, 2, 3)])
@pytest.mark.parametrize("s", SPARSITIES)
@pytest.mark.parametrize("p", [1, 2])
def test_kernel_mask_prunes_smallest_whole_kernels(shape, s, p):
    w = tie_free(shape, seed=sum(shape))
    mask = pk.kernel_mask(w, s, p=p)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    per_kernel = mask.all(dim=(2, 3))
    assert torch.equal(per_kernel, mask.any(dim=(2, 3))), "mask must be constant over each kernel"
    out, inp = shape[:2]
    k = n_pruned(s, out * inp)
    assert int((~per_kernel).sum()) == k
    norms = w.abs().sum(dim=(2, 3)) if p == 1 else w.pow(2).sum(dim=(2, 3)).sqrt()
    expected = torch.ones(out * inp, dtype=torch.bool)
    expected[norms.flatten().argsort()[:k]] = False
    assert torch.equal(per_kernel, expected.view(out, inp))


# --------------------------------------------------------------------------------------
# Property-based: any finite input, including ties, duplicates, zeros and -0.0
# --------------------------------------------------------------------------------------

_elements = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, 1e-3]),
    st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32),
)
_sparsity = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.25, 0.75]), st.floats(0.0, 1.0))


def _tensors(min_dims=1, max_dims=4, max_side=7):
    return arrays(
        np.float32, array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side),
        elements=_elements,
    ).map(lambda a: torch.from_numpy(a.copy()))


@HYPO
@given(w=_tensors(), s1=_sparsity, s2=_sparsity, p=st.sampled_from([1, 2]))
def test_magnitude_mask_properties(w, s1, s2, p):
    lo, hi = min(s1, s2), max(s1, s2)
    before = w.clone()
    m_lo = pk.magnitude_mask(w, lo, p=p)
    m_hi = pk.magnitude_mask(w, hi, p=p)
    assert torch.equal(w, before)  # input untouched
    assert m_lo.dtype == torch.bool and m_lo.shape == w.shape
    n = w.numel()
    assert int((~m_lo).sum()) == n_pruned(lo, n)
    assert int((~m_hi).sum()) == n_pruned(hi, n)
    assert not (m_hi & ~m_lo).any(), "nested: pruned at lo stays pruned at hi"
    assert torch.equal(m_hi, pk.magnitude_mask(w, hi, p=p))  # deterministic
    score = w.abs()
    if (~m_hi).any() and m_hi.any():
        assert score[~m_hi].max() <= score[m_hi].min()
    assert torch.equal(m_hi, reference_mask(score, n_pruned(hi, n)))  # ties: lower index first


@HYPO
@given(w=_tensors(max_dims=2), s=_sparsity)
def test_mask_from_scores_properties(w, s):
    before = w.clone()
    m = pk.mask_from_scores(w, s)
    assert torch.equal(w, before)
    assert m.dtype == torch.bool and m.shape == w.shape
    assert torch.equal(m, reference_mask(w, n_pruned(s, w.numel())))


@HYPO
@given(data=st.data(), s=_sparsity, criterion=st.sampled_from(["gradient", "taylor"]))
def test_gradient_mask_properties(data, s, criterion):
    w = data.draw(_tensors(max_dims=3))
    g = data.draw(arrays(np.float32, tuple(w.shape), elements=_elements).map(lambda a: torch.from_numpy(a.copy())))
    w0, g0 = w.clone(), g.clone()
    m = pk.gradient_mask(w, g, s, criterion=criterion)
    assert torch.equal(w, w0) and torch.equal(g, g0)
    assert m.dtype == torch.bool and m.shape == w.shape
    score = (w * g).abs() if criterion == "taylor" else g.abs()
    assert torch.equal(m, reference_mask(score, n_pruned(s, w.numel())))


@HYPO
@given(w=_tensors(min_dims=2), s1=_sparsity, s2=_sparsity, p=st.sampled_from([1, 2]))
def test_channel_mask_properties(w, s1, s2, p):
    lo, hi = min(s1, s2), max(s1, s2)
    before = w.clone()
    m_lo, m_hi = pk.channel_mask(w, lo, p=p), pk.channel_mask(w, hi, p=p)
    assert torch.equal(w, before)
    assert m_lo.dtype == torch.bool and m_lo.shape == w.shape
    rows = m_hi.reshape(w.shape[0], -1)
    assert torch.equal(rows.all(dim=1), rows.any(dim=1)), "whole channels"
    out = w.shape[0]
    kept_lo = m_lo.reshape(out, -1).all(dim=1)
    kept_hi = rows.all(dim=1)
    assert int((~kept_lo).sum()) == n_pruned(lo, out)
    assert int((~kept_hi).sum()) == n_pruned(hi, out)
    assert not (kept_hi & ~kept_lo).any()
    assert torch.equal(m_hi, pk.channel_mask(w, hi, p=p))
    norms = torch.linalg.vector_norm(w.reshape(out, -1), ord=p, dim=1)
    assert torch.equal(kept_hi, reference_mask(norms, n_pruned(hi, out)))


@HYPO
@given(w=_tensors(min_dims=4, max_dims=4, max_side=5), s1=_sparsity, s2=_sparsity, p=st.sampled_from([1, 2]))
def test_kernel_mask_properties(w, s1, s2, p):
    lo, hi = min(s1, s2), max(s1, s2)
    before = w.clone()
    m_lo, m_hi = pk.kernel_mask(w, lo, p=p), pk.kernel_mask(w, hi, p=p)
    assert torch.equal(w, before)
    assert m_hi.dtype == torch.bool and m_hi.shape == w.shape
    kept_lo, kept_hi = m_lo.all(dim=(2, 3)), m_hi.all(dim=(2, 3))
    assert torch.equal(kept_hi, m_hi.any(dim=(2, 3))), "whole kernels"
    n = w.shape[0] * w.shape[1]
    assert int((~kept_lo).sum()) == n_pruned(lo, n)
    assert int((~kept_hi).sum()) == n_pruned(hi, n)
    assert not (kept_hi & ~kept_lo).any()
    assert torch.equal(m_hi, pk.kernel_mask(w, hi, p=p))
    norms = torch.linalg.vector_norm(w, ord=p, dim=(2, 3))
    assert torch.equal(kept_hi, reference_mask(norms, n_pruned(hi, n)))


def test_ties_are_broken_by_lower_index_first():
    w = torch.tensor([1.0, -1.0, 1.0, 0.0, -0.0, 0.0, 1.0])
    assert pk.magnitude_mask(w, 2 / 7).tolist() == [True, True, True, False, False, True, True]
    assert pk.magnitude_mask(w, 4 / 7).tolist() == [False, True, True, False, False, False, True]
    assert pk.magnitude_mask(torch.ones(5), 0.4).tolist() == [False, False, True, True, True]
    # channels with equal norms: the lower channel index goes first
    c = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.5, 0.5], [1.0, 1.0]])
    assert pk.channel_mask(c, 0.5).all(dim=1).tolist() == [False, True, False, True]


def test_large_tensor_with_heavy_ties_has_exact_count_and_nesting():
    g = torch.Generator().manual_seed(0)
    w = torch.randint(-3, 4, (400_000,), generator=g).float()
    prev = torch.ones_like(w, dtype=torch.bool)
    for s in (0.1, 0.5, 0.77, 0.95):
        m = pk.magnitude_mask(w, s)
        assert int((~m).sum()) == n_pruned(s, w.numel())
        assert not (m & ~prev).any()
        prev = m
    assert torch.equal(pk.magnitude_mask(w, 0.5), reference_mask(w.abs(), n_pruned(0.5, w.numel())))


# --------------------------------------------------------------------------------------
# kth_smallest (exact selection, sampled for large tensors)
# --------------------------------------------------------------------------------------


def _check_kth(flat: torch.Tensor, ks):
    # reference by one full sort: the same value torch.kthvalue returns, and no quadratic
    # worst case (torch's CPU kthvalue takes seconds on descending input)
    ordered = flat.sort().values
    for k in ks:
        value, count = _select.kth_smallest(flat, k)
        expected = ordered[k - 1]
        assert value.dtype == flat.dtype and value.dim() == 0
        assert value.item() == expected.item(), (k, value, expected)
        assert count == int(torch.searchsorted(ordered, expected, right=True))


def test_kth_smallest_agrees_with_torch_kthvalue():
    for flat in (torch.randint(0, 5, (400_000,), generator=torch.Generator().manual_seed(7)).float(),
                 torch.randn(300_000, generator=torch.Generator().manual_seed(8)),
                 torch.randn(1000, generator=torch.Generator().manual_seed(9))):
        for k in (1, flat.numel() // 2, flat.numel()):
            value, count = _select.kth_smallest(flat, k)
            assert torch.equal(value, torch.kthvalue(flat, k).values)


def test_descending_input_is_not_quadratic():
    """Regression: torch.kthvalue is quadratic on descending input (about 5 s for 262,144
    entries on 2 cores); prunekit must stay fast there (about 20 ms). Loose bound."""
    import time

    w = -torch.arange(262_144, dtype=torch.float32)  # |w| ascending, w descending
    start = time.perf_counter()
    m = pk.mask_from_scores(w, 0.3)
    pk.magnitude_mask(-w.flip(0), 0.3)
    assert time.perf_counter() - start < 1.5
    assert int((~m).sum()) == n_pruned(0.3, w.numel())
    assert not m[-n_pruned(0.3, w.numel()):].any()  # the lowest scores are the last entries


def _adversarial(n: int) -> torch.Tensor:
    """The strided sample sees only huge values: the bracket misses and must fall back."""
    t = torch.arange(n, dtype=torch.float32)
    t[:: n // _select._SAMPLE] = 1e9
    return t


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: torch.randint(0, 5, (400_000,), generator=torch.Generator().manual_seed(1)).float(), id="heavy-ties"),
        pytest.param(lambda: torch.arange(400_000, dtype=torch.float32), id="sorted"),
        pytest.param(lambda: torch.arange(400_000, 0, -1, dtype=torch.float32), id="reversed"),
        pytest.param(lambda: torch.full((300_000,), 2.5), id="constant"),
        pytest.param(lambda: torch.randn(333_333, generator=torch.Generator().manual_seed(2)).double(), id="random-float64"),
        pytest.param(lambda: _adversarial(400_000), id="adversarial"),
        pytest.param(lambda: torch.randint(0, 3, (5_000,), generator=torch.Generator().manual_seed(4)).float(), id="small"),
    ],
)
def test_kth_smallest_is_exact(make):
    flat = make()
    n = flat.numel()
    _check_kth(flat, sorted({1, n // 3, n // 2, n - 1, n, (7 * n) // 10}))


def test_kth_smallest_with_minus_inf_entries():
    # prune() marks already-pruned units with -inf before selecting
    flat = torch.randn(300_000, generator=torch.Generator().manual_seed(5))
    flat[::3] = float("-inf")
    _check_kth(flat, (1, 100_000, 100_001, 250_000))


# --------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_masks_work_in_other_dtypes(dtype):
    w32 = tie_free((12, 6, 3, 3), seed=11).to(dtype).float()  # values exact in `dtype`
    w = w32.to(dtype)
    assert torch.equal(w.float(), w32)
    g32 = tie_free((12, 6, 3, 3), seed=12).to(dtype).float()
    g = g32.to(dtype)
    for s in (0.0, 0.5, 0.9, 1.0):
        m = pk.magnitude_mask(w, s)
        assert m.dtype == torch.bool
        assert torch.equal(m, pk.magnitude_mask(w32, s))
        assert torch.equal(pk.kernel_mask(w, s), pk.kernel_mask(w32, s))
        assert torch.equal(pk.gradient_mask(w, g, s, criterion="gradient"),
                           pk.gradient_mask(w32, g32, s, criterion="gradient"))
        assert torch.equal(pk.mask_from_scores(w, s), pk.mask_from_scores(w32, s))
    # group norms are summed in `dtype`; a coarse format may merge close norms, so only
    # the structure and the count are promised there
    cm = pk.channel_mask(w, 0.5)
    assert int((~cm.flatten(1).all(dim=1)).sum()) == 6
    if dtype == torch.float64:
        assert torch.equal(cm, pk.channel_mask(w32, 0.5))


def test_half_precision_large_tensor_uses_exact_selection():
    w = torch.randint(-50, 50, (300_000,), generator=torch.Generator().manual_seed(6)).to(torch.float16)
    m = pk.magnitude_mask(w, 0.37)
    assert int((~m).sum()) == n_pruned(0.37, w.numel())
    assert torch.equal(m, pk.magnitude_mask(w.float(), 0.37))


def test_sparsity_accepts_zero_dim_float_tensor_and_numpy_float():
    w = tie_free((10, 10), seed=13)
    expected = pk.magnitude_mask(w, 0.3)
    assert torch.equal(pk.magnitude_mask(w, torch.tensor(0.3)), expected)
    assert torch.equal(pk.magnitude_mask(w, np.float64(0.3)), expected)

"""prunekit._select: exact-count selection, ties, nesting, global concat/split (property-based).

The reference for every selection is one stable argsort: prune the ``k`` lowest scores,
equal scores in index order. The large-tensor code paths (a strided sample brackets the
k-th value, the tensor is read in blocks) are exercised on small hypothesis inputs by
shrinking the module's sample and block sizes, on both backends (NumPy on the CPU, torch
elsewhere; ``_FORCE_TORCH`` runs the torch one on the CPU).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import prunekit as pk
from prunekit import _select

HYPO = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# (name, module attributes): the default small-tensor path, and the sampled, blocked path
# at sizes hypothesis can draw; each on both backends
CONFIGS = {
    "numpy": {"_FORCE_TORCH": False},
    "torch": {"_FORCE_TORCH": True},
    # narrow brackets (one sigma, no slack) that often hold the k-th value and often miss it
    "numpy-sampled": {"_FORCE_TORCH": False, "_SAMPLE": 8, "_CHUNK": 7, "_SIGMAS": 1.0, "_SLACK": 0},
    "torch-sampled": {"_FORCE_TORCH": True, "_SAMPLE": 8, "_CHUNK": 7, "_SIGMAS": 1.0, "_SLACK": 0},
}


@contextlib.contextmanager
def configured(name: str):
    saved = {k: getattr(_select, k) for k in CONFIGS[name] if hasattr(_select, k)}
    for k, v in CONFIGS[name].items():
        setattr(_select, k, v)
    try:
        yield
    finally:
        for k in CONFIGS[name]:
            if k in saved:
                setattr(_select, k, saved[k])
            else:
                delattr(_select, k)


def reference_keep(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Flat keep-mask that prunes the k lowest scores, ties to the lower index (stable argsort)."""
    flat = scores.reshape(-1).double().numpy()
    keep = np.ones(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[:max(k, 0)]] = False
    return torch.from_numpy(keep)


# Scores drawn from a few values (many ties), from a wide range (few ties), with -inf
# (already-pruned units) mixed in; lengths up to a few hundred.
values = st.one_of(
    st.integers(-3, 3).map(float),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32),
    st.just(float("-inf")),
    st.just(0.0), st.just(-0.0),
)
score_lists = st.lists(values, min_size=1, max_size=300)


@st.composite
def scores_and_k(draw):
    xs = draw(score_lists)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    k = draw(st.integers(-2, len(xs) + 2))
    return torch.tensor(xs, dtype=dtype), k


@pytest.mark.parametrize("config", CONFIGS)
@HYPO
@given(data=scores_and_k())
def test_keep_lowest_pruned_equals_stable_argsort(config, data):
    scores, k = data
    before = scores.clone()
    with configured(config):
        keep = _select.keep_lowest_pruned(scores, k)
    assert keep.dtype == torch.bool and keep.shape == (scores.numel(),)
    assert int((~keep).sum()) == min(max(k, 0), scores.numel())  # exact count
    assert torch.equal(keep, reference_keep(scores, k))
    assert torch.equal(scores, before)  # never modifies its input


@pytest.mark.parametrize("config", CONFIGS)
@HYPO
@given(data=scores_and_k())
def test_absolute_ranks_by_magnitude_without_changing_the_input(config, data):
    scores, k = data
    scores = torch.where(torch.isinf(scores), torch.zeros_like(scores), scores)  # weights are finite
    before = scores.clone()
    with configured(config):
        keep = _select.keep_lowest_pruned(scores, k, absolute=True)
    assert torch.equal(keep, reference_keep(scores.abs(), k))
    assert torch.equal(scores, before)


@pytest.mark.parametrize("config", CONFIGS)
@HYPO
@given(xs=st.lists(st.integers(0, 4).map(float), min_size=2, max_size=300))
def test_ties_prune_the_lower_index_first(config, xs):
    scores = torch.tensor(xs)
    n = scores.numel()
    with configured(config):
        for k in range(0, n + 1, max(1, n // 7)):
            keep = _select.keep_lowest_pruned(scores, k)
            for v in scores.unique():
                at = (scores == v).nonzero().squeeze(1)
                pruned, kept = at[~keep[at]], at[keep[at]]
                if pruned.numel() and kept.numel():
                    assert pruned.max() < kept.min(), (v, pruned, kept)


@pytest.mark.parametrize("config", CONFIGS)
@HYPO
@given(xs=score_lists, sparsities=st.lists(st.floats(0, 1), min_size=2, max_size=6))
def test_masks_are_nested_across_sparsities(config, xs, sparsities):
    scores = torch.tensor(xs)
    n = scores.numel()
    previous = torch.ones(n, dtype=torch.bool)
    with configured(config):
        for s in sorted(sparsities):
            keep = _select.keep_lowest_pruned(scores, _select.n_to_prune(s, n))
            assert not (keep & ~previous).any()  # nothing pruned earlier is revived
            previous = keep


@pytest.mark.parametrize("config", CONFIGS)
@HYPO
@given(data=scores_and_k())
def test_kth_smallest_is_the_sorted_value_and_its_count(config, data):
    flat, k = data
    n = flat.numel()
    k = min(max(k, 1), n)
    ordered = flat.sort().values
    with configured(config):
        value, count = _select.kth_smallest(flat, k)
    assert value.dim() == 0 and value.dtype == flat.dtype
    assert value.item() == ordered[k - 1].item()
    assert count == int((flat <= value).sum())


@HYPO
@given(s=st.floats(0, 1), n=st.integers(0, 10_000))
def test_n_to_prune_is_python_round(s, n):
    assert _select.n_to_prune(s, n) == round(s * n)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("config", CONFIGS)
def test_other_dtypes_select_as_float32(dtype, config):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-20, 20, (500,), generator=g).to(dtype)  # exact in every dtype, many ties
    with configured(config):
        for k in (0, 1, 137, 250, 499, 500):
            for absolute in (False, True):
                keep = _select.keep_lowest_pruned(x, k, absolute=absolute)
                assert torch.equal(keep, reference_keep(x.float().abs() if absolute else x.float(), k))


@pytest.mark.parametrize("config", CONFIGS)
def test_bracket_miss_falls_back_to_an_exact_selection(config):
    # the strided sample sees only huge values, so its bracket cannot hold the k-th value
    with configured(config):
        n = 4 * _select._SAMPLE + 101
        x = torch.arange(n, dtype=torch.float32)
        x[:: n // _select._SAMPLE] = 1e9
        for k in (1, n // 3, n - 2):
            assert torch.equal(_select.keep_lowest_pruned(x, k), reference_keep(x, k))


@pytest.mark.parametrize("config", ["numpy", "torch"])
def test_large_tensor_matches_torch_l1_unstructured(config):
    # above 4 * _SAMPLE entries with the real sample and block sizes
    g = torch.Generator().manual_seed(3)
    w = torch.randn(700, 701, generator=g)
    with configured(config):
        for s in (0.1, 0.5, 0.9):
            k = _select.n_to_prune(s, w.numel())
            keep = _select.keep_lowest_pruned(w, k, absolute=True)
            assert torch.equal(keep, reference_keep(w.abs(), k))
            theirs = torch.nn.utils.prune.L1Unstructured(amount=s).compute_mask(w, torch.ones_like(w))
            assert int((~keep).sum()) == int((theirs == 0).sum())


@pytest.mark.parametrize("config", CONFIGS)
def test_strided_transposed_and_grad_requiring_inputs(config):
    g = torch.Generator().manual_seed(4)
    base = torch.randint(-9, 9, (40, 30), generator=g).float()
    inputs = [base.t(), base[:, ::3], base.reshape(-1)[::7], base.clone().requires_grad_()]
    with configured(config):
        for x in inputs:
            before = x.detach().clone()
            for k in (1, x.numel() // 2, x.numel() - 1):
                for absolute in (False, True):
                    ref = reference_keep(x.detach().abs() if absolute else x.detach(), k)
                    assert torch.equal(_select.keep_lowest_pruned(x, k, absolute=absolute), ref)
                value, count = _select.kth_smallest(x.reshape(-1), k)
                assert value.item() == x.detach().reshape(-1).sort().values[k - 1].item()
            assert torch.equal(x.detach(), before)


@HYPO
@given(data=scores_and_k())
def test_front_doors_agree_with_the_reference(data):
    scores, k = data
    scores = torch.where(torch.isinf(scores), torch.zeros_like(scores), scores)
    s = k / scores.numel() if 0 <= k <= scores.numel() else 0.5
    k = _select.n_to_prune(s, scores.numel())
    assert torch.equal(pk.mask_from_scores(scores, s), reference_keep(scores, k))
    assert torch.equal(pk.magnitude_mask(scores, s), reference_keep(scores.abs(), k))


# --------------------------------------------------------------------------------------
# concat / split (global scope ranks the units of all layers together)
# --------------------------------------------------------------------------------------

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool]


@st.composite
def tensor_lists(draw):
    out = []
    for _ in range(draw(st.integers(1, 5))):
        shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=3)))
        dtype = draw(st.sampled_from(DTYPES))
        n = int(np.prod(shape)) if shape else 1
        xs = draw(st.lists(st.integers(-8, 8), min_size=n, max_size=n))
        out.append(torch.tensor(xs, dtype=torch.float64).reshape(shape).to(dtype))
    return out


@HYPO
@given(tensors=tensor_lists())
def test_concat_split_round_trip(tensors):
    before = [t.clone() for t in tensors]
    flat, split = _select.concat(tensors)
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    assert flat.dim() == 1 and flat.dtype == dtype
    assert flat.numel() == sum(t.numel() for t in tensors)
    assert flat.device == tensors[0].device
    parts = split(flat)
    assert len(parts) == len(tensors)
    for part, t in zip(parts, tensors):
        assert part.shape == t.shape and part.device == t.device
        assert torch.equal(part, t.to(dtype))  # every value survives the common dtype
    # a mask over the flat units splits the same way (what global scope does with it)
    keep = flat.double() > 0
    for part, t in zip(split(keep), tensors):
        assert part.dtype == torch.bool and torch.equal(part, t.double() > 0)
    for t, b in zip(tensors, before):
        assert torch.equal(t, b)


def test_concat_of_nothing_is_refused():
    with pytest.raises(ValueError, match="at least one tensor"):
        _select.concat([])

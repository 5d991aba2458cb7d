"""``prune(..., mask_dtype=torch.bool)``: 1-byte masks that compute exactly what float masks do.

The reference is the same pruning with the default masks (the weight's dtype, the format of
``torch.nn.utils.prune``): every effective weight, output, gradient and report must be equal,
and only the masks' dtype and size differ.
"""

import copy
import io
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import prunekit as pk


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 4))


def _cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()


def _batches(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(32, 16, generator=g) for _ in range(n)]


def _gpt2():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=16)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _masks(model):
    return {k: v for k, v in model.state_dict().items() if k.endswith("_mask")}


def _effective(model):
    return pk.reparam.stripped_state_dict(model)


def _pair(make, **kw):
    default, small = make(), make()
    pk.prune(default, **kw)
    pk.prune(small, mask_dtype=torch.bool, **kw)
    return default, small


CASES = {
    "l1": (_mlp, dict(sparsity=0.6)),
    "l1 global": (_mlp, dict(sparsity=0.6, scope="global")),
    "random 2:4": (_mlp, dict(method="random", pattern="2:4", seed=0)),
    "channel + BatchNorm": (_cnn, dict(sparsity=0.5, method="channel")),
    "wanda": (_mlp, dict(sparsity=0.5, method="wanda", calibration=_batches())),
    "sparsegpt 2:4": (_mlp, dict(method="sparsegpt", pattern="2:4", calibration=_batches())),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bool_masks_compute_exactly_what_float_masks_compute(case):
    make, kw = CASES[case]
    default, small = _pair(make, **kw)
    masks = _masks(small)
    assert masks and all(m.dtype == torch.bool for m in masks.values())
    assert all(m.dtype == torch.float32 for m in _masks(default).values())
    a, b = _effective(default), _effective(small)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 3, 9, 9) if make is _cnn else torch.randn(5, 16)
    with torch.no_grad():
        assert torch.equal(default(x), small(x))
    assert pk.sparsity(small) == pk.sparsity(default)
    assert str(pk.sparsity_report(small)) == str(pk.sparsity_report(default))


def test_bool_masks_take_one_byte_per_weight():
    default, small = _pair(_mlp, sparsity=0.5)
    weights = sum(m.weight_orig.numel() for m in small if isinstance(m, nn.Linear))
    saved = sum(m.numel() * m.element_size() for m in _masks(small).values())
    assert saved == weights  # float32 masks: 4 * weights
    # on disk too: 3 bytes saved per weight, give or take torch.save's 64-byte alignment per tensor
    saved_on_disk = pk.model_size_bytes(default) - pk.model_size_bytes(small)
    assert abs(saved_on_disk - 3 * weights) <= 64 * len(_masks(small))


def test_gpt2_with_bool_masks_matches_float_masks_through_wanda_and_sparsegpt():
    tokens = [torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(i)) for i in range(3)]
    for method in ("wanda", "sparsegpt"):
        default, small = _pair(_gpt2, sparsity=0.5, method=method, calibration=tokens)
        assert all(m.dtype == torch.bool for m in _masks(small).values())
        with torch.no_grad():
            torch.testing.assert_close(small(tokens[0]).logits, default(tokens[0]).logits, rtol=0, atol=0)
        assert pk.sparsity(small) == pk.sparsity(default) == pytest.approx(0.5)


def test_training_through_bool_masks_gives_the_same_gradients_and_keeps_zeros():
    default, small = _pair(_mlp, sparsity=0.7)
    x, y = torch.randn(20, 16), torch.randint(0, 4, (20,))
    for model in (default, small):
        nn.functional.cross_entropy(model(x), y).backward()
    for a, b in zip(default.parameters(), small.parameters()):
        assert torch.equal(a.grad, b.grad)
    before = pk.sparsity(small)
    torch.optim.SGD(small.parameters(), lr=0.5).step()
    assert pk.sparsity(small) == before > 0.69


@given(s1=st.floats(0, 1), s2=st.floats(0, 1), seed=st.integers(0, 2**16))
@settings(max_examples=30, deadline=None)
def test_nested_bool_masks_stay_bool_and_never_revive(s1, s2, seed):
    model = _mlp(seed)
    pk.prune(model, s1, mask_dtype=torch.bool)
    before = {k: v.clone() for k, v in _masks(model).items()}
    pk.prune(model, max(s1, s2), method="random", seed=seed)  # default mask_dtype: existing masks keep theirs
    for k, v in _masks(model).items():
        assert v.dtype == torch.bool
        assert not (v & ~before[k]).any()  # a pruned weight stays pruned


def test_state_dict_round_trips_keep_bool_masks():
    _, small = _pair(_mlp, sparsity=0.5)
    buffer = io.BytesIO()
    torch.save(small.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = _mlp(seed=1)
    pk.load_state_dict(fresh, state)
    assert all(m.dtype == torch.bool for m in _masks(fresh).values())
    x = torch.randn(4, 16)
    assert torch.equal(fresh(x), small(x))
    # a float-mask checkpoint loads into bool masks (and the other way round) with equal values
    default = _pair(_mlp, sparsity=0.5)[0]
    small.load_state_dict(default.state_dict())
    assert torch.equal(small(x), default(x)) and small[0].weight_mask.dtype == torch.bool


def test_remove_copy_and_pickle_of_a_bool_masked_model():
    default, small = _pair(_mlp, sparsity=0.5)
    x = torch.randn(4, 16)
    for clone in (copy.deepcopy(small), pickle.loads(pickle.dumps(small))):
        assert torch.equal(clone(x), small(x)) and clone[0].weight_mask.dtype == torch.bool
    pk.remove(small)
    pk.remove(default)
    assert all(torch.equal(a, b) for a, b in zip(small.state_dict().values(), default.state_dict().values()))


@pytest.mark.parametrize("bad, error, shown", [
    (torch.float16, ValueError, "torch.float16"),
    ("bool", TypeError, "'bool'"),
    (bool, TypeError, "<class 'bool'>"),
])
def test_bad_mask_dtype_is_named_and_leaves_the_model_untouched(bad, error, shown):
    model = _mlp()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(error, match=rf"'mask_dtype' parameter of prune .*Got {shown}"):
        pk.prune(model, 0.5, mask_dtype=bad)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())

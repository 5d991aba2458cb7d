"""Bad input: a clear TypeError/ValueError that names the argument and the value received,
and the caller's tensors and model left exactly as they were (no half-pruned model)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import prunekit as pk

# (bad value, exception, text the message must contain besides the argument name)
BAD_SPARSITY = [
    pytest.param("0.5", TypeError, "'0.5'", id="str"),
    pytest.param(None, TypeError, "None", id="None"),
    pytest.param(True, TypeError, "True", id="True"),
    pytest.param(False, TypeError, "False", id="False"),
    pytest.param(float("nan"), ValueError, "nan", id="nan"),
    pytest.param(-0.1, ValueError, "-0.1", id="negative"),
    pytest.param(1.5, ValueError, "1.5", id="above-one"),
    pytest.param(math.inf, ValueError, "inf", id="inf"),
    pytest.param(-math.inf, ValueError, "-inf", id="-inf"),
    pytest.param([0.5], TypeError, "[0.5]", id="list"),
    pytest.param(torch.tensor(1), TypeError, "tensor(1)", id="int-tensor"),
]

BAD_P = [
    pytest.param(0, ValueError, "0", id="0"),
    pytest.param(3, ValueError, "3", id="3"),
    pytest.param(1.5, ValueError, "1.5", id="1.5"),
    pytest.param(True, TypeError, "True", id="True"),
    pytest.param("1", TypeError, "'1'", id="str"),
    pytest.param(None, TypeError, "None", id="None"),
]


def raises(exc, fn, *texts):
    """Call fn, expect exc, and check the message contains every text."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for t in texts:
        assert t in msg, f"{t!r} not in message: {msg}"
    return msg


def w4(seed=0):
    return torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(seed))


# Every tensor-level function, called with (weight, sparsity, **kw). The argument holding the
# tensor is called 'weight' except for mask_from_scores ('scores').
TENSOR_FUNCS = {
    "magnitude_mask": (lambda w, s, **kw: pk.magnitude_mask(w, s, **kw), "weight"),
    "channel_mask": (lambda w, s, **kw: pk.channel_mask(w, s, **kw), "weight"),
    "kernel_mask": (lambda w, s, **kw: pk.kernel_mask(w, s, **kw), "weight"),
    "mask_from_scores": (lambda w, s, **kw: pk.mask_from_scores(w, s, **kw), "scores"),
    "gradient_mask": (lambda w, s, **kw: pk.gradient_mask(w, torch.ones_like(w), s, **kw), "weight"),
}
P_FUNCS = ["magnitude_mask", "channel_mask", "kernel_mask"]


# --------------------------------------------------------------------------------------
# Tensor level
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("func", list(TENSOR_FUNCS))
@pytest.mark.parametrize("bad, exc, text", BAD_SPARSITY)
def test_bad_sparsity_tensor_level(func, bad, exc, text):
    fn, _ = TENSOR_FUNCS[func]
    w = w4()
    before = w.clone()
    raises(exc, lambda: fn(w, bad), "'sparsity'", func, text)
    assert torch.equal(w, before)


@pytest.mark.parametrize("func", P_FUNCS)
@pytest.mark.parametrize("bad, exc, text", BAD_P)
def test_bad_p(func, bad, exc, text):
    fn, _ = TENSOR_FUNCS[func]
    w = w4()
    before = w.clone()
    raises(exc, lambda: fn(w, 0.5, p=bad), "'p'", func, text)
    assert torch.equal(w, before)


@pytest.mark.parametrize("func", list(TENSOR_FUNCS))
def test_non_floating_weight(func):
    fn, name = TENSOR_FUNCS[func]
    w = torch.arange(4 * 3 * 9).reshape(4, 3, 3, 3)
    before = w.clone()
    raises(TypeError, lambda: fn(w, 0.5), f"'{name}'", "int64", "floating")
    assert torch.equal(w, before)


@pytest.mark.parametrize("func", list(TENSOR_FUNCS))
def test_empty_weight(func):
    fn, name = TENSOR_FUNCS[func]
    w = torch.empty(0, 3, 3, 3)
    raises(ValueError, lambda: fn(w, 0.5), f"'{name}'", "(0, 3, 3, 3)", "non-empty")


@pytest.mark.parametrize("func", list(TENSOR_FUNCS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weight_names_the_count(func, bad):
    fn, name = TENSOR_FUNCS[func]
    w = w4()
    w[0, 0, 0, 0] = bad
    w[3, 2, 1, 0] = bad
    before = w.clone()
    raises(ValueError, lambda: fn(w, 0.5), f"'{name}'", "2 NaN or infinite", "finite")
    assert torch.equal(w.isnan(), before.isnan()) and torch.equal(w.nan_to_num(), before.nan_to_num())


@pytest.mark.parametrize("func", list(TENSOR_FUNCS))
def test_non_tensor_weight(func):
    fn, name = TENSOR_FUNCS[func]
    w = [[1.0, 2.0], [3.0, 4.0]]
    if func == "gradient_mask":
        # the grad argument is built from the weight in TENSOR_FUNCS; call it directly
        raises(TypeError, lambda: pk.gradient_mask(w, torch.ones(2, 2), 0.5), "'weight'", "list")
    else:
        raises(TypeError, lambda: fn(w, 0.5), f"'{name}'", "list", "torch.Tensor")
    assert w == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 3), (4,), (2, 2, 2, 2, 2)])
def test_kernel_mask_needs_4d_weight(shape):
    w = torch.randn(shape)
    before = w.clone()
    raises(ValueError, lambda: pk.kernel_mask(w, 0.5), "'weight'", "kernel_mask", str(tuple(shape)), "4-D")
    assert torch.equal(w, before)


def test_channel_mask_needs_at_least_2d_weight():
    raises(ValueError, lambda: pk.channel_mask(torch.randn(5), 0.5), "'weight'", "(5,)", "2")


def test_gradient_mask_bad_grad():
    w = torch.randn(3, 4)
    g = torch.randn(4, 3)
    wb, gb = w.clone(), g.clone()
    raises(ValueError, lambda: pk.gradient_mask(w, g, 0.5), "'grad'", "(3, 4)", "(4, 3)")
    g2 = torch.randn(3, 4)
    g2[1, 1] = float("nan")
    raises(ValueError, lambda: pk.gradient_mask(w, g2, 0.5), "'grad'", "1 NaN")
    raises(TypeError, lambda: pk.gradient_mask(w, g.T.to(torch.int32), 0.5), "'grad'", "int32")
    with pytest.raises((TypeError, ValueError)) as info:
        pk.gradient_mask(w, [[0.0] * 4] * 3, 0.5)
    assert "'grad'" in str(info.value)
    assert torch.equal(w, wb) and torch.equal(g, gb)


@pytest.mark.parametrize("bad, exc, text", [
    pytest.param("fisher", ValueError, "'fisher'", id="unknown"),
    pytest.param("Taylor", ValueError, "'Taylor'", id="case"),
    pytest.param(None, TypeError, "None", id="None"),
    pytest.param(1, TypeError, "1", id="int"),
])
def test_gradient_mask_unknown_criterion(bad, exc, text):
    w, g = torch.randn(3, 4), torch.randn(3, 4)
    raises(exc, lambda: pk.gradient_mask(w, g, 0.5, criterion=bad), "'criterion'", text, "'taylor'", "'gradient'")


# --------------------------------------------------------------------------------------
# Model level: prune must leave the model untouched on any bad input
# --------------------------------------------------------------------------------------


def model_():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_untouched(model, before):
    sd = model.state_dict()
    assert list(sd) == list(before)
    for k, v in before.items():
        assert torch.equal(sd[k], v), k
    assert not torch_prune.is_pruned(model)
    for m in model.modules():
        assert not m._forward_pre_hooks and not m._forward_hooks
        assert not any(k.endswith("_orig") for k in m._parameters)
        assert not any(k.endswith("_mask") for k in m._buffers)


def assert_masks_unchanged(model, before):
    sd = model.state_dict()
    assert list(sd) == list(before)
    for k, v in before.items():
        assert torch.equal(sd[k], v), k


@pytest.mark.parametrize("bad, exc, text", BAD_SPARSITY)
@pytest.mark.parametrize("method", ["l1", "channel", "kernel"])
def test_prune_bad_sparsity(bad, exc, text, method):
    model = model_()
    before = snapshot(model)
    raises(exc, lambda: pk.prune(model, bad, method=method), "'sparsity'", "prune", text)
    assert_untouched(model, before)


def test_prune_bad_sparsity_on_already_pruned_model_keeps_its_masks():
    model = pk.prune(model_(), 0.5)
    before = snapshot(model)
    for bad in (1.5, "x", float("nan")):
        with pytest.raises((TypeError, ValueError)):
            pk.prune(model, bad)
    with pytest.raises(ValueError):
        pk.prune(model, 0.9, exclude=["nope"])
    assert_masks_unchanged(model, before)


@pytest.mark.parametrize("bad, exc, text", [
    pytest.param("l3", ValueError, "'l3'", id="unknown"),
    pytest.param("L1", ValueError, "'L1'", id="case"),
    pytest.param(None, TypeError, "None", id="None"),
    pytest.param(1, TypeError, "1", id="int"),
])
def test_prune_unknown_method_lists_valid_ones(bad, exc, text):
    model = model_()
    before = snapshot(model)
    raises(exc, lambda: pk.prune(model, 0.5, method=bad), "'method'", text, "'l1'", "'l2'", "'channel'", "'kernel'")
    assert_untouched(model, before)
    raises(exc, lambda: pk.prunable_layers(model, bad), "'method'", text, "'l1'")


@pytest.mark.parametrize("bad, exc, text", [
    pytest.param("local", ValueError, "'local'", id="unknown"),
    pytest.param(None, TypeError, "None", id="None"),
])
def test_prune_unknown_scope(bad, exc, text):
    model = model_()
    before = snapshot(model)
    raises(exc, lambda: pk.prune(model, 0.5, scope=bad), "'scope'", text, "'layer'", "'global'")
    assert_untouched(model, before)


@pytest.mark.parametrize("method", ["channel", "kernel"])
@pytest.mark.parametrize("bad, exc, text", BAD_P)
def test_prune_bad_p_option(method, bad, exc, text):
    model = model_()
    before = snapshot(model)
    raises(exc, lambda: pk.prune(model, 0.5, method=method, p=bad), "'p'", text)
    assert_untouched(model, before)


def test_prune_unknown_method_option():
    model = model_()
    before = snapshot(model)
    raises(TypeError, lambda: pk.prune(model, 0.5, method="l1", p=2), "'p'", "'l1'")
    raises(TypeError, lambda: pk.prune(model, 0.5, method="channel", q=2), "'q'", "'channel'", "'p'")
    assert_untouched(model, before)


@pytest.mark.parametrize("model", [
    pytest.param(nn.Sequential(nn.ReLU()), id="relu-only"),
    pytest.param(nn.Sequential(nn.BatchNorm1d(3), nn.ReLU()), id="bn-only"),
])
def test_prune_model_without_prunable_layers(model):
    before = snapshot(model)
    raises(ValueError, lambda: pk.prune(model, 0.5), "no layers", "'l1'", "Sequential")
    assert_untouched(model, before)


def test_prune_kernel_on_model_without_conv2d():
    model = nn.Sequential(nn.Linear(3, 4), nn.Conv1d(1, 2, 3))
    before = snapshot(model)
    raises(ValueError, lambda: pk.prune(model, 0.5, method="kernel"), "no layers", "'kernel'", "Conv2d")
    assert_untouched(model, before)


def test_prune_everything_excluded():
    model = model_()
    before = snapshot(model)
    raises(ValueError, lambda: pk.prune(model, 0.5, exclude=["0", "4"]), "no layers")
    assert_untouched(model, before)


def test_prune_exclude_not_in_model():
    model = model_()
    before = snapshot(model)
    raises(ValueError, lambda: pk.prune(model, 0.5, exclude=["fc9"]), "'exclude'", "'fc9'")
    raises(ValueError, lambda: pk.prune(model, 0.5, exclude="fc9"), "'exclude'", "'fc9'")
    raises(ValueError, lambda: pk.prune(model, 0.5, exclude=["0", "fc9"]), "'exclude'", "'fc9'")
    stranger = nn.Linear(2, 2)
    raises(ValueError, lambda: pk.prune(model, 0.5, exclude=[stranger]), "'exclude'", "Linear", "not part")
    raises(ValueError, lambda: pk.prune(model, 0.5, exclude=stranger), "'exclude'", "Linear")
    raises(TypeError, lambda: pk.prune(model, 0.5, exclude=[3]), "'exclude'", "3")
    raises(TypeError, lambda: pk.prune(model, 0.5, exclude=3.5), "'exclude'", "3.5")
    assert_untouched(model, before)


def test_prune_sparsity_mapping_errors():
    model = model_()
    before = snapshot(model)
    raises(ValueError, lambda: pk.prune(model, {"0": 0.5}, scope="global"), "'sparsity'", "'global'", "layer")
    raises(ValueError, lambda: pk.prune(model, {"1": 0.5}), "'sparsity'", "'1'")  # a BatchNorm
    raises(ValueError, lambda: pk.prune(model, {"nope": 0.5}), "'sparsity'", "'nope'", "'0'", "'4'")
    raises(ValueError, lambda: pk.prune(model, {"0": 0.5, "4": 1.5}), "sparsity['4']", "1.5")
    raises(TypeError, lambda: pk.prune(model, {"0": 0.5, "4": "high"}), "sparsity['4']", "'high'")
    raises(ValueError, lambda: pk.prune(model, {"0": 0.5}, exclude=["0"]), "'sparsity'", "'0'")
    assert_untouched(model, before)


@pytest.mark.parametrize("method", ["l1", "l2", "channel"])
@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_prune_is_atomic_when_a_later_layer_has_bad_weights(method, scope, bad):
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 4), nn.Linear(4, 2))
    with torch.no_grad():
        model[3].weight[1, 2] = bad
    before = snapshot(model)
    msg = raises(ValueError, lambda: pk.prune(model, 0.5, method=method, scope=scope), "'3.weight'", "1 NaN")
    assert "prune" in msg
    sd = model.state_dict()
    assert list(sd) == list(before)
    for k, v in before.items():
        assert torch.equal(sd[k].nan_to_num(), v.nan_to_num()), k
    assert not torch_prune.is_pruned(model)
    for m in model.modules():
        assert not m._forward_pre_hooks and not m._forward_hooks


def test_prune_bad_model():
    raises(TypeError, lambda: pk.prune([nn.Linear(2, 2)], 0.5), "'model'", "list")
    raises(TypeError, lambda: pk.prune(torch.randn(3, 3), 0.5), "'model'", "Tensor")


# --------------------------------------------------------------------------------------
# The other public functions
# --------------------------------------------------------------------------------------


def test_remove_bad_model():
    raises(TypeError, lambda: pk.remove("model"), "'model'", "str")


def test_remove_on_unpruned_model_is_a_no_op():
    model = model_()
    before = snapshot(model)
    pk.remove(model)
    assert_untouched(model, before)


def test_load_state_dict_bad_arguments():
    model = model_()
    before = snapshot(model)
    raises(TypeError, lambda: pk.load_state_dict(model, [1, 2]), "'state_dict'", "list")
    raises(TypeError, lambda: pk.load_state_dict(model, None), "'state_dict'", "NoneType")
    raises(TypeError, lambda: pk.load_state_dict("model", {}), "'model'", "str")
    assert_untouched(model, before)


def test_load_state_dict_of_other_architecture_leaves_model_untouched():
    source = pk.prune(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                    nn.Linear(4 * 4 * 4, 7)), 0.5, method="channel")
    model = model_()
    with torch.no_grad():
        model[1].running_mean.add_(1.0)  # a buffer the source would overwrite
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="size mismatch"):
        pk.load_state_dict(model, source.state_dict())
    assert_untouched(model, before)


def test_load_state_dict_of_other_architecture_leaves_pruned_model_untouched():
    source = pk.prune(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                    nn.Linear(4 * 4 * 4, 7)), 0.5)
    model = pk.prune(model_(), 0.3)
    before = snapshot(model)
    weight_before = model[0].weight.detach().clone()
    with pytest.raises(RuntimeError):
        pk.load_state_dict(model, source.state_dict())
    assert_masks_unchanged(model, before)
    assert torch.equal(model[0].weight.detach(), weight_before)


def test_sparsity_bad_arguments():
    raises(TypeError, lambda: pk.sparsity("abc"), "'model_or_tensor'", "str")
    raises(TypeError, lambda: pk.sparsity([0.0, 1.0]), "'model_or_tensor'", "list")
    raises(ValueError, lambda: pk.sparsity(torch.empty(0, 3)), "'model_or_tensor'", "(0, 3)")
    raises(ValueError, lambda: pk.sparsity(nn.ReLU()), "ReLU")


def test_sparsity_report_bad_arguments():
    raises(TypeError, lambda: pk.sparsity_report(5), "'model'", "int")
    raises(ValueError, lambda: pk.sparsity_report(nn.Sequential(nn.ReLU())), "Sequential")


def test_prunable_layers_bad_arguments():
    model = model_()
    raises(TypeError, lambda: pk.prunable_layers("m"), "'model'", "str")
    raises(ValueError, lambda: pk.prunable_layers(model, exclude=["x"]), "'exclude'", "'x'")


def test_register_method_bad_argument():
    raises(TypeError, lambda: pk.register_method("l1"), "Method", "'l1'")
    assert "l1" in pk.METHODS


def test_prune_refuses_weight_shared_layers_before_touching_anything():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    pk.prune(model, 0.5)
    pk.share_weights(model, bits=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="parametrized"):
        pk.prune(model, 0.7)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)

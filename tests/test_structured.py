"""prunekit.shrink (physical removal of pruned channels), sensitivity scans, Torch-Pruning adapter."""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunekit as pk
from prunekit.structured import following_batchnorms

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


HAS_TP = importlib.util.find_spec("torch_pruning") is not None
needs_tp = pytest.mark.skipif(not HAS_TP, reason="Torch-Pruning is an optional dependency "
                                                 "(pip install torch-pruning); not installed here")


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                with torch.no_grad():
                    m.weight.copy_(torch.randn(n, generator=g))
                    m.bias.copy_(torch.randn(n, generator=g))
    return model.eval()


def max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


class Functional(nn.Module):
    """A hand-written forward with functional ops and x.view(x.size(0), -1)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.fc = nn.Linear(12 * 3 * 3, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.gelu(self.conv2(x))
        x = F.adaptive_avg_pool2d(x, 3)
        return self.fc(x.view(x.size(0), -1))


def conv_chain_no_bias():
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.ReLU(),
                         nn.Conv2d(8, 12, 3, bias=False), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 4)), (2, 3, 10, 10)


def conv_chain_bn():
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, padding=1), bn1=nn.BatchNorm2d(8), relu1=nn.ReLU(),
        pool1=nn.MaxPool2d(2), conv2=nn.Conv2d(8, 10, 3), bn2=nn.BatchNorm2d(10),
        relu2=nn.ReLU6(), drop=nn.Dropout(0.3), flatten=nn.Flatten(),
        fc=nn.Linear(10 * 2 * 2, 6))), (3, 3, 8, 8)


def mlp_bn():
    return nn.Sequential(nn.Linear(20, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, 12), nn.BatchNorm1d(12), nn.GELU(),
                         nn.Linear(12, 3)), (5, 20)


def nested():
    block = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.SiLU())
    inner = nn.Sequential(nn.Sequential(nn.Conv2d(6, 9, 3), nn.LeakyReLU(0.1)), nn.AvgPool2d(2))
    return nn.Sequential(block, inner, nn.Flatten(), nn.Sequential(nn.Linear(9 * 3 * 3, 7))), (2, 3, 8, 8)


def conv1d_chain():
    return nn.Sequential(nn.Conv1d(2, 8, 3), nn.BatchNorm1d(8), nn.Tanh(), nn.MaxPool1d(2),
                         nn.Conv1d(8, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 5, 3)), (4, 2, 16)


def lenet5_bn():
    return pk.models.LeNet5(batch_norm=True), (2, 1, 28, 28)


def narrow_vgg():
    return pk.models.VGG((8, "M", 16, 16, "M"), image_size=16), (2, 3, 16, 16)


def functional():
    return Functional(), (2, 3, 14, 14)


ARCHITECTURES = [conv_chain_no_bias, conv_chain_bn, mlp_bn, nested, conv1d_chain, lenet5_bn,
                 narrow_vgg, functional]


def last_layer_name(model):
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))][-1]


@pytest.mark.parametrize("build", ARCHITECTURES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_shrink_matches_masked_model(build, sparsity):
    torch.manual_seed(0)
    model, shape = build()
    randomize(model)
    last = last_layer_name(model)
    pk.prune(model, sparsity, method="channel", exclude=[last])
    x = torch.randn(*shape)
    small = pk.shrink(model, x)
    assert max_diff(model, small, x) <= 1e-5
    assert max_diff(model, small, torch.randn(*shape)) <= 1e-5
    named = dict(small.named_modules())
    for name, layer in pk.prunable_layers(model, "channel", exclude=[last]):
        n = layer.weight.shape[0]
        assert named[name].weight.shape[0] == n - round(sparsity * n), name
    assert named[last].weight.shape[0] == dict(model.named_modules())[last].weight.shape[0]
    assert pk.count_parameters(small) <= pk.count_parameters(model)


@pytest.mark.parametrize("build", ARCHITECTURES, ids=lambda f: f.__name__)
def test_all_but_one_channel_pruned(build):
    torch.manual_seed(1)
    model, shape = build()
    randomize(model)
    layers = pk.prunable_layers(model, "channel", exclude=[last_layer_name(model)])
    plan = {name: (m.weight.shape[0] - 1) / m.weight.shape[0] for name, m in layers}
    pk.prune(model, plan, method="channel")
    x = torch.randn(*shape)
    small = pk.shrink(model, x)
    assert max_diff(model, small, x) <= 1e-5
    named = dict(small.named_modules())
    assert all(named[name].weight.shape[0] == 1 for name in plan)


def test_parameter_count_is_hand_computed():
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 8, 3), bn1=nn.BatchNorm2d(8), relu1=nn.ReLU(), pool=nn.MaxPool2d(2),
        conv2=nn.Conv2d(8, 16, 3), relu2=nn.ReLU(), flatten=nn.Flatten(), fc=nn.Linear(16 * 2 * 2, 10)))
    randomize(model)
    pk.prune(model, {"conv1": 0.5, "conv2": 0.25}, method="channel")
    small = pk.shrink(model, torch.randn(1, 3, 10, 10))
    # conv1 3->4 (+bias), bn1 4 (weight+bias), conv2 4->12 (+bias), fc 12*2*2 -> 10 (+bias)
    expected = (4 * 3 * 9 + 4) + 2 * 4 + (12 * 4 * 9 + 12) + (12 * 4 * 10 + 10)
    assert pk.count_parameters(small) == expected
    assert small.bn1.running_mean.shape == (4,) and small.bn1.num_features == 4
    assert small.fc.in_features == 48 and small.conv2.in_channels == 4


def test_flatten_into_linear_removes_the_right_column_blocks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 1), nn.Flatten(), nn.Linear(4 * 3 * 3, 2)).eval()
    pk.prune(model, 0.5, method="channel", exclude=["2"])
    keep = pk.effective_tensor(model[0]).reshape(4, -1).any(dim=1)
    small = pk.shrink(model, torch.randn(1, 1, 3, 3))
    cols = torch.arange(36).reshape(4, 9)[keep].reshape(-1)
    assert torch.equal(small[2].weight, pk.effective_tensor(model[2])[:, cols])


def test_shrink_does_not_modify_its_input_and_returns_plain_parameters():
    torch.manual_seed(0)
    model, shape = conv_chain_bn()
    randomize(model).train()
    model.bn1.eval()
    pk.prune(model, 0.5, method="channel", exclude=["fc"])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    hooks = [len(m._forward_pre_hooks) for m in model.modules()]
    weight_orig = model.conv1.weight_orig
    small = pk.shrink(model, torch.randn(*shape))
    after = model.state_dict()
    assert state.keys() == after.keys() and all(torch.equal(state[k], after[k]) for k in state)
    assert [m.training for m in model.modules()] == modes
    assert [len(m._forward_pre_hooks) for m in model.modules()] == hooks
    assert model.conv1.weight_orig is weight_orig
    # the copy keeps the per-module modes, and has no re-parametrisation left
    assert [m.training for m in small.modules()] == modes
    assert not any(k.endswith(("_orig", "_mask")) for k in small.state_dict())
    assert all(type(p) is nn.Parameter for p in small.parameters())
    assert not any(m._forward_pre_hooks for m in small.modules())
    assert type(small) is type(model)
    assert list(dict(small.conv1.named_parameters())) == ["weight", "bias"]


def test_dtype_and_torch_prune_masks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                          nn.Linear(6 * 4 * 4, 3)).double()
    randomize(model)
    torch_prune.ln_structured(model[0], "weight", 0.5, n=1, dim=0)  # torch's own masks
    dead = ~pk.effective_tensor(model[0]).reshape(6, -1).any(dim=1)
    keep = ~dead
    torch_prune.custom_from_mask(model[0], "bias", keep)
    torch_prune.custom_from_mask(model[1], "weight", keep)
    torch_prune.custom_from_mask(model[1], "bias", keep)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    model(x).sum().backward()  # torch's pruned weight is now a non-leaf attribute
    small = pk.shrink(model, x)
    assert small[0].weight.dtype == torch.float64 and small[0].out_channels == 3
    assert max_diff(model, small, x) <= 1e-12


def test_nonzero_constants_are_folded_or_kept_exactly():
    """A masked conv whose BatchNorm is *not* masked outputs a non-zero constant."""
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 6, 3), bn1=nn.BatchNorm2d(6), act1=nn.Sigmoid(),
        conv2=nn.Conv2d(6, 8, 3, padding=1), bn2=nn.BatchNorm2d(8), act2=nn.ReLU(),
        conv3=nn.Conv2d(8, 5, 1, bias=False), act3=nn.ReLU(), flatten=nn.Flatten(),
        fc=nn.Linear(5 * 4 * 4, 3)))
    randomize(model)
    for name, n in (("conv1", 6), ("conv2", 8), ("conv3", 5)):
        keep = torch.ones(n, dtype=torch.bool)
        keep[::2] = False
        layer = getattr(model, name)
        torch_prune.custom_from_mask(layer, "weight", keep.view(-1, 1, 1, 1).expand_as(layer.weight))
    x = torch.randn(3, 3, 6, 6)
    small = pk.shrink(model, x)
    assert max_diff(model, small, x) <= 1e-5
    # conv1 -> conv2 has zero padding: a constant is not constant at the borders -> kept
    assert small.conv1.out_channels == 6
    # conv2 -> conv3 (1x1, no padding): folded into conv3, which gains a bias
    assert small.conv2.out_channels == 4 and small.conv3.bias is not None
    # conv3 -> flatten -> fc: ReLU(0) = 0 (no bias, no BN): removed
    assert small.conv3.out_channels == 2 and small.fc.in_features == 2 * 16


def test_kernel_pruning_keeps_dense_zeros():
    torch.manual_seed(0)
    model, shape = narrow_vgg()
    randomize(model)
    pk.prune(model, 0.5, method="kernel", exclude=["conv1"])  # conv1 has only 3 kernels a filter
    convs = [model.conv2, model.conv3]
    for conv in convs:  # whole kernels: each k x k kernel is all zero or all kept
        w = pk.effective_tensor(conv)
        nonzero = (w != 0).sum(dim=(2, 3))
        assert bool(((nonzero == 0) | (nonzero == 9)).all())
        assert not bool((~(w != 0).reshape(w.shape[0], -1).any(dim=1)).any())  # no dead filter
    x = torch.randn(*shape)
    small = pk.shrink(model, x)
    assert max_diff(model, small, x) <= 1e-5
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            assert dict(small.named_modules())[name].out_channels == conv.out_channels
    zero_kernels = lambda m: sum(int(((c.weight if not hasattr(c, "weight_orig") else pk.effective_tensor(c))
                                      .abs().sum(dim=(2, 3)) == 0).sum())
                                 for c in m.modules() if isinstance(c, nn.Conv2d))  # noqa: E731
    assert zero_kernels(small) == zero_kernels(model)


def test_channel_the_next_layer_never_reads_is_removed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3),
                          nn.Flatten(), nn.Linear(5 * 2 * 2, 2)).eval()
    keep = torch.ones_like(model[2].weight, dtype=torch.bool)
    keep[:, 1] = False  # every kernel reading input channel 1
    torch_prune.custom_from_mask(model[2], "weight", keep)
    x = torch.randn(2, 3, 4, 4)
    small = pk.shrink(model, x)
    assert small[0].out_channels == 3 and small[2].in_channels == 3
    assert max_diff(model, small, x) <= 1e-5


def test_final_layer_keeps_its_outputs():
    torch.manual_seed(0)
    model, shape = mlp_bn()
    randomize(model)
    pk.prune(model, 0.5, method="channel")  # the classifier too
    x = torch.randn(*shape)
    small = pk.shrink(model, x)
    assert small(x).shape == model(x).shape and small[6].out_features == 3
    assert max_diff(model, small, x) <= 1e-5


def test_anything_after_the_last_layer_is_fine():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4), nn.LogSoftmax(dim=1)).eval()
    pk.prune(model, 0.5, method="channel")
    x = torch.randn(3, 8)
    small = pk.shrink(model, x)
    assert small[0].out_features == 3 and max_diff(model, small, x) <= 1e-5


# ---- refusals ---------------------------------------------------------------------------


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], dim=1))


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        if h.sum() > 0:  # data-dependent control flow
            h = h.relu()
        return self.b(h)


class HardCodedView(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 2 * 2, 2)

    def forward(self, x):
        return self.fc(self.conv(x).view(-1, 16))


def grouped():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8),
                         nn.Flatten(), nn.Linear(8 * 2 * 2, 2))


@pytest.mark.parametrize("build, shape, where", [
    (pk.models.TinyResNet, (2, 3, 8, 8), "users"),
    (Concat, (2, 3, 6, 6), "cat"),
    (grouped, (2, 3, 6, 6), "groups=8"),
], ids=["residual", "concat", "grouped"])
def test_refuses_graphs_it_cannot_rebuild(build, shape, where):
    torch.manual_seed(0)
    model = build().eval()
    pk.prune(model, 0.5, method="channel", exclude=[last_layer_name(model)])
    with pytest.raises(pk.UnsupportedGraphError) as info:
        pk.shrink(model, torch.randn(*shape))
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "Torch-Pruning" in message and "torch_pruning.DependencyGraph" in message
    assert "tp_prune" in message and where in message and "node" in message


def test_refuses_untraceable_and_shape_dependent_models():
    with pytest.warns(UserWarning, match="could not trace"):  # prune's BatchNorm search
        model = pk.prune(Untraceable(), 0.5, method="channel")
    with pytest.raises(pk.UnsupportedGraphError, match="torch.fx.*tp_prune"):
        pk.shrink(model, torch.randn(2, 4))
    model = pk.prune(HardCodedView(), 0.5, method="channel", exclude=["fc"])
    with pytest.raises(pk.UnsupportedGraphError, match="hard-codes|shape"):
        pk.shrink(model, torch.randn(2, 3, 4, 4))


def test_residual_network_shrinks_when_only_block_internal_convs_are_pruned():
    """The additions see no removed channel, so the chain inside each block shrinks exactly."""
    torch.manual_seed(0)
    model = randomize(pk.models.TinyResNet())
    pk.prune(model, {"block1.conv1": 0.5, "block2.conv1": 0.75}, method="channel")
    x = torch.randn(2, 3, 8, 8)
    small = pk.shrink(model, x)
    assert small.block1.conv1.out_channels == 8 and small.block1.conv2.in_channels == 8
    assert small.block2.conv1.out_channels == 8 and small.block2.bn1.num_features == 8
    assert max_diff(model, small, x) <= 1e-5


def test_bad_arguments():
    with pytest.raises(TypeError, match="'model' parameter of shrink"):
        pk.shrink("model", torch.randn(1))
    with pytest.raises(TypeError, match="'example_input' parameter of shrink"):
        pk.shrink(nn.Linear(2, 2), [1.0, 2.0])


def test_following_batchnorms_unchanged():
    model, _ = conv_chain_bn()
    pairs = following_batchnorms(model)
    assert pairs == {model.conv1: model.bn1, model.conv2: model.bn2}


# ---- sensitivity ------------------------------------------------------------------------


def test_sensitivity_scan_restores_the_model_and_plans():
    torch.manual_seed(0)
    model, shape = narrow_vgg()
    randomize(model).train()
    pk.prune(model, {"conv1": 0.25}, method="channel")  # an already pruned model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    x = torch.randn(*shape)
    with torch.no_grad():
        reference = model.eval()(x)
    model.train()
    for m, mode in zip(model.modules(), modes):
        m.training = mode

    def evaluate(m):
        m.eval()  # evaluate_fn may switch modes or train; it only sees copies
        with torch.no_grad():
            return -float((m(x) - reference).pow(2).mean())

    with pytest.warns(UserWarning, match="already pruned"):  # conv1 at sparsity 0
        scan = pk.sensitivity_scan(model, evaluate, [0.5, 0.0, 0.25, 0.75], exclude=["fc"])
    after = model.state_dict()
    assert state.keys() == after.keys() and all(torch.equal(state[k], after[k]) for k in state)
    assert [m.training for m in model.modules()] == modes
    assert list(scan.results) == ["conv1", "conv2", "conv3"]
    assert scan.sparsities == (0.0, 0.25, 0.5, 0.75)
    assert scan.dense == 0.0 and scan.results["conv2"][0.0] == 0.0
    assert scan.results["conv1"][0.25] == 0.0  # already pruned at 0.25: nothing changes
    assert all(scan.results[n][0.75] < 0 for n in scan.results)
    plan = scan.plan(0.0)
    assert plan == {"conv1": 0.25, "conv2": 0.0, "conv3": 0.0}
    assert set(scan.plan(1e9).values()) == {0.75}
    assert len(scan.as_dicts()) == 12 and "conv2" in str(scan)
    pruned = pk.prune(copy.deepcopy(model), scan.plan(1e9), method="channel")
    assert pk.shrink(pruned, x).conv2.out_channels == 4


def test_sensitivity_plan_rule():
    scan = pk.SensitivityScan({"a": {0.1: 0.9, 0.2: 0.5, 0.3: 0.9}}, dense=0.9,
                              sparsities=(0.1, 0.2, 0.3), method="l1")
    assert scan.plan(0.01) == {"a": 0.1}  # a recovery after a drop does not count
    assert scan.plan(0.5, relative=True) == {"a": 0.3}
    loss = pk.SensitivityScan({"a": {0.1: 1.0, 0.2: 2.0}}, dense=1.0, sparsities=(0.1, 0.2),
                              method="l1", higher_is_better=False)
    assert loss.plan(0.5) == {"a": 0.1}
    with pytest.raises(ValueError, match="tolerance"):
        scan.plan(-1)


def test_sensitivity_scan_bad_arguments():
    model = pk.models.MLP(4, (3,), 2)
    with pytest.raises(ValueError, match="'sparsities'"):
        pk.sensitivity_scan(model, lambda m: 0.0, [1.5])
    with pytest.raises(ValueError, match="'layers'.*fc9"):
        pk.sensitivity_scan(model, lambda m: 0.0, [0.5], layers=["fc9"])
    with pytest.raises(TypeError, match="'evaluate_fn'"):
        pk.sensitivity_scan(model, None, [0.5])
    with pytest.raises(TypeError, match="must return a number"):
        pk.sensitivity_scan(model, lambda m: "good", [0.5])


# ---- Torch-Pruning adapter --------------------------------------------------------------


@needs_tp
def test_tp_prune_shrinks_a_residual_network_that_shrink_refuses():
    torch.manual_seed(0)
    model = randomize(pk.models.TinyResNet())
    x = torch.randn(2, 3, 16, 16)
    masked = pk.prune(copy.deepcopy(model), 0.5, method="channel", exclude=["fc"])
    with pytest.raises(pk.UnsupportedGraphError, match="tp_prune"):
        pk.shrink(masked, x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    small = pk.tp_prune(model, x, 0.5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert small(x).shape == model(x).shape
    assert pk.count_parameters(small) < 0.35 * pk.count_parameters(model)
    assert pk.count_macs(small, x) < 0.35 * pk.count_macs(model, x)
    assert small.block2.conv2.out_channels == 16 and small.fc.out_features == 10
    assert small.training == model.training
    # a masked model: the masked channels (norm 0) are the ones that go
    small_masked = pk.tp_prune(masked, x, 0.5)
    assert small_masked.block1.conv1.out_channels == 8


@needs_tp
def test_prunekit_importance_makes_the_same_choice_as_prune_and_shrink():
    torch.manual_seed(0)
    model, shape = narrow_vgg()
    randomize(model)
    x = torch.randn(*shape)
    tp_model = pk.tp_prune(model, x, 0.5, importance="l2")
    masked = pk.prune(copy.deepcopy(model), 0.5, method="channel", p=2, exclude=["fc"])
    small = pk.shrink(masked, x)
    assert [p.shape for p in tp_model.parameters()] == [p.shape for p in small.parameters()]
    assert max_diff(tp_model, small, x) <= 1e-5


@needs_tp
def test_taylor_importance_needs_gradients():
    import torch_pruning as tp

    torch.manual_seed(0)
    model = pk.models.TinyResNet()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match="backward"):
        pk.tp_prune(model, x, 0.5, importance="taylor")
    model(x).logsumexp(dim=1).sum().backward()
    small = pk.tp_prune(model, x, 0.5, importance="taylor")
    assert small.block1.conv1.out_channels == 8
    assert all(p.grad is None for p in small.parameters())
    assert isinstance(pk.structured.PrunekitImportance("taylor"), tp.importance.Importance)
    other = pk.tp_prune(model, x, 0.25, importance=tp.importance.GroupMagnitudeImportance(p=2))
    assert other.block1.conv1.out_channels == 12


def test_tp_prune_without_torch_pruning_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_pruning", None)
    with pytest.raises(ImportError, match="pip install torch-pruning"):
        pk.tp_prune(pk.models.TinyResNet(), torch.randn(1, 3, 8, 8), 0.5)

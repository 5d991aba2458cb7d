"""Model-level pruning: parity with torch.nn.utils.prune, scopes, re-pruning, training,
serialization, structured (channel/kernel) pruning of models, exclude, and metrics."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import prunekit as pk

SPARSITIES = [0.0, 0.3, 0.5, 0.9, 1.0]


# --------------------------------------------------------------------------------------
# Models and helpers
# --------------------------------------------------------------------------------------


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 5))


def cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
    )


def x_for(model: nn.Module, batch: int = 4, seed: int = 123) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    first = next(m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    dtype = first.weight_orig.dtype if hasattr(first, "weight_orig") else first.weight.dtype
    if isinstance(first, nn.Conv2d):
        return torch.randn(batch, first.in_channels, 8, 8, generator=g, dtype=dtype)
    return torch.randn(batch, first.in_features, generator=g, dtype=dtype)


def layers(model: nn.Module):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


def tie_free_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every prunable weight random normal values with all |w| distinct across layers."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in layers(model):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.3)
    allw = torch.cat([m.weight.detach().abs().flatten() for _, m in layers(model)])
    assert allw.unique().numel() == allw.numel() and (allw > 0).all(), "test model must be tie-free"
    return model


def make(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return tie_free_(mlp() if kind == "mlp" else cnn(), seed)


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight_mask.bool() for n, m in layers(model) if hasattr(m, "weight_mask")}


def n_pruned(s: float, n: int) -> int:
    return round(s * n)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model: nn.Module, before: dict[str, torch.Tensor]):
    now = model.state_dict()
    assert list(now) == list(before)
    for k, v in before.items():
        assert torch.equal(now[k], v), k


def has_pruning(model: nn.Module) -> bool:
    return torch_prune.is_pruned(model) or any(k.endswith(("_orig", "_mask")) for k in model.state_dict())


# --------------------------------------------------------------------------------------
# Parity with torch.nn.utils.prune.global_unstructured
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("s", SPARSITIES)
def test_global_l1_matches_torch_global_unstructured(kind, s):
    model = make(kind)
    ref = copy.deepcopy(model)
    assert pk.prune(model, s, method="l1", scope="global") is model
    params = [(m, "weight") for _, m in layers(ref)]
    torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=s)
    ours, theirs = masks_of(model), masks_of(ref)
    assert ours.keys() == theirs.keys() == {n for n, _ in layers(model)}
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    total = sum(m.numel() for m in ours.values())
    assert sum(int((~m).sum()) for m in ours.values()) == n_pruned(s, total)
    x = x_for(model)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("s", SPARSITIES)
def test_layer_scope_prunes_exact_count_per_layer_and_l2_equals_l1(kind, s):
    model, model2 = make(kind), make(kind)
    pk.prune(model, s, method="l1", scope="layer")
    pk.prune(model2, s, method="l2", scope="layer")
    m1, m2 = masks_of(model), masks_of(model2)
    assert len(m1) == len(layers(model))
    for name, mask in m1.items():
        assert int((~mask).sum()) == n_pruned(s, mask.numel()), name
        assert torch.equal(mask, m2[name]), name
        # the same mask as torch's per-layer L1Unstructured
        w = dict(layers(model))[name].weight_orig.detach()
        expected = torch_prune.L1Unstructured(s).compute_mask(w, torch.ones_like(w)).bool()
        assert torch.equal(mask, expected), name
    g1, g2 = make(kind), make(kind)
    pk.prune(g1, s, method="l1", scope="global")
    pk.prune(g2, s, method="l2", scope="global")
    for name, mask in masks_of(g1).items():
        assert torch.equal(mask, masks_of(g2)[name])


# --------------------------------------------------------------------------------------
# Re-pruning: absolute targets, nesting, no revival
# --------------------------------------------------------------------------------------


def _train_steps(model, steps=3, lr=0.05, seed=0):
    x = x_for(model, 8, seed)
    target = torch.randn(model(x).shape, generator=torch.Generator().manual_seed(seed + 1), dtype=x.dtype)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), target).backward()
        opt.step()


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_repruning_reaches_new_target_and_keeps_old_pruned(kind, scope):
    model = make(kind)
    pk.prune(model, 0.5, scope=scope)
    first = masks_of(model)
    _train_steps(model)  # weights move between the two calls; pruned ones must stay pruned
    pk.prune(model, 0.8, scope=scope)
    second = masks_of(model)
    for name in first:
        assert not (second[name] & ~first[name]).any(), f"{name}: a pruned weight came back"
        if scope == "layer":
            assert int((~second[name]).sum()) == n_pruned(0.8, second[name].numel())
    if scope == "global":
        total = sum(m.numel() for m in second.values())
        assert sum(int((~m).sum()) for m in second.values()) == n_pruned(0.8, total)
    # every pruned weight computes as exactly zero
    for name, m in layers(model):
        assert not pk.effective_tensor(m)[~second[name]].any()


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_repruning_to_lower_sparsity_warns_and_changes_nothing(scope):
    model = make("cnn")
    pk.prune(model, 0.8, scope=scope)
    before = state(model)
    with pytest.warns(UserWarning, match="already pruned"):
        pk.prune(model, 0.5, scope=scope)
    assert_same_state(model, before)
    with pytest.warns(UserWarning):
        pk.prune(model, 0.0, scope=scope)
    assert_same_state(model, before)


@pytest.mark.parametrize("second", ["channel", "kernel"])
def test_structured_pruning_after_unstructured_keeps_earlier_zeros(second):
    model = make("cnn")
    pk.prune(model, 0.5, method="l1")
    first = masks_of(model)
    pk.prune(model, 0.5, method=second)
    for name, m in layers(model):
        if name not in first:
            continue
        mask = m.weight_mask.bool()
        assert not (mask & ~first[name]).any(), f"{name}: an l1-pruned weight came back"
        if second == "channel" or isinstance(m, nn.Conv2d):
            units = mask.flatten(1).any(dim=1) if second == "channel" else mask.any(dim=(2, 3))
            assert int((~units).sum()) == n_pruned(0.5, units.numel()), name


def test_repruning_at_same_sparsity_changes_nothing():
    model = make("mlp")
    pk.prune(model, 0.6)
    before = state(model)
    pk.prune(model, 0.6)
    assert_same_state(model, before)


# --------------------------------------------------------------------------------------
# Re-parametrisation and training
# --------------------------------------------------------------------------------------


def test_reparametrisation_and_optimizer_built_before_pruning_keeps_training():
    model = make("mlp")
    weights = {n: m.weight for n, m in layers(model)}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # built BEFORE pruning
    pk.prune(model, 0.5)
    for name, m in layers(model):
        assert isinstance(m.weight_orig, nn.Parameter)
        assert m.weight_orig is weights[name], "weight_orig must be the original Parameter object"
        assert "weight" not in dict(m.named_parameters())
        assert "weight_mask" in dict(m.named_buffers())
        assert not isinstance(m.weight, nn.Parameter)
        # module.weight already shows the zeros, exactly where the mask is 0
        assert torch.equal(m.weight.detach() == 0, m.weight_mask == 0)
        assert torch.equal(m.weight.detach(), m.weight_orig.detach() * m.weight_mask)
    masks = masks_of(model)
    start = {n: m.weight.detach().clone() for n, m in layers(model)}

    x = x_for(model, 16)
    target = torch.randn(16, 5, generator=torch.Generator().manual_seed(3))
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        losses.append(loss.item())
        opt.step()
        for name, m in layers(model):
            assert not m.weight_orig.grad[~masks[name]].any(), "pruned entries get zero gradient"
    with torch.no_grad():
        final = nn.functional.mse_loss(model(x), target).item()
    assert final < losses[0]
    for name, m in layers(model):
        w = m.weight.detach()
        assert not w[~masks[name]].any(), f"{name}: pruned entries must stay exactly zero"
        changed = (w != start[name])[masks[name]]
        assert changed.float().mean() > 0.5, f"{name}: unpruned entries should train"
        assert torch.equal(pk.effective_tensor(m), m.weight_orig.detach() * m.weight_mask)
    assert masks_of(model).keys() == masks.keys()
    for name in masks:
        assert torch.equal(masks_of(model)[name], masks[name]), "training must not change masks"


def test_effective_tensor_is_current_after_an_optimizer_step():
    model = make("mlp")
    pk.prune(model, 0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(x_for(model)).sum().backward()
    opt.step()
    for _, m in layers(model):
        assert torch.equal(pk.effective_tensor(m), m.weight_orig.detach() * m.weight_mask)
        assert pk.effective_tensor(m).grad_fn is None


# --------------------------------------------------------------------------------------
# remove
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["l1", "channel"])
def test_remove_makes_pruning_permanent(method):
    model = make("cnn")
    pk.prune(model, 0.5, method=method)
    _train_steps(model, 2)
    model.eval()
    x = x_for(model)
    with torch.no_grad():
        expected = model(x)
    s = pk.sparsity(model)
    assert pk.remove(model) is model
    assert not torch_prune.is_pruned(model)
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())
    for _, m in layers(model):
        assert isinstance(m.weight, nn.Parameter)
        assert "weight" in dict(m.named_parameters())
        assert not m._forward_pre_hooks
    with torch.no_grad():
        assert torch.equal(model(x), expected)
    assert pk.sparsity(model) == s
    # a plain model again: loads into a fresh model without the helper
    fresh = cnn()
    fresh.load_state_dict(model.state_dict())


# --------------------------------------------------------------------------------------
# Serialization: deepcopy, pickle, torch.save, state_dict
# --------------------------------------------------------------------------------------


def test_torch_prune_model_cannot_be_deepcopied():
    """Documents why prunekit needs its own handling (pytorch/pytorch#37322).

    torch stores ``module.weight = weight_orig * weight_mask`` as a non-leaf tensor, which
    ``copy.deepcopy`` refuses. If this test starts failing, torch has fixed the issue and
    prunekit's ``PrunedTensor`` workaround may be reconsidered.
    """
    lin = nn.Linear(4, 3)
    torch_prune.l1_unstructured(lin, "weight", 0.5)
    lin(torch.randn(2, 4)).sum().backward()
    with pytest.raises(RuntimeError, match="deepcopy"):
        copy.deepcopy(lin)


def _train_copy_independent(original: nn.Module, clone: nn.Module):
    before = state(original)
    _train_steps(clone, 2, lr=0.5, seed=7)
    assert_same_state(original, before)
    changed = any(not torch.equal(v, clone.state_dict()[k]) for k, v in before.items())
    assert changed, "training the copy should change the copy"
    for _, m in layers(clone):
        assert not pk.effective_tensor(m)[m.weight_mask == 0].any()


@pytest.mark.parametrize("when", ["after_prune", "after_training_step"])
def test_deepcopy_of_pruned_model(when):
    model = make("cnn")
    pk.prune(model, 0.5)
    if when == "after_training_step":
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model(x_for(model)).sum().backward()  # module.weight is now on the autograd graph
        opt.step()
    clone = copy.deepcopy(model)
    x = x_for(model)
    with torch.no_grad():
        assert torch.equal(clone(x), model(x))
    for (_, a), (_, b) in zip(layers(model), layers(clone)):
        assert a.weight_orig is not b.weight_orig
        assert torch.equal(a.weight_mask, b.weight_mask)
    assert has_pruning(clone) and all(pk.reparam.computed_on_access(m) for m in clone.modules() if hasattr(m, "weight_mask"))
    _train_copy_independent(model, clone)


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_whole_model_roundtrip(how):
    model = make("cnn")
    pk.prune(model, 0.6, scope="global")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x_for(model)).sum().backward()
    opt.step()
    if how == "pickle":
        loaded = pickle.loads(pickle.dumps(model))
    else:
        buf = io.BytesIO()
        torch.save(model, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=False)
    x = x_for(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert masks_of(loaded).keys() == masks_of(model).keys()
    for name, mask in masks_of(model).items():
        assert torch.equal(masks_of(loaded)[name], mask)
    # the mask is still in force in the loaded model
    _train_copy_independent(model, loaded)


def test_state_dict_roundtrip_with_weights_only_load():
    model = make("cnn")
    pk.prune(model, 0.7, scope="global")
    _train_steps(model, 2)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)

    # A fresh model has "0.weight" where the pruned one saved "0.weight_orig" and
    # "0.weight_mask": torch's own load_state_dict refuses it. That is why
    # pk.load_state_dict exists.
    plain = cnn()
    with pytest.raises(RuntimeError, match="weight_orig|Missing key"):
        plain.load_state_dict(sd)

    fresh = cnn()
    pk.load_state_dict(fresh, sd)
    assert has_pruning(fresh) and all(pk.reparam.computed_on_access(m) for m in fresh.modules() if hasattr(m, "weight_mask"))
    x = x_for(model)
    model.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    for name, mask in masks_of(model).items():
        assert torch.equal(masks_of(fresh)[name], mask)
    assert pk.sparsity(fresh) == pk.sparsity(model)
    # pruning stays in force when the loaded model trains
    _train_steps(fresh, 2, lr=0.5)
    for name, m in layers(fresh):
        assert not pk.effective_tensor(m)[~masks_of(model)[name]].any()


def test_load_state_dict_into_already_pruned_model_overwrites_masks():
    source = make("mlp", seed=1)
    pk.prune(source, 0.5)
    target = make("mlp", seed=2)
    pk.prune(target, 0.2, scope="global")
    pk.load_state_dict(target, source.state_dict())
    for name, mask in masks_of(source).items():
        assert torch.equal(masks_of(target)[name], mask)
    x = x_for(source)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))


@pytest.mark.parametrize("other", ["wider_last_layer", "extra_layer"])
def test_failing_load_state_dict_leaves_model_unchanged(other):
    source = mlp() if other == "wider_last_layer" else nn.Sequential(*mlp(), nn.ReLU(), nn.Linear(5, 5))
    if other == "wider_last_layer":
        source[4] = nn.Linear(12, 7)
    pk.prune(source, 0.5)
    fresh = mlp()
    before = state(fresh)
    with pytest.raises(RuntimeError):
        pk.load_state_dict(fresh, source.state_dict())
    assert_same_state(fresh, before)  # same keys in the same order, same values
    assert not has_pruning(fresh)
    for _, m in layers(fresh):
        assert not m._forward_pre_hooks and not m._forward_hooks
        assert isinstance(m.weight, nn.Parameter)


# --------------------------------------------------------------------------------------
# Channel pruning of models
# --------------------------------------------------------------------------------------


class ConvBNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc1 = nn.Linear(6 * 6 * 6, 10)
        self.bn3 = nn.BatchNorm1d(10)
        self.fc2 = nn.Linear(10, 4)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.fc1(x.flatten(1))))
        return self.fc2(x)


def _randomise_bn_(model: nn.Module, seed: int = 0):
    """Non-trivial BN parameters and running statistics, so a zero output means masking."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("s", [0.25, 0.5, 0.9])
@pytest.mark.parametrize("p", [1, 2])
def test_channel_pruning_masks_filter_bias_and_following_batchnorm(s, p):
    torch.manual_seed(0)
    model = ConvBNNet()
    _randomise_bn_(model)
    pairs = {"conv1": "bn1", "conv2": "bn2", "fc1": "bn3"}
    pk.prune(model, s, method="channel", p=p)
    mods = dict(model.named_modules())
    keeps = {}
    for name in ("conv1", "conv2", "fc1", "fc2"):
        m = mods[name]
        wm = m.weight_mask.bool()
        rows = wm.reshape(wm.shape[0], -1)
        assert torch.equal(rows.all(dim=1), rows.any(dim=1)), f"{name}: whole filters"
        keep = rows.all(dim=1)
        out = m.weight_orig.shape[0]
        assert int((~keep).sum()) == n_pruned(s, out), name
        norms = torch.linalg.vector_norm(m.weight_orig.detach().reshape(out, -1), ord=p, dim=1)
        if (~keep).any():
            assert norms[~keep].max() <= norms[keep].min() if keep.any() else True
        assert torch.equal(m.bias_mask.bool(), keep), f"{name}: bias masked"
        assert not m.bias[~keep].any()
        keeps[name] = keep
    for conv, bn in pairs.items():
        b = mods[bn]
        assert torch.equal(b.weight_mask.bool(), keeps[conv]) and torch.equal(b.bias_mask.bool(), keeps[conv])

    # eval mode: the pruned channels' outputs after their BatchNorm are exactly zero
    model.eval()
    outputs = {}
    hooks = [mods[bn].register_forward_hook(lambda mod, i, o, bn=bn: outputs.__setitem__(bn, o))
             for bn in pairs.values()]
    with torch.no_grad():
        model(torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1)))
    for h in hooks:
        h.remove()
    for conv, bn in pairs.items():
        o, keep = outputs[bn], keeps[conv]
        assert torch.equal(o[:, ~keep], torch.zeros_like(o[:, ~keep])), bn
        if keep.any():
            assert o[:, keep].abs().sum() > 0


def test_channel_pruning_sequential_conv_bn_relu_and_linear_bn():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6),
    )
    _randomise_bn_(model)
    pk.prune(model, 0.5, method="channel")
    model.eval()
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        h = x
        for i, layer in enumerate(model):
            h = layer(h)
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                keep = model[i - 1].weight_mask.reshape(layer.num_features, -1).all(dim=1).bool()
                assert int((~keep).sum()) == layer.num_features // 2
                assert torch.equal(layer.weight_mask.bool(), keep)
                assert not h[:, ~keep].any()
                assert h[:, keep].abs().sum() > 0


def test_channel_pruning_does_not_pair_batchnorm_that_is_not_directly_after():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    pk.prune(model, 0.5, method="channel")
    bn = model[2]
    assert not hasattr(bn, "weight_mask") and not hasattr(bn, "bias_mask")
    assert isinstance(bn.weight, nn.Parameter) and isinstance(bn.bias, nn.Parameter)
    assert hasattr(model[0], "bias_mask")


def test_channel_pruning_does_not_pair_batchnorm_whose_input_is_shared():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # conv output used twice: masking the BN is not enough

    model = Branch()
    pk.prune(model, 0.5, method="channel")
    assert not hasattr(model.bn, "weight_mask")


def test_channel_pruning_untraceable_model_falls_back_with_warning():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
                x = -x
            return self.bn(self.conv(x))

    model = Dynamic()
    with pytest.warns(UserWarning, match="torch.fx"):
        pk.prune(model, 0.5, method="channel")
    keep = model.conv.weight_mask.flatten(1).all(dim=1).bool()
    assert torch.equal(model.bn.weight_mask.bool(), keep)


def test_kernel_pruning_of_model_prunes_only_conv2d_whole_kernels():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 5, 3), nn.ReLU(), nn.Flatten(2, 3),
        nn.Conv1d(5, 4, 3), nn.Flatten(), nn.Linear(4 * 14, 3),
    )
    tie_free_(model)
    pk.prune(model, 0.4, method="kernel")
    for name, m in layers(model):
        if not isinstance(m, nn.Conv2d):
            assert not hasattr(m, "weight_mask"), name
            continue
        assert not hasattr(m, "bias_mask"), "kernel pruning leaves biases alone"
        wm = m.weight_mask.bool()
        per_kernel = wm.all(dim=(2, 3))
        assert torch.equal(per_kernel, wm.any(dim=(2, 3))), name
        n = m.out_channels * m.in_channels
        assert int((~per_kernel).sum()) == n_pruned(0.4, n)
        expected = pk.kernel_mask(m.weight_orig.detach(), 0.4)
        assert torch.equal(wm, expected)
    with torch.no_grad():
        model(torch.randn(2, 3, 8, 8))


# --------------------------------------------------------------------------------------
# exclude and per-layer plans
# --------------------------------------------------------------------------------------


def test_exclude_by_name_and_by_module():
    model = make("mlp")
    pk.prune(model, 0.5, exclude=["4"])
    assert not hasattr(model[4], "weight_mask")
    assert hasattr(model[0], "weight_mask") and hasattr(model[2], "weight_mask")

    model = make("mlp")
    pk.prune(model, 0.5, exclude=(model[0], "2"))
    assert not hasattr(model[0], "weight_mask") and not hasattr(model[2], "weight_mask")
    assert int((model[4].weight_mask == 0).sum()) == n_pruned(0.5, 60)

    model = make("mlp")
    pk.prune(model, 0.5, exclude=model[2], scope="global")  # a single module is fine too
    assert not hasattr(model[2], "weight_mask")
    total = model[0].weight.numel() + model[4].weight.numel()
    assert sum(int((m.weight_mask == 0).sum()) for m in (model[0], model[4])) == n_pruned(0.5, total)


def test_sparsity_mapping_prunes_only_named_layers_to_their_own_sparsity():
    model = make("cnn")
    plan = {"0": 0.25, "5": 0.9}
    pk.prune(model, plan)
    mods = dict(model.named_modules())
    assert not hasattr(mods["2"], "weight_mask")
    for name, s in plan.items():
        mask = mods[name].weight_mask
        assert int((mask == 0).sum()) == n_pruned(s, mask.numel())
    assert set(masks_of(model)) == set(plan)


def test_prunable_layers_lists_what_prune_would_prune():
    model = make("cnn")
    assert [n for n, _ in pk.prunable_layers(model)] == ["0", "2", "5"]
    assert [n for n, _ in pk.prunable_layers(model, "kernel")] == ["0", "2"]
    assert [n for n, _ in pk.prunable_layers(model, exclude=["5"])] == ["0", "2"]


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def test_sparsity_and_report_match_hand_count():
    model = make("cnn")
    pk.prune(model, 0.4, exclude=["5"])
    rep = pk.sparsity_report(model)
    zeros = params = 0
    rows = {r.layer: r for r in rep.rows}
    assert list(rows) == ["0", "2", "5"]
    for name, m in layers(model):
        w = m.weight_orig * m.weight_mask if hasattr(m, "weight_mask") else m.weight
        z, n = int((w == 0).sum()), w.numel()
        zeros, params = zeros + z, params + n
        assert rows[name].zeros == z and rows[name].params == n, name
        assert rows[name].masked == hasattr(m, "weight_mask")
        assert rows[name].sparsity == pytest.approx(z / n)
        assert rows[name].kind == type(m).__name__
        assert rows[name].shape == tuple(w.shape)
    assert rep.total.zeros == zeros and rep.total.params == params
    assert pk.sparsity(model) == rep.total.sparsity == pytest.approx(zeros / params)
    text = str(rep)
    for name in rows:
        assert name in text
    assert "total" in text and f"{params:,}" in text and f"{zeros:,}" in text
    assert [d["layer"] for d in rep.as_dicts()] == ["0", "2", "5", "total"]


def test_sparsity_counts_current_values_and_tensors():
    model = make("mlp")
    assert pk.sparsity(model) == 0.0
    pk.prune(model, 0.5, scope="global")
    assert pk.sparsity(model) == pytest.approx(0.5, abs=1e-3)
    pk.prune(model, 1.0)
    assert pk.sparsity(model) == 1.0
    assert pk.sparsity(torch.tensor([0.0, 1.0, 0.0, 2.0])) == 0.5
    w = torch.tensor([[0.0, 3.0], [0.0, 0.0]])
    before = w.clone()
    assert pk.sparsity(w) == 0.75 and torch.equal(w, before)


def test_sparsity_report_reads_current_weights_after_training():
    model = make("mlp")
    pk.prune(model, 0.3)
    _train_steps(model, 2)
    rep = pk.sparsity_report(model)
    for r, (_, m) in zip(rep.rows, layers(model)):
        assert r.zeros == int((m.weight_orig * m.weight_mask == 0).sum())


# --------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["l1", "l2", "channel", "kernel"])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_float64_model(method, scope):
    model32 = make("cnn")
    model64 = copy.deepcopy(model32).double()
    pk.prune(model32, 0.5, method=method, scope=scope)
    pk.prune(model64, 0.5, method=method, scope=scope)
    for name, mask in masks_of(model64).items():
        assert dict(layers(model64))[name].weight_orig.dtype == torch.float64
        assert torch.equal(mask, masks_of(model32)[name]), name
    x = x_for(model64)
    assert x.dtype == torch.float64
    with torch.no_grad():
        out = model64(x)
    assert out.dtype == torch.float64 and torch.isfinite(out).all()
    _train_steps(model64, 1)
    copy.deepcopy(model64)

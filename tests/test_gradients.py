"""Gradient-based pruning: statistics over mini-batches and the "gradient"/"taylor"/"fisher" methods."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunekit as pk
from prunekit.gradients import GRADIENT_SCORES, GRADIENT_STATISTICS

LOSS = nn.CrossEntropyLoss()
LAYERS = ["0", "2", "5"]  # the Linear layers of mlp()


def mlp(seed: int = 0, *, bn: bool = False, dropout: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(10, 16),
        nn.BatchNorm1d(16) if bn else nn.Identity(),
        nn.Linear(16, 12),
        nn.ReLU(),
        nn.Dropout(0.3) if dropout else nn.Identity(),
        nn.Linear(12, 4),
    )


def batches(seed: int = 1, n: int = 6, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 10, generator=g), torch.randint(0, 4, (size,), generator=g))
            for _ in range(n)]


def train(model: nn.Module, data, *, epochs: int = 1, lr: float = 0.05) -> None:
    """A few SGD steps, so that weights and BatchNorm statistics are not at their init."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for x, y in data:
            opt.zero_grad()
            LOSS(model(x), y).backward()
            opt.step()


def hand_loop(model: nn.Module, data, *, mode: str = "eval") -> dict[str, dict[str, torch.Tensor]]:
    """The obvious loop: zero_grad, backward, accumulate, on a copy of the model.

    On a pruned model the copy is made dense with ``pk.remove`` first: its ``weight.grad``
    is then the gradient with respect to the effective weight ``weight_orig * weight_mask``.
    """
    m = pk.remove(copy.deepcopy(model))
    for p in m.parameters():
        p.requires_grad_(True)
    m.train(mode == "train")
    layers = {n: mod for n, mod in m.named_modules() if isinstance(mod, nn.Linear)}
    out = {s: {n: torch.zeros_like(mod.weight) for n, mod in layers.items()} for s in GRADIENT_STATISTICS}
    for x, y in data:
        m.zero_grad(set_to_none=True)
        LOSS(m(x), y).backward()
        for n, mod in layers.items():
            g = mod.weight.grad
            out["grad"][n] += g
            out["abs_grad"][n] += g.abs()
            out["sq_grad"][n] += g * g
    return out


def snapshot(model: nn.Module) -> dict:
    """Everything collect_gradient_stats promises to leave as it was."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "params": [(n, p, p.detach().clone()) for n, p in model.named_parameters()],
        "grads": [(n, None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()],
        "grad_objects": [id(p.grad) for p in model.parameters()],
        "requires": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()],
    }


def assert_same(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert before["state"].keys() == after["state"].keys()
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k]), k
    for (n, p, v), (_, p2, _) in zip(before["params"], after["params"]):
        assert p is p2 and torch.equal(p.detach(), v), n
    for (n, g), (_, g2) in zip(before["grads"], after["grads"]):
        assert (g is None) == (g2 is None), n
        if g is not None:
            assert torch.equal(g, g2), n
    assert before["grad_objects"] == after["grad_objects"]
    assert before["requires"] == after["requires"]
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]


def assert_unpruned(model: nn.Module, before: dict) -> None:
    assert_same(model, before)
    assert not any(k.endswith("_orig") or k.endswith("_mask") for k in model.state_dict())


def expected_scores(method: str, model: nn.Module, stats: pk.GradientStats) -> dict[str, torch.Tensor]:
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            w = pk.effective_tensor(module)
            if method == "gradient":
                out[name] = stats.abs_grad[name]
            elif method == "taylor":
                out[name] = (w * stats.grad[name]).abs()
            else:
                out[name] = w * w * stats.sq_grad[name]
    return out


# --------------------------------------------------------------------------------------
# gradient_mask: the tensor-level contract
# --------------------------------------------------------------------------------------


def test_gradient_mask_hand_built_scores():
    w = torch.tensor([1.0, -2.0, 3.0, 4.0, -0.5, 8.0])
    g = torch.tensor([0.5, 0.125, -0.125, 0.0625, 0.25, -0.03125])  # exact in binary
    # |g|   = .5  .125 .125 .0625 .25  .03125 -> prune 5, 3, then the tie at .125: index 1
    # |w*g| = .5  .25  .375 .25   .125 .25    -> prune 4, then the ties at .25: indices 1, 3
    T, F = True, False
    assert pk.gradient_mask(w, g, 0.5, criterion="gradient").tolist() == [T, F, T, F, T, F]
    assert pk.gradient_mask(w, g, 0.5, criterion="taylor").tolist() == [T, F, T, F, F, T]
    assert pk.gradient_mask(w, g, 0.5).tolist() == [T, F, T, F, F, T]  # the default is taylor
    assert pk.gradient_mask(w, g, 0.0).all() and not pk.gradient_mask(w, g, 1.0).any()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 60), sparsity=st.floats(0, 1))
def test_gradient_mask_ranks_exactly_by_its_score(seed, n, sparsity):
    gen = torch.Generator().manual_seed(seed)
    w, g = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    for criterion, score in (("gradient", g.abs()), ("taylor", (w * g).abs())):
        keep = pk.gradient_mask(w, g, sparsity, criterion=criterion)
        assert int((~keep).sum()) == round(sparsity * n)
        assert torch.equal(keep, pk.mask_from_scores(score, sparsity))
        if keep.any() and (~keep).any():
            assert score[~keep].max() <= score[keep].min()


def test_gradient_mask_bad_input():
    w = torch.randn(3, 4)
    with pytest.raises(ValueError, match="'criterion' parameter of gradient_mask.*'fisher'"):
        pk.gradient_mask(w, torch.randn(3, 4), 0.5, criterion="fisher")
    with pytest.raises(ValueError, match="'grad' parameter of gradient_mask must have the same shape"):
        pk.gradient_mask(w, torch.randn(4, 3), 0.5)


# --------------------------------------------------------------------------------------
# collect_gradient_stats
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_statistics_equal_a_hand_written_loop(mode):
    model, data = mlp(bn=True), batches()
    if mode == "eval":  # give BatchNorm non-trivial running statistics
        train(model, data, epochs=1, lr=0.05)
    stats = pk.collect_gradient_stats(model, data, LOSS, mode=mode)
    ref = hand_loop(model, data, mode=mode)
    assert stats.layers == LAYERS and stats.statistics == GRADIENT_STATISTICS
    assert stats.n_batches == len(data) and stats.mode == mode
    for s in GRADIENT_STATISTICS:
        for name in LAYERS:
            torch.testing.assert_close(stats[s][name], ref[s][name], rtol=1e-5, atol=1e-7)
            assert getattr(stats, s)[name] is stats[s][name]
    with torch.no_grad():
        model.train(mode == "train")
        mean = sum(float(LOSS(model(x), y)) for x, y in data) / len(data)
    assert stats.loss == pytest.approx(mean, rel=1e-5)


def test_train_and_eval_modes_differ_with_batchnorm():
    model, data = mlp(bn=True), batches()
    train(model, data, epochs=1, lr=0.05)
    a = pk.collect_gradient_stats(model, data, LOSS, statistics="grad")
    b = pk.collect_gradient_stats(model, data, LOSS, statistics="grad", mode="train")
    assert not torch.allclose(a.grad["0"], b.grad["0"])


def test_model_left_exactly_as_it_was():
    model, data = mlp(bn=True, dropout=True), batches()
    train(model, data, epochs=1, lr=0.05)  # BN buffers are non-trivial
    model.train()
    model[1].eval()  # mixed modes must survive, not be reset by model.train(flag)
    model[0].weight.grad = torch.full_like(model[0].weight, 7.0)
    model[0].bias.grad = None
    model[2].weight.grad = None
    model[5].weight.grad = torch.arange(48.0).reshape(4, 12)
    model[2].weight.requires_grad_(False)  # a frozen layer still gets statistics
    before = snapshot(model)
    for mode in ("eval", "train"):
        stats = pk.collect_gradient_stats(model, data, LOSS, mode=mode, progress=False)
        assert_same(model, before)
        assert all(bool(stats.sq_grad[n].any()) for n in LAYERS)
    assert model[1].num_batches_tracked.item() == before["state"]["1.num_batches_tracked"].item()


def test_max_batches_layers_statistics_and_loader_types():
    model, data = mlp(), batches(n=6)
    ref = hand_loop(model, data[:2])
    it = iter(data)
    stats = pk.collect_gradient_stats(model, it, LOSS, max_batches=2, layers=["2", model[5]],
                                      statistics=("sq_grad", "grad"))
    assert next(it) is data[2]  # no batch fetched beyond max_batches
    assert stats.n_batches == 2 and stats.layers == ["2", "5"] and stats.statistics == ("grad", "sq_grad")
    torch.testing.assert_close(stats.sq_grad["5"], ref["sq_grad"]["5"])
    with pytest.raises(KeyError, match="collected without 'abs_grad'"):
        stats.abs_grad
    # a DataLoader of lists, and (inputs, targets) pairs given as lists
    x = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    full = pk.collect_gradient_stats(model, loader, LOSS, progress=True, device="cpu")
    listed = pk.collect_gradient_stats(model, [[a, b] for a, b in data], LOSS)
    for s in GRADIENT_STATISTICS:
        torch.testing.assert_close(full[s]["0"], listed[s]["0"])
        torch.testing.assert_close(full[s]["0"], hand_loop(model, data)[s]["0"])


def test_unused_layer_gets_zero_statistics():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.used, self.unused = nn.Linear(10, 6), nn.Linear(6, 4), nn.Linear(6, 4)

        def forward(self, x):
            return self.used(torch.relu(self.body(x)))

    model = TwoHeads()
    for _ in range(2):  # dense, then pruned (the pre-hook path)
        stats = pk.collect_gradient_stats(model, batches(), LOSS)
        assert not stats.abs_grad["unused"].any() and stats.abs_grad["used"].any()
        pk.prune(model, 0.5)


def test_already_pruned_model():
    model, data = mlp(), batches()
    pk.prune(model, 0.5, method="l1")
    model(data[0][0])  # a forward with gradients before collecting
    before = snapshot(model)
    stats = pk.collect_gradient_stats(model, data, LOSS)
    assert_same(model, before)
    ref = hand_loop(model, data)  # gradients w.r.t. the effective weight orig * mask
    for s in GRADIENT_STATISTICS:
        for name in LAYERS:
            torch.testing.assert_close(stats[s][name], ref[s][name], rtol=1e-5, atol=1e-7)
    layer = model[0]
    masked = layer.weight_mask == 0
    assert stats.abs_grad["0"][masked].any()  # masked entries: the gradient if switched on
    assert torch.equal(stats.weight["0"], layer.weight_orig.detach() * layer.weight_mask)
    assert not stats.scores("taylor")["0"][masked].any()  # w = 0 there
    # the kept entries carry weight_orig's gradient
    orig = copy.deepcopy(model)
    orig.zero_grad()
    for x, y in data:
        LOSS(orig(x), y).backward()
    torch.testing.assert_close(stats.grad["0"] * layer.weight_mask, orig[0].weight_orig.grad)
    copy.deepcopy(model)  # still copyable


def test_torch_pruned_model_weight_attribute_is_restored():
    model, data = mlp(), batches()
    torch_prune.l1_unstructured(model[0], "weight", amount=0.3)
    attr = model[0].__dict__["weight"]
    before = snapshot(model)
    pk.collect_gradient_stats(model, data, LOSS)
    assert_same(model, before)
    assert model[0].__dict__["weight"] is attr  # not replaced by a tensor from our graph


def test_gradient_stats_scores_and_to():
    model, data = mlp(), batches()
    stats = pk.collect_gradient_stats(model, data, LOSS)
    for method in GRADIENT_SCORES:
        got, want = stats.scores(method), expected_scores(method, model, stats)
        for name in LAYERS:
            torch.testing.assert_close(got[name], want[name])
    # the identities the chapter relies on: sum_b g_b*w = w*sum_b g_b, sum_b (g_b*w)^2 = w^2 sum_b g_b^2
    w = model[0].weight.detach()
    per_batch = []
    for x, y in data:
        model.zero_grad()
        LOSS(model(x), y).backward()
        per_batch.append(model[0].weight.grad.clone())
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(sum(g * w for g in per_batch).abs(), stats.scores("taylor")["0"])
    torch.testing.assert_close(sum((g * w) ** 2 for g in per_batch), stats.scores("fisher")["0"])
    moved = stats.to("cpu")
    assert moved is not stats and moved.layers == stats.layers and "GradientStats(" in repr(moved)
    with pytest.raises(ValueError, match="'criterion' parameter of GradientStats.scores"):
        stats.scores("magnitude")
    with pytest.raises(KeyError, match="not a gradient statistic"):
        stats["hessian"]


# --------------------------------------------------------------------------------------
# prune(method="gradient" | "taylor" | "fisher")
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    model, data = mlp(), batches(n=8)
    train(model, data, epochs=2, lr=0.05)
    model.zero_grad(set_to_none=True)
    return model, data, pk.collect_gradient_stats(model, data, LOSS)


@pytest.mark.parametrize("method", GRADIENT_SCORES)
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.77, 1.0])
def test_prune_layer_scope_exact_counts_lowest_scores(trained, method, sparsity):
    base, data, stats = trained
    model = copy.deepcopy(base)
    want = expected_scores(method, model, stats)
    pk.prune(model, sparsity, method=method, stats=stats)
    for name in LAYERS:
        keep = dict(model.named_modules())[name].weight_mask.bool()
        assert int((~keep).sum()) == round(sparsity * keep.numel())
        assert torch.equal(keep, pk.mask_from_scores(want[name], sparsity))


@pytest.mark.parametrize("method", GRADIENT_SCORES)
@pytest.mark.parametrize("sparsity", [0.25, 0.6, 0.9])
def test_prune_global_scope_matches_torch_global_unstructured(trained, method, sparsity):
    base, data, stats = trained
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    want = expected_scores(method, base, stats)
    pk.prune(ours, sparsity, method=method, scope="global", stats=stats)
    params = [(dict(theirs.named_modules())[n], "weight") for n in LAYERS]
    torch_prune.global_unstructured(
        params, pruning_method=torch_prune.L1Unstructured, amount=sparsity,
        importance_scores={(dict(theirs.named_modules())[n], "weight"): want[n] for n in LAYERS},
    )
    total = sum(want[n].numel() for n in LAYERS)
    pruned = 0
    for name in LAYERS:
        a = dict(ours.named_modules())[name].weight_mask
        b = dict(theirs.named_modules())[name].weight_mask
        assert torch.equal(a, b), name
        pruned += int((a == 0).sum())
    assert pruned == round(sparsity * total)


@pytest.mark.parametrize("method", GRADIENT_SCORES)
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_collecting_in_prune_equals_precomputed_stats(trained, method, scope):
    base, data, stats = trained
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    pk.prune(a, 0.6, method=method, scope=scope, stats=stats)
    before = snapshot(b)
    pk.prune(b, 0.6, method=method, scope=scope, loader=data, loss_fn=LOSS)
    assert before["grads"] == [(n, None) for n, _ in before["grads"]]
    assert all(p.grad is None for p in b.parameters())
    for name in LAYERS:
        ma, mb = (dict(m.named_modules())[name].weight_mask for m in (a, b))
        assert torch.equal(ma, mb)


def test_mapping_of_gradients_equals_gradient_mask(trained):
    base, data, stats = trained
    for method in ("gradient", "taylor"):
        model = copy.deepcopy(base)
        pk.prune(model, 0.5, method=method, stats={n: stats.grad[n] for n in LAYERS})
        for name in LAYERS:
            layer = dict(model.named_modules())[name]
            want = pk.gradient_mask(layer.weight_orig.detach(), stats.grad[name], 0.5, criterion=method)
            assert torch.equal(layer.weight_mask.bool(), want)
    fisher = copy.deepcopy(base)
    pk.prune(fisher, 0.5, method="fisher", stats={n: stats.sq_grad[n] for n in LAYERS})
    ref = copy.deepcopy(base)
    pk.prune(ref, 0.5, method="fisher", stats=stats)
    assert all(torch.equal(fisher.state_dict()[k], v) for k, v in ref.state_dict().items())


def test_pruning_again_is_nested_and_stale_stats_warn(trained):
    base, data, stats = trained
    model = copy.deepcopy(base)
    pk.prune(model, 0.4, method="taylor", stats=stats)
    first = model[0].weight_mask.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # masking since collection is not staleness
        pk.prune(model, 0.7, method="taylor", stats=stats)
    assert bool((model[0].weight_mask <= first).all())
    assert int((model[0].weight_mask == 0).sum()) == round(0.7 * model[0].weight_mask.numel())
    train(model, data, epochs=1, lr=0.05)
    with pytest.warns(UserWarning, match="changed since these gradient statistics were collected"):
        pk.prune(model, 0.8, method="taylor", stats=stats)


def test_prune_with_exclude_and_per_layer_plan(trained):
    base, data, stats = trained
    model = copy.deepcopy(base)
    pk.prune(model, {"2": 0.5}, method="fisher", loader=data, loss_fn=LOSS, max_batches=3)
    assert hasattr(model[2], "weight_mask") and not hasattr(model[0], "weight_mask")
    model = copy.deepcopy(base)
    partial = pk.collect_gradient_stats(model, data, LOSS, layers=["0", "2"])
    pk.prune(model, 0.5, method="taylor", stats=partial, exclude=["5"])
    assert not hasattr(model[5], "weight_mask")


# --------------------------------------------------------------------------------------
# Bad input: a clear error naming the argument, and the model untouched
# --------------------------------------------------------------------------------------


class _Bad:  # a readable id for each case
    def __init__(self, label, exc, match, call):
        self.label, self.exc, self.match, self.call = label, exc, match, call

    def __repr__(self):
        return self.label


def _empty():
    yield from ()


BAD_PRUNE = [
    _Bad("no stats, no loader", ValueError,
         r"needs gradient information.*'loader' and 'loss_fn' are missing.*collect_gradient_stats", lambda m, d, s: pk.prune(m, 0.5, method="taylor")),
    _Bad("loader without loss_fn", ValueError, "'loss_fn' is missing",
         lambda m, d, s: pk.prune(m, 0.5, method="taylor", loader=d)),
    _Bad("non-callable loss_fn", TypeError, "'loss_fn' parameter of prune must be a callable",
         lambda m, d, s: pk.prune(m, 0.5, method="gradient", loader=d, loss_fn="cross_entropy")),
    _Bad("empty loader", ValueError, "'loader' parameter of prune must yield at least one",
         lambda m, d, s: pk.prune(m, 0.5, method="taylor", loader=[], loss_fn=LOSS)),
    _Bad("empty generator", ValueError,
         "'loader' parameter of collect_gradient_stats must yield at least one",
         lambda m, d, s: pk.collect_gradient_stats(m, _empty(), LOSS)),
    _Bad("loader is a tensor", TypeError, "'loader' parameter of prune must be an iterable",
         lambda m, d, s: pk.prune(m, 0.5, method="taylor", loader=d[0][0], loss_fn=LOSS)),
    _Bad("batch not a pair", TypeError, r"not an \(inputs, targets\) pair.*\[\(inputs, targets\)\]",
         lambda m, d, s: pk.prune(m, 0.5, method="taylor", loader=d[0], loss_fn=LOSS)),
    _Bad("loss not scalar", TypeError, "'loss_fn' parameter of prune must return a scalar",
         lambda m, d, s: pk.prune(m, 0.5, method="taylor", loader=d,
                                  loss_fn=nn.CrossEntropyLoss(reduction="none"))),
    _Bad("loss without gradient", ValueError, "does not depend on the model's weights",
         lambda m, d, s: pk.prune(m, 0.5, method="taylor", loader=d,
                                  loss_fn=lambda out, y: LOSS(out.detach(), y))),
    _Bad("loss_fn raises midway", RuntimeError, "boom",
         lambda m, d, s: pk.prune(m, 0.5, method="taylor", loader=d, loss_fn=_explode_at(3))),
    _Bad("nan loss", ValueError, "non-finite loss or gradients",
         lambda m, d, s: pk.prune(m, 0.5, method="taylor", loader=d,
                                  loss_fn=lambda out, y: LOSS(out, y) * float("nan"))),
    _Bad("stats missing a layer", ValueError, "no entry for layer '5'",
         lambda m, d, s: pk.prune(m, 0.5, method="taylor", stats={n: s.grad[n] for n in ("0", "2")})),
    _Bad("stats mis-shaped", ValueError, r"shape \(16, 12\) for layer '2'.*weight has shape \(12, 16\)",
         lambda m, d, s: pk.prune(m, 0.5, method="taylor",
                                  stats={**s.grad, "2": s.grad["2"].T.contiguous()})),
    _Bad("stats not finite", ValueError, "only finite values.*layer '0'",
         lambda m, d, s: pk.prune(m, 0.5, method="taylor",
                                  stats={**s.grad, "0": s.grad["0"] / 0.0})),
    _Bad("stats wrong type", TypeError, "'stats' parameter of prune must be a prunekit.GradientStats",
         lambda m, d, s: pk.prune(m, 0.5, method="taylor", stats=[1, 2])),
    _Bad("stats lack the statistic", ValueError, "must hold the 'sq_grad' statistic",
         lambda m, d, s: pk.prune(m, 0.5, method="fisher",
                                  stats=pk.collect_gradient_stats(m, d, LOSS, statistics="grad"))),
    _Bad("fisher with raw gradients", ValueError, "non-negative",
         lambda m, d, s: pk.prune(m, 0.5, method="fisher", stats=s.grad)),
    _Bad("stats and loader", ValueError, "only apply when prune collects",
         lambda m, d, s: pk.prune(m, 0.5, method="taylor", stats=s, loader=d, loss_fn=LOSS)),
    _Bad("unknown option", TypeError, "unexpected keyword argument.*'batches'",
         lambda m, d, s: pk.prune(m, 0.5, method="taylor", stats=s, batches=3)),
    _Bad("bad mode", ValueError, "'mode' parameter of prune must be one of",
         lambda m, d, s: pk.prune(m, 0.5, method="taylor", loader=d, loss_fn=LOSS, mode="test")),
    _Bad("bad max_batches", ValueError, "'max_batches' parameter of prune must be an integer >= 1",
         lambda m, d, s: pk.prune(m, 0.5, method="taylor", loader=d, loss_fn=LOSS, max_batches=0)),
    _Bad("unknown statistic", ValueError,
         "'statistics' parameter of collect_gradient_stats must be one of",
         lambda m, d, s: pk.collect_gradient_stats(m, d, LOSS, statistics=("grad", "hessian"))),
    _Bad("unknown layer", ValueError, "'layers' parameter of collect_gradient_stats names 'fc9'",
         lambda m, d, s: pk.collect_gradient_stats(m, d, LOSS, layers=["fc9"])),
    _Bad("bad progress", TypeError, "'progress' parameter",
         lambda m, d, s: pk.collect_gradient_stats(m, d, LOSS, progress="yes")),
    _Bad("bad device", TypeError, "'device' parameter",
         lambda m, d, s: pk.collect_gradient_stats(m, d, LOSS, device="gpu:x")),
    _Bad("not a model", TypeError, "'model' parameter of collect_gradient_stats",
         lambda m, d, s: pk.collect_gradient_stats(m.state_dict(), d, LOSS)),
]


def _explode_at(k: int):
    calls = {"n": 0}

    def loss_fn(out, y):
        calls["n"] += 1
        if calls["n"] == k:
            raise RuntimeError("boom")
        return LOSS(out, y)

    return loss_fn


@pytest.mark.parametrize("case", BAD_PRUNE, ids=repr)
def test_bad_input_clear_error_model_untouched(trained, case):
    base, data, stats = trained
    model = copy.deepcopy(base)
    model[2].weight.grad = torch.ones_like(model[2].weight)
    before = snapshot(model)
    with pytest.raises(case.exc, match=case.match):
        case.call(model, data, stats)
    assert_unpruned(model, before)


def test_bad_input_on_a_pruned_model_leaves_masks_alone(trained):
    base, data, stats = trained
    model = copy.deepcopy(base)
    pk.prune(model, 0.5, method="taylor", stats=stats)
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        pk.prune(model, 0.8, method="taylor", loader=data, loss_fn=_explode_at(2), mode="train")
    assert_same(model, before)


# --------------------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA device; the CPU tests cover the same logic on CPU")
def test_cuda_model_stays_on_cuda_and_matches_cpu():
    cpu, data = mlp(bn=True), batches()
    gpu = copy.deepcopy(cpu).cuda()
    gpu[0].weight.grad = torch.ones_like(gpu[0].weight)
    before = snapshot(gpu)
    a = pk.collect_gradient_stats(cpu, data, LOSS)
    b = pk.collect_gradient_stats(gpu, data, LOSS, mode="train")  # CPU batches are moved
    b_eval = pk.collect_gradient_stats(gpu, data, LOSS)
    assert_same(gpu, before)
    for s in GRADIENT_STATISTICS:
        for name in LAYERS:
            assert b[s][name].is_cuda and b_eval[s][name].is_cuda
            torch.testing.assert_close(b_eval[s][name].cpu(), a[s][name], rtol=1e-4, atol=1e-6)
    pk.prune(gpu, 0.5, method="taylor", scope="global", loader=data, loss_fn=LOSS)
    assert gpu[0].weight_mask.is_cuda and gpu[0].weight.is_cuda
    ref = copy.deepcopy(cpu)
    pk.prune(ref, 0.5, method="taylor", scope="global", stats=a)
    masks = [(dict(gpu.named_modules())[n].weight_mask.cpu(), dict(ref.named_modules())[n].weight_mask)
             for n in LAYERS]
    assert sum(int((g == 0).sum()) for g, _ in masks) == sum(int((r == 0).sum()) for _, r in masks)
    disagree = sum(int((g != r).sum()) for g, r in masks) / sum(r.numel() for _, r in masks)
    assert disagree <= 0.02  # CPU and CUDA round differently; only near-ties may flip


def test_layer_called_twice_gets_its_total_gradient():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.shared, self.out = nn.Linear(10, 8), nn.Linear(8, 8), nn.Linear(8, 4)

        def forward(self, x):
            h = torch.relu(self.inp(x))
            return self.out(torch.tanh(self.shared(torch.tanh(self.shared(h)))))

    torch.manual_seed(0)
    model, data = Twice(), batches()
    for pruned in (False, True):
        if pruned:
            pk.prune(model, 0.4)
        stats = pk.collect_gradient_stats(model, data, LOSS)
        dense = pk.remove(copy.deepcopy(model))
        total = torch.zeros_like(dense.shared.weight)
        for x, y in data:
            dense.zero_grad()
            LOSS(dense(x), y).backward()
            total += dense.shared.weight.grad
        torch.testing.assert_close(stats.grad["shared"], total)

"""One-shot pruning through ``pk.prune``: Wanda, SparseGPT, calibration batches and N:M patterns.

References: each layer is pruned by hand with the tensor-level functions of
``prunekit.oneshot`` (themselves checked against the papers' algorithms in test_oneshot.py),
feeding it the inputs the layer sees once the earlier layers are pruned.
"""

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import prunekit as pk
from prunekit.oneshot import InputStats, nm_mask, row_mask_from_scores, sparsegpt, wanda_scores


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 4))


def _correlated_batches(n_batches=4, rows=64, features=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(features, features, generator=g) * 0.3 + torch.eye(features)
    scale = torch.ones(features)
    scale[:3] = 8.0  # a few outlier features, Wanda's case
    return [(torch.randn(rows, features, generator=g) @ mix) * scale for _ in range(n_batches)]


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _by_hand(model, batches, method, sparsity=0.5, nm=None, sequential=True):
    """Prune each Linear in order with the tensor-level functions, from the inputs it sees."""
    model = copy.deepcopy(model)
    x_all = torch.cat(batches)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    dense = copy.deepcopy(model)
    for layer in linears:
        source = model if sequential else dense
        h = x_all
        for m in source:
            if m is layer or (not sequential and m is list(dense)[list(model).index(layer)]):
                break
            h = m(h)
        with torch.no_grad():
            if method == "wanda":
                scores = wanda_scores(layer.weight, h.square().sum(0).sqrt())
                keep = nm_mask(scores, *nm) if nm else row_mask_from_scores(scores, sparsity)
                layer.weight.mul_(keep)
            else:
                stats = InputStats(hessian=True)
                stats.update(h)
                kw = {"n": nm[0], "m": nm[1]} if nm else {"sparsity": sparsity}
                new, _ = sparsegpt(layer.weight, stats.hessian(), **kw)
                layer.weight.copy_(new)
    return model


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("nm", [None, (2, 4)])
@pytest.mark.parametrize("sequential", [True, False])
def test_prune_equals_pruning_each_layer_by_hand_in_order(method, nm, sequential):
    model, batches = _mlp(), _correlated_batches()
    expected = _by_hand(model, batches, method, nm=nm, sequential=sequential)
    got = copy.deepcopy(model)
    kw = {"pattern": f"{nm[0]}:{nm[1]}"} if nm else {}
    pk.prune(got, None if nm else 0.5, method=method, calibration=batches, sequential=sequential, **kw)
    for a, b in zip(got, expected):
        if isinstance(a, nn.Linear):
            torch.testing.assert_close(a.weight, b.weight, rtol=1e-4, atol=1e-5)
    assert pk.sparsity(got) == pytest.approx(0.5)


def test_sequential_statistics_differ_from_all_at_once():
    model, batches = _mlp(), _correlated_batches()
    seq = pk.prune(copy.deepcopy(model), 0.5, method="wanda", calibration=batches)
    once = pk.prune(copy.deepcopy(model), 0.5, method="wanda", calibration=batches, sequential=False)
    assert torch.equal(seq[0].weight_mask, once[0].weight_mask)  # the first layer sees the same inputs
    assert not torch.equal(seq[2].weight_mask, once[2].weight_mask)


def _reconstruction_error(dense, pruned, batches):
    with torch.no_grad():
        return sum(float((dense(x) - pruned(x)).square().sum()) for x in batches)


def test_sparsegpt_reconstructs_better_than_wanda_and_magnitude():
    model, batches = _mlp(), _correlated_batches()
    errors = {}
    for method in ["l1", "wanda", "sparsegpt"]:
        kw = {} if method == "l1" else {"calibration": batches}
        pruned = pk.prune(copy.deepcopy(model), 0.6, method=method, **kw)
        errors[method] = _reconstruction_error(model, pruned, batches)
    assert errors["sparsegpt"] < errors["wanda"] < errors["l1"], errors


def test_sparsegpt_stores_its_updated_weights_through_remove_and_state_dict():
    model, batches = _mlp(), _correlated_batches()
    before = model[0].weight.detach().clone()
    pk.prune(model, 0.5, method="sparsegpt", calibration=batches)
    kept = model[0].weight_mask.bool()
    assert not torch.allclose(model[0].weight_orig[kept], before[kept])  # the kept weights moved
    x = batches[0]
    y = model(x)
    fresh = _mlp(seed=1)
    pk.load_state_dict(fresh, model.state_dict())
    torch.testing.assert_close(fresh(x), y)
    pk.remove(model)
    torch.testing.assert_close(model(x), y)
    assert float((model[0].weight == 0).float().mean()) == pytest.approx(0.5)


def test_wanda_keeps_weights_only_masks():
    model, batches = _mlp(), _correlated_batches()
    before = _state(model)
    pk.prune(model, 0.5, method="wanda", calibration=batches)
    assert torch.equal(model[0].weight_orig, before["0.weight"])


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_pruning_again_nests_masks_and_never_revives(method):
    model, batches = _mlp(), _correlated_batches()
    pk.prune(model, 0.3, method=method, calibration=batches)
    first = [m.weight_mask.clone() for m in model if isinstance(m, nn.Linear)]
    pk.prune(model, 0.6, method=method, calibration=batches)
    for m, old in zip([m for m in model if isinstance(m, nn.Linear)], first):
        assert not bool((m.weight_mask.bool() & ~old.bool()).any())
        per_row = round(0.6 * m.in_features) / m.in_features  # Wanda: exact counts per row
        overall = round(0.6 * m.weight.numel()) / m.weight.numel()  # SparseGPT: per layer
        assert float(1 - m.weight_mask.mean()) >= min(per_row, overall) - 1e-6


def test_calibration_batch_forms_tensor_tuple_dataloader_and_mapping():
    model, batches = _mlp(), _correlated_batches()
    ref = pk.prune(copy.deepcopy(model), 0.5, method="wanda", calibration=batches)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.cat(batches), torch.zeros(256)), batch_size=64)

    class Keyword(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, inputs=None):
            return self.inner(inputs)

    for form in (loader, [(b, None) for b in batches], iter(batches)):
        got = pk.prune(copy.deepcopy(model), 0.5, method="wanda", calibration=form)
        assert torch.equal(got[2].weight_mask, ref[2].weight_mask)
    wrapped = pk.prune(Keyword(copy.deepcopy(model)), 0.5, method="wanda",
                       calibration=[{"inputs": b} for b in batches])
    assert torch.equal(wrapped.inner[2].weight_mask, ref[2].weight_mask)


def _dead_input_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6))


def test_sparsegpt_with_dead_inputs_is_finite_and_prunes_them():
    model = _dead_input_model()
    batches = [torch.randn(32, 8) for _ in range(2)]
    for b in batches:
        b[:, 2] = 0  # a feature that is always zero: H is singular without dampening
    pk.prune(model, 0.5, method="sparsegpt", calibration=batches)
    assert torch.isfinite(model[0].weight).all()
    assert not bool(model[0].weight_mask[:, 2].any())


# -- every layer type -------------------------------------------------------------------


class _Attn(nn.Module):
    def __init__(self, kdim=None):
        super().__init__()
        self.norm = nn.LayerNorm(16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True, kdim=kdim, vdim=kdim)
        self.mem = None if kdim is None else nn.Linear(16, kdim)
        self.head = nn.Linear(16, 8)

    def forward(self, x):
        h = self.norm(x)
        if self.mem is None:
            a, _ = self.attn(h, h, h)
        else:
            m = self.mem(x)
            a, _ = self.attn(h, m, m)
        return self.head(a + x)


def _conv_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                         nn.Flatten(), nn.Linear(8 * 3 * 3, 4))


def _gpt2():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=32)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _tokens(n=3, vocab=64, length=16):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab, (4, length), generator=g) for _ in range(n)]


MODELS = {
    "mlp": (_mlp, lambda: _correlated_batches(2)),
    "conv": (_conv_net, lambda: [torch.randn(4, 4, 8, 8) for _ in range(2)]),
    "mha": (lambda: _Attn(), lambda: [torch.randn(2, 5, 16) for _ in range(2)]),
    "mha-cross": (lambda: _Attn(kdim=12), lambda: [torch.randn(2, 5, 16) for _ in range(2)]),
    "encoder": (lambda: nn.TransformerEncoder(
        nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, dropout=0.0), 2, enable_nested_tensor=False),
        lambda: [torch.randn(2, 5, 16) for _ in range(2)]),
    "gpt2": (_gpt2, _tokens),
}


def _groups_ok(t, keep, n, m):
    rows = keep.movedim(t.layout.out_dim, 0)
    groups = rows.movedim(1, -1).reshape(-1, m)
    return bool((groups.sum(-1) <= n).all())


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", ["l1", "random", "wanda", "sparsegpt"])
def test_every_layer_type_gets_the_exact_nm_pattern(name, method):
    build, data = MODELS[name]
    model = build()
    kw = {"calibration": data()} if method in ("wanda", "sparsegpt") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GPT-2's tied lm_head is an embedding: dense by design
        pk.prune(model, method=method, pattern="2:4", **kw)
    pruned = [t for t in pk.targets.targets(model) if pk.reparam.is_masked(t.module, t.tensor)]
    assert pruned
    for t in pruned:
        keep = pk.reparam.current_keep(t.module, t.tensor).bool()
        assert _groups_ok(t, keep, 2, 4), t.name
        assert float(keep.float().mean()) == pytest.approx(0.5), t.name


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), extra=st.integers(1, 3), groups=st.integers(1, 4), out=st.integers(1, 5),
       seed=st.integers(0, 2**16), method=st.sampled_from(["l1", "random", "wanda", "sparsegpt"]))
def test_nm_pattern_property_on_linear(n, extra, groups, out, seed, method):
    m = n + extra
    torch.manual_seed(seed)
    layer = nn.Sequential(nn.Linear(m * groups, out))
    kw = {"calibration": [torch.randn(8, m * groups)]} if method in ("wanda", "sparsegpt") else {}
    pk.prune(layer, method=method, pattern=(n, m), **kw)
    keep = layer[0].weight_mask.bool().reshape(out, groups, m)
    assert bool((keep.sum(-1) == n).all())


@pytest.mark.parametrize("method", ["l1", "wanda"])
def test_conv_groups_run_along_input_channels_at_each_kernel_position(method):
    model = _conv_net()
    kw = {"calibration": [torch.randn(4, 4, 8, 8)]} if method == "wanda" else {}
    pk.prune(model, method=method, pattern="2:4", exclude=[model[4]], **kw)
    keep = model[0].weight_mask.bool()  # (8, 4, 3, 3): groups of 4 input channels
    assert bool((keep.sum(1) == 2).all())


def test_lstm_weights_take_a_pattern_from_magnitude_but_calibration_leaves_them_dense_with_a_warning():
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(8, 8, batch_first=True)
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            return self.head(self.lstm(x)[0])

    model = LM()
    pk.prune(copy.deepcopy(model), pattern="2:4")  # l1: every tensor, including the LSTM's
    with pytest.warns(UserWarning, match=r"leaves 2 weight tensor\(s\) dense.*lstm.weight_ih_l0.*RNN"):
        pk.prune(model, 0.5, method="wanda", calibration=[torch.randn(2, 5, 8)])
    assert pk.reparam.is_masked(model.head)
    assert not pk.reparam.is_masked(model.lstm, "weight_ih_l0")


def test_mha_out_proj_statistics_are_the_attention_values_it_multiplies():
    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x)[0]

    torch.manual_seed(0)
    model = SelfAttention()
    mha = model.attn
    x = torch.randn(3, 5, 8)
    seen = {}

    def apply(cal):
        seen[cal.target.name.removeprefix("attn.")] = cal.parts[0][1].norms()

    targets = list(pk.targets.targets(model))
    pk.calibration.prune_calibrated(model, targets, [x], apply, hessian=False, sequential=False)
    # by hand: scaled dot-product attention of the Q, K, V projections, heads concatenated
    w, b = mha.in_proj_weight.detach(), mha.in_proj_bias.detach()
    q, k, v = (x @ w[i * 8:(i + 1) * 8].T + b[i * 8:(i + 1) * 8] for i in range(3))

    def heads(t):
        return t.view(3, 5, 2, 4).transpose(1, 2)

    values = F.scaled_dot_product_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(3, 5, 8)
    torch.testing.assert_close(seen["out_proj"], values.reshape(-1, 8).square().sum(0).sqrt(), rtol=1e-4,
                               atol=1e-5)
    torch.testing.assert_close(seen["in_proj_weight"], x.reshape(-1, 8).square().sum(0).sqrt())


def test_gpt2_reports_what_the_weights_say():
    model = _gpt2()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left dense silently: the tied lm_head is an embedding
        pk.prune(model, 0.5, method="sparsegpt", calibration=_tokens())
    report = pk.sparsity_report(model)
    conv1d = [r for r in report.rows if r.kind == "Conv1D"]
    assert len(conv1d) == 8 and all(r.sparsity == pytest.approx(0.5) for r in conv1d)
    for block in model.transformer.h:
        w = block.attn.c_attn.weight
        assert float((w == 0).float().mean()) == pytest.approx(0.5)
    with torch.no_grad():
        assert torch.isfinite(model(_tokens(1)[0]).logits).all()


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"method": "wanda"}, ValueError, r"'calibration' parameter of prune .* Got None"),
    ({"method": "wanda", "calibration": torch.randn(4, 16)}, TypeError, "'calibration'"),
    ({"method": "wanda", "calibration": []}, ValueError, "no batches"),
    ({"method": "wanda", "calibration": ["text"]}, TypeError, r"'calibration\[0\]'"),
    ({"method": "wanda", "calibration": [torch.randn(4, 5)]}, ValueError,
     r"'calibration' .* batch 0 .* RuntimeError"),
    ({"method": "wanda", "calibration": [torch.randn(4, 16)], "scope": "global"}, ValueError, "'scope'"),
    ({"method": "sparsegpt", "calibration": [torch.randn(4, 16)], "percdamp": -1}, ValueError, "'percdamp'"),
    ({"method": "wanda", "calibration": [torch.randn(4, 16)], "sequential": "yes"}, TypeError, "'sequential'"),
    ({"pattern": "4:4"}, ValueError, r"'pattern' .* 1 <= N < M. Got '4:4'"),
    ({"pattern": "2:3"}, ValueError, r"'pattern' .* '0' has 16 inputs"),
    ({"pattern": "two:four"}, ValueError, "'pattern'"),
    ({"pattern": 2.4}, TypeError, "'pattern'"),
    ({"pattern": "2:4", "sparsity": 0.7}, ValueError, r"'sparsity' .* 1 - N/M = 0.5"),
    ({"pattern": "2:4", "method": "kmeans"}, ValueError, "'pattern' .* not method='kmeans'"),
    ({"pattern": "2:4", "method": "channel"}, ValueError, "'pattern'"),
    ({"pattern": "2:4", "scope": "global"}, ValueError, "'scope'"),
    ({}, TypeError, "'sparsity' .* unless pattern"),
])
def test_bad_input_names_the_argument_and_leaves_the_model_untouched(kwargs, exc, match):
    model = _mlp()
    before = _state(model)
    kwargs = dict(kwargs)
    sparsity = kwargs.pop("sparsity", 0.5 if "pattern" not in kwargs and kwargs else None)
    with pytest.raises(exc, match=match):
        pk.prune(model, sparsity, **kwargs)
    assert _same_state(before, _state(model))
    assert not any(pk.reparam.is_masked(m) for m in model if isinstance(m, nn.Linear))


def test_batches_that_never_reach_a_layer_are_refused_before_anything_changes():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x, use_b=False):
            return self.b(x) if use_b else self.a(x)

    model = TwoHeads()
    before = _state(model)
    with pytest.raises(ValueError, match=r"never reach \['b'\]"):
        pk.prune(model, 0.5, method="wanda", calibration=[torch.randn(2, 4)])
    assert _same_state(before, _state(model))


def test_early_stopping_runs_fewer_layer_calls_than_full_passes():
    model, batches = _mlp(), _correlated_batches(2)
    calls = {"n": 0}
    model[4].register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    pk.prune(model, 0.5, method="wanda", calibration=batches)
    # only the first pass (2 batches) runs the last layer: every stage's pass stops as soon
    # as its layers have read their inputs, before they (and what follows them) compute
    assert calls["n"] == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; the CPU tests cover the logic")
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_cuda_model_and_batches(method):
    model = _mlp().cuda()
    batches = [b.cuda() for b in _correlated_batches()]
    pk.prune(model, method=method, calibration=batches, pattern="2:4")
    assert model[0].weight_mask.is_cuda and math.isclose(pk.sparsity(model), 0.5)


# -- N:M storage ---------------------------------------------------------------------------


def test_nm_storage_of_2_4_at_16_bits_is_9_bits_per_weight():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    pk.prune(model, pattern="2:4")
    n_weights = 64 * 32 + 32 * 8
    assert pk.nm_storage_bits(model, "2:4", value_bits=16) == n_weights * 9  # 0.5625 of 16
    assert pk.measure.follows_pattern(model[0].weight, "2:4")
    assert not pk.measure.follows_pattern(model[0].weight_orig, "2:4")


def test_nm_storage_counts_a_tensor_off_the_pattern_dense_and_refuses_one_given_directly():
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 4))
    pk.prune(model, pattern="2:4", exclude=[model[1]])
    assert pk.nm_storage_bits(model, "2:4", value_bits=32) == 8 * 4 // 4 * 2 * (32 + 2) + 16 * 32
    with pytest.raises(ValueError, match="'weight_or_model' .* at most 2 non-zeros in every group of 4"):
        pk.nm_storage_bits(torch.ones(4, 8), "2:4")


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), extra=st.integers(1, 5), groups=st.integers(1, 4), out=st.integers(1, 4),
       bits=st.sampled_from([8, 16, 32]))
def test_nm_storage_formula(n, extra, groups, out, bits):
    m = n + extra
    w = nm_mask(torch.randn(out, m * groups), n, m).float()
    expected = out * groups * n * (bits + math.ceil(math.log2(m)))
    assert pk.nm_storage_bits(w, (n, m), value_bits=bits) == expected


def test_a_pattern_on_a_tensor_without_an_input_dimension_is_refused():
    model = _mlp()
    before = _state(model)
    with pytest.raises(ValueError, match=r"'pattern' .* '0.bias' is 1-D"):
        pk.prune(model, pattern="2:4", include=["0.bias"])
    assert _same_state(before, _state(model))

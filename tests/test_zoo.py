"""Real architectures nobody here wrote (tests/zoo.py): coverage, faithful masks, removal,
copies, count_macs against FlopCounterMode, export. Nothing is downloaded."""

import copy
import io
import pickle
import warnings

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from zoo import HF_MODELS, ZOO, build, call, embedding_weights, matmul_weights, output_tensor, rnn_macs

import prunekit as pk

NAMES = sorted(ZOO)


def needs(name):
    if name in HF_MODELS:
        pytest.importorskip("transformers", reason="the Hugging Face models need transformers")


def pruned_weights(model):
    """The matmul weights prunekit prunes by default: all but those tied to an embedding."""
    embedded = {id(w.param) for w in embedding_weights(model)}
    return [w for w in matmul_weights(model) if id(w.param) not in embedded
            and not any(isinstance(model.get_submodule(p), torch.nn.Embedding) for p, _ in w.users)]


def zero_fraction(model, weights):
    zeros = total = 0
    for w in weights:
        path, tensor = w.users[0]
        value = pk.effective_tensor(model.get_submodule(path), tensor)
        zeros += int((value == 0).sum())
        total += value.numel()
    return zeros / total


def out(model, x):
    return output_tensor(call(model, x))


@pytest.mark.parametrize("name", NAMES)
def test_zoo_coverage_and_truthful_report(name):
    needs(name)
    model, _ = build(name)
    pk.prune(model, 0.5)
    weights = pruned_weights(model)
    assert zero_fraction(model, weights) == pytest.approx(0.5, abs=0.01)
    assert pk.sparsity(model) == pytest.approx(zero_fraction(model, weights), abs=1e-9)
    reported = sum(r.params for r in pk.sparsity_report(model).rows)
    assert reported == sum(w.numel for w in weights)  # every weight once, nothing else


@pytest.mark.parametrize("name", NAMES)
def test_zoo_faithful_masks_remove_and_copies(name):
    needs(name)
    model, x = build(name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    pk.prune(model, 0.5)
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        out(model, x).float().square().mean().backward()
        optimizer.step()
    model.eval()
    assert zero_fraction(model, pruned_weights(model)) == pytest.approx(0.5, abs=0.01)
    expected = out(model, x)
    torch.testing.assert_close(out(pk.remove(copy.deepcopy(model)), x), expected)
    torch.testing.assert_close(out(pickle.loads(pickle.dumps(model)), x), expected)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh, _ = build(name, seed=1)
    pk.load_state_dict(fresh, torch.load(buffer, weights_only=True))
    torch.testing.assert_close(out(fresh.eval(), x), expected)


def reference_macs(model, x):
    """FlopCounterMode / 2 (math attention, autograd on: every product is an op), with the
    recurrent layers, which it counts partly (GRU) or not at all (LSTM), counted by hand."""
    model.eval()
    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        call(model, x)
    root = type(model).__name__
    rnns = {f"{root}.{n}" for n, m in model.named_modules() if isinstance(m, torch.nn.RNNBase)}
    inside = sum(sum(ops.values()) for key, ops in counter.get_flop_counts().items() if key in rnns)
    return (counter.get_total_flops() - inside) // 2 + rnn_macs(model, x)


@pytest.mark.parametrize("name", NAMES)
def test_zoo_count_macs_agrees_with_flop_counter_mode(name):
    needs(name)
    model, x = build(name)
    assert pk.count_macs(model, x) == pytest.approx(reference_macs(model, x), rel=0.02)


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama", "transformer_encoder", "lstm", "resnet"])
def test_zoo_pruned_model_exports(name):
    needs(name)
    model, x = build(name)
    pk.prune(model, 0.5)
    args = x if isinstance(x, tuple) else (x,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's notes about RNN weight caches
        program = torch.export.export(model, args)
    torch.testing.assert_close(out(program.module(), x), out(model, x))


@pytest.mark.parametrize("name, cause", [
    ("transformer_encoder", "MultiheadAttention"),
    ("lstm", "LSTM"),
    ("bert", "split into heads"),
])
def test_tp_prune_refuses_what_torch_pruning_cannot_prune_with_the_cause(name, cause):
    needs(name)
    pytest.importorskip("torch_pruning", reason="tp_prune needs Torch-Pruning")
    model, x = build(name)
    with pytest.raises(pk.UnsupportedGraphError, match=cause):
        pk.tp_prune(model, x, 0.5)


def test_shrink_refuses_dead_channels_it_cannot_see():
    model, x = build("transformer_encoder")
    pk.prune(model, 0.5, method="channel")
    with pytest.raises(pk.UnsupportedGraphError, match="which torch.fx runs as one operation"):
        pk.shrink(model, x)


def test_a_shrunk_model_exports_to_onnx_runs_in_onnxruntime_and_is_small_on_disk(tmp_path):
    onnx = pytest.importorskip("onnx", reason="the ONNX check needs onnx")
    ort = pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime")
    torch.manual_seed(0)
    model = pk.models.LeNet5().eval()
    x = torch.randn(2, 1, 28, 28)
    pk.prune(model, 0.5, method="channel", exclude=["fc2"])
    small = pk.shrink(model, x).eval()
    path = tmp_path / "small.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(small, (x,), str(path), dynamo=False, input_names=["x"])
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), model(x), rtol=1e-4, atol=1e-5)
    params = pk.count_parameters(small)
    assert params < 0.6 * pk.count_parameters(model)
    assert path.stat().st_size <= 4 * params + 20_000  # float32 values plus a small graph


def test_a_shrunk_model_exports_with_torch_export_and_its_size_matches_its_parameters():
    torch.manual_seed(0)
    model = pk.models.LeNet5().eval()
    x = torch.randn(2, 1, 28, 28)
    pk.prune(model, 0.5, method="channel", exclude=["fc2"])
    small = pk.shrink(model, x).eval()
    program = torch.export.export(small, (x,))
    torch.testing.assert_close(program.module()(x), model(x), rtol=1e-4, atol=1e-5)
    # bytes on disk follow the parameter count: 4 bytes per float32 plus a small overhead
    assert pk.model_size_bytes(small) == pytest.approx(4 * pk.count_parameters(small), rel=0.05, abs=8_000)
    # and a masked model stores weight_orig and weight_mask: about twice its parameters
    assert pk.model_size_bytes(model) > 1.9 * 4 * pk.count_parameters(model) - 8_000

"""Every layer that holds weights is pruned faithfully: torch's Transformer, MultiheadAttention,
RNNs and tied weights. (Hugging Face models are in test_zoo.py.)"""

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import prunekit as pk


class TiedLM(nn.Module):
    """An LSTM language model whose output layer shares the embedding (weight tying)."""

    def __init__(self, vocab=50, dim=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, dim, batch_first=True)
        self.decoder = nn.Linear(dim, vocab)
        self.decoder.weight = self.embed.weight

    def forward(self, x):
        return self.decoder(self.lstm(self.embed(x))[0])


class Attention(nn.Module):
    def __init__(self, kdim=None):
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 4, kdim=kdim, vdim=kdim, batch_first=True, dropout=0.0)

    def forward(self, q, kv):
        return self.mha(q, kv, kv)[0]


def build(name):
    torch.manual_seed(0)
    if name == "encoder":
        layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
        return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), (torch.randn(2, 5, 16),)
    if name == "encoder-norm-first":
        layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=True)
        return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), (torch.randn(2, 5, 16),)
    if name == "decoder":
        layer = nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
        return nn.TransformerDecoder(layer, 2), (torch.randn(2, 5, 16), torch.randn(2, 7, 16))
    if name == "mha-kdim":
        return Attention(kdim=8), (torch.randn(2, 5, 16), torch.randn(2, 6, 8))
    if name == "lstm":
        return nn.LSTM(8, 12, num_layers=2, bidirectional=True, batch_first=True), (torch.randn(2, 5, 8),)
    if name == "gru":
        return nn.GRU(8, 12, num_layers=2, batch_first=True), (torch.randn(2, 5, 8),)
    if name == "tied-lm":
        return TiedLM(), (torch.randint(0, 50, (2, 6)),)
    raise KeyError(name)


NAMES = ["encoder", "encoder-norm-first", "decoder", "mha-kdim", "lstm", "gru", "tied-lm"]


def out(model, inputs):
    y = model(*inputs)
    return y[0] if isinstance(y, tuple) else y


def matmul_weights(model):
    """Every weight that multiplies activations, each parameter once (embeddings excluded)."""
    seen, out_ = set(), []
    for m in model.modules():
        for key, p in m._parameters.items():
            name = key.removesuffix("_orig")
            if p is None or id(p) in seen or isinstance(m, nn.Embedding) or isinstance(m, nn.LayerNorm):
                continue
            if name == "weight" and isinstance(m, (nn.Linear, nn.Conv1d)) or name in (
                    "in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight") or (
                    isinstance(m, nn.RNNBase) and name.startswith("weight")):
                if isinstance(m, nn.Linear) and any(p is e.weight for e in model.modules() if isinstance(e, nn.Embedding)):
                    continue  # tied to the embedding: an embedding, left dense by default
                seen.add(id(p))
                out_.append(pk.effective_tensor(m, name))
    return out_


def zero_fraction(tensors):
    return sum(int((t == 0).sum()) for t in tensors) / sum(t.numel() for t in tensors)


def plain_copy(model):
    """A copy with the masks made permanent: what the masked model must compute."""
    return pk.remove(copy.deepcopy(model))


@pytest.mark.parametrize("name", NAMES)
def test_every_matmul_weight_is_pruned_and_reported_truthfully(name):
    model, _ = build(name)
    pk.prune(model, 0.5)
    weights = matmul_weights(model)
    assert zero_fraction(weights) == pytest.approx(0.5, abs=0.01)
    assert pk.sparsity(model) == pytest.approx(zero_fraction(weights), abs=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_the_model_computes_with_its_masked_weights_before_and_after_training(name):
    model, inputs = build(name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # built before pruning
    pk.prune(model, 0.5)
    for mode in ("eval", "train"):
        getattr(model, mode)()
        torch.testing.assert_close(out(model, inputs), out(plain_copy(model), inputs))
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        out(model, inputs).square().mean().backward()  # twice through the graph: no error
        optimizer.step()
    assert zero_fraction(matmul_weights(model)) == pytest.approx(0.5, abs=0.01)  # still masked
    model.eval()
    torch.testing.assert_close(out(model, inputs), out(plain_copy(model), inputs))


@pytest.mark.parametrize("name", NAMES)
def test_remove_copy_pickle_and_state_dict_keep_the_output(name):
    model, inputs = build(name)
    pk.prune(model, 0.5)
    model.eval()
    out(model, inputs).sum()  # a forward pass first
    expected = out(model, inputs)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        torch.testing.assert_close(out(clone, inputs), expected)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh, _ = build(name)
    pk.load_state_dict(fresh, torch.load(buffer, weights_only=True))
    torch.testing.assert_close(out(fresh.eval(), inputs), expected)
    pk.remove(model)
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())
    torch.testing.assert_close(out(model, inputs), expected)


@pytest.mark.parametrize("name", ["encoder", "mha-kdim", "lstm", "tied-lm"])
def test_a_pruned_model_exports_with_torch_export(name):
    model, inputs = build(name)
    pk.prune(model, 0.5)
    model.eval()
    program = torch.export.export(model, inputs)
    torch.testing.assert_close(out(program.module(), inputs), out(model, inputs))


def test_multihead_attention_reads_its_masked_out_proj_after_optimizer_steps():
    model, inputs = build("mha-kdim")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    pk.prune(model, 0.9)
    for _ in range(2):
        optimizer.zero_grad()
        out(model, inputs).sum().backward()
        optimizer.step()
    w = model.mha.out_proj.weight
    assert int((w == 0).sum()) == round(0.9 * w.numel())
    torch.testing.assert_close(out(model.eval(), inputs), out(plain_copy(model), inputs))


def test_tied_weights_get_one_mask_for_every_user_when_asked():
    model, inputs = build("tied-lm")
    pk.prune(model, 0.5)
    assert not pk.reparam.is_masked(model.decoder)  # tied to the embedding: dense by default
    report = str(pk.sparsity_report(model))
    assert "embeddings 800" in report  # and the report says so
    pk.prune(model, 0.5, include=["decoder"])
    assert model.decoder.weight_mask is model.embed.weight_mask  # one mask, one parameter
    assert model.decoder.weight_orig is model.embed.weight_orig
    model.zero_grad()
    out(model, inputs).sum().backward()
    grad = model.decoder.weight_orig.grad
    assert not grad[model.decoder.weight_mask == 0].any()  # masked entries learn nothing
    pk.remove(model)
    assert model.decoder.weight is model.embed.weight  # still tied
    assert pk.sparsity(model) == pytest.approx(0.5, abs=0.01)


def test_named_parameters_can_be_pruned_and_bad_names_are_refused():
    model, _ = build("encoder")
    pk.prune(model, 0.5, include=["layers.0.norm1.weight"])
    assert pk.reparam.is_masked(model.layers[0].norm1)
    with pytest.raises(ValueError, match="'include' parameter of prune names 'nope'"):
        pk.prune(model, 0.6, include=["nope"])

"""A zoo of real architectures for the tests: tiny, seeded, offline (issue #12).

Every builder takes an optional ``seed`` and returns ``(model, example_input)``: the model
in eval mode with random weights (nothing is downloaded; Hugging Face models are built
from small configs), and a batch of 2 on the CPU. Call a model with :func:`call`::

    model, x = ZOO["gpt2"]()
    out = call(model, x)          # model(x) for a tensor, model(*x) for a tuple
    y = output_tensor(out)        # .logits of a Hugging Face output, else the tensor

``example_input`` is always a tensor or a tuple of tensors, in the order of the model's
positional ``forward`` arguments (for Hugging Face models: ``input_ids`` [,
``attention_mask``] or ``pixel_values``), so ``pk.count_macs(model, x)`` and
``torch.export.export(model, x if isinstance(x, tuple) else (x,))`` take it as it is.

:func:`matmul_weights` lists every parameter that multiplies activations (Linear, Conv*,
Hugging Face ``Conv1D``, ``nn.MultiheadAttention``'s ``in_proj_weight`` or
``q/k/v_proj_weight`` and ``out_proj``, RNN ``weight_ih``/``weight_hh``/``weight_hr``), each
shared parameter once with all its users; :func:`embedding_weights` lists embeddings apart.
Both find a parameter also while it is masked (``weight_orig`` of ``torch.nn.utils.prune``,
``parametrizations.weight.original`` of ``torch.nn.utils.parametrize``).

Which model exercises what:

=================================  ==========================================================
``gpt2``                           HF ``Conv1D`` (weight stored (in, out)), ``lm_head`` tied to
                                   ``wte`` (one Parameter, Linear + Embedding users), SDPA
``bert``                           HF Linear Q/K/V, pooler, classifier; input_ids + mask
``llama``                          grouped-query attention (2 KV heads for 4 query heads),
                                   bias-free Linears, gated MLP, RMSNorm, rotary positions
``vit``                            patch-embedding Conv2d (stride = kernel) + transformer
``transformer_encoder[_norm_first]``  ``nn.TransformerEncoder`` (MHA ``in_proj_weight`` +
                                   ``out_proj`` read without calling it; fast path in eval)
``transformer_decoder[_norm_first]``  ``nn.TransformerDecoder``: self- and cross-attention;
                                   called with ``(tgt, memory)``
``mha_kdim``                       ``nn.MultiheadAttention(kdim, vdim != embed_dim)``:
                                   ``q/k/v_proj_weight``; called with ``(query, key, value)``
``lstm``                           2-layer bidirectional LSTM classifier (8 weight matrices,
                                   cuDNN-style ``_flat_weights``)
``gru``                            2-layer GRU classifier over tokens (Embedding)
``lstm_lm_tied``                   LSTM language model, ``decoder.weight is embedding.weight``
``resnet``                         residual CNN: BasicBlocks, 1x1 downsample, BatchNorm
``mobilenet``                      depthwise-separable CNN (``groups=channels``) + inverted
                                   residuals, ReLU6
``densenet``                       DenseNet-style blocks that concatenate features, transitions
=================================  ==========================================================
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "ZOO",
    "HF_MODELS",
    "build",
    "call",
    "output_tensor",
    "Weight",
    "matmul_weights",
    "embedding_weights",
    "resolve_parameter",
    "effective_value",
    "rnn_macs",
]

VOCAB = 64  # every token model; bos=0, eos=1, pad=2 inside it (no warnings)
BATCH, SEQ = 2, 8


@contextlib.contextmanager
def _seeded(seed: int):
    """Fork the global RNG so a builder is deterministic and leaves the caller's RNG alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _tokens(seed: int, batch: int = BATCH, seq: int = SEQ) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randint(3, VOCAB, (batch, seq), generator=g)


def _floats(seed: int, *shape) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randn(*shape, generator=g)


# --------------------------------------------------------------------------------------
# Hugging Face transformers (imported lazily: the import takes seconds)
# --------------------------------------------------------------------------------------


def _hf(make):
    """Build a transformers model quietly: its loggers and warnings stay out of stderr."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning at build time is a zoo bug: fail loudly
            model = make()
    finally:
        hf_logging.set_verbosity(level)
    return model.eval()


def gpt2(seed: int = 0):
    """GPT-2 LM (2 layers, width 32, 4 heads): Conv1D everywhere, ``lm_head`` tied to ``wte``.

    Called as ``model(input_ids)``; ``input_ids`` is ``(2, 8)`` int64.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=0, eos_token_id=1, pad_token_id=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        use_cache=False)  # no DynamicCache in the output: torch.export takes it
    with _seeded(seed):
        model = _hf(lambda: GPT2LMHeadModel(config))
    assert model.lm_head.weight is model.transformer.wte.weight
    return model, _tokens(seed)


def bert(seed: int = 0):
    """BERT sequence classifier (2 layers, width 32, 4 heads, 3 labels).

    Called as ``model(input_ids, attention_mask)``; the last two tokens of the second row
    are padding (mask 0).
    """
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=32,
                        num_labels=3, pad_token_id=2, bos_token_id=0, eos_token_id=1,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with _seeded(seed):
        model = _hf(lambda: BertForSequenceClassification(config))
    ids = _tokens(seed)
    mask = torch.ones_like(ids)
    ids[1, -2:], mask[1, -2:] = 2, 0
    return model, (ids, mask)


def llama(seed: int = 0):
    """Llama LM (2 layers, width 32, 4 query heads, 2 key/value heads: grouped-query attention).

    Called as ``model(input_ids)``. ``lm_head`` is not tied (Llama's default).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                         pad_token_id=2, tie_word_embeddings=False, use_cache=False)
    with _seeded(seed):
        model = _hf(lambda: LlamaForCausalLM(config))
    attn = model.model.layers[0].self_attn
    assert attn.k_proj.out_features < attn.q_proj.out_features  # GQA
    return model, _tokens(seed)


def vit(seed: int = 0):
    """ViT classifier: 16x16 RGB images, 4x4 patches, width 32, 2 layers, 10 labels.

    Called as ``model(pixel_values)``; ``pixel_values`` is ``(2, 3, 16, 16)``.
    """
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32,
                       num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       num_labels=10, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with _seeded(seed):
        model = _hf(lambda: ViTForImageClassification(config))
    return model, _floats(seed, BATCH, 3, 16, 16)


# --------------------------------------------------------------------------------------
# torch's own transformer modules
# --------------------------------------------------------------------------------------

D_MODEL, N_HEAD, D_FF = 32, 4, 64


class EncoderClassifier(nn.Module):
    """``nn.TransformerEncoder`` (batch_first) over float features, mean-pooled, Linear head."""

    def __init__(self, norm_first: bool):
        super().__init__()
        layer = nn.TransformerEncoderLayer(D_MODEL, N_HEAD, D_FF, dropout=0.0,
                                           batch_first=True, norm_first=norm_first)
        # enable_nested_tensor=False: with norm_first=True torch warns that it cannot use it
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(D_MODEL, 5)

    def forward(self, x):
        return self.head(self.encoder(x).mean(dim=1))


class DecoderLM(nn.Module):
    """``nn.TransformerDecoder`` (batch_first) with a causal mask; ``forward(tgt, memory)``."""

    def __init__(self, norm_first: bool):
        super().__init__()
        layer = nn.TransformerDecoderLayer(D_MODEL, N_HEAD, D_FF, dropout=0.0,
                                           batch_first=True, norm_first=norm_first)
        self.decoder = nn.TransformerDecoder(layer, num_layers=2)
        self.head = nn.Linear(D_MODEL, 5)

    def forward(self, tgt, memory):
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1], dtype=tgt.dtype)
        return self.head(self.decoder(tgt, memory, tgt_mask=mask, tgt_is_causal=True))


def transformer_encoder(seed: int = 0, norm_first: bool = False):
    """``EncoderClassifier``: called as ``model(x)``, ``x`` is ``(2, 8, 32)`` float."""
    with _seeded(seed):
        model = EncoderClassifier(norm_first).eval()
    return model, _floats(seed, BATCH, SEQ, D_MODEL)


def transformer_decoder(seed: int = 0, norm_first: bool = False):
    """``DecoderLM``: called as ``model(tgt, memory)``: ``(2, 8, 32)`` and ``(2, 6, 32)`` float."""
    with _seeded(seed):
        model = DecoderLM(norm_first).eval()
    return model, (_floats(seed, BATCH, SEQ, D_MODEL), _floats(seed + 7, BATCH, 6, D_MODEL))


class CrossAttention(nn.Module):
    """``nn.MultiheadAttention`` with ``kdim``/``vdim`` != ``embed_dim``: separate q/k/v weights."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(D_MODEL, N_HEAD, kdim=24, vdim=16, batch_first=True)
        self.head = nn.Linear(D_MODEL, 5)

    def forward(self, query, key, value):
        out, _ = self.attn(query, key, value, need_weights=False)
        return self.head(out)


def mha_kdim(seed: int = 0):
    """``CrossAttention``: ``model(query, key, value)``, ``(2, 8, 32)``, ``(2, 6, 24)``, ``(2, 6, 16)``."""
    with _seeded(seed):
        model = CrossAttention().eval()
    assert model.attn.in_proj_weight is None and model.attn.q_proj_weight is not None
    return model, (_floats(seed, BATCH, SEQ, D_MODEL), _floats(seed + 7, BATCH, 6, 24),
                   _floats(seed + 8, BATCH, 6, 16))


# --------------------------------------------------------------------------------------
# Recurrent models
# --------------------------------------------------------------------------------------


class LSTMClassifier(nn.Module):
    """2-layer bidirectional LSTM over float features; Linear head on the last step."""

    def __init__(self, n_in: int = 12, hidden: int = 16, n_out: int = 5):
        super().__init__()
        self.rnn = nn.LSTM(n_in, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, n_out)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class GRUClassifier(nn.Module):
    """Embedding + 2-layer GRU over tokens; Linear head on the last step."""

    def __init__(self, emb: int = 16, hidden: int = 24, n_out: int = 5):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, emb)
        self.rnn = nn.GRU(emb, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, ids):
        out, _ = self.rnn(self.embedding(ids))
        return self.head(out[:, -1])


class TiedLSTMLM(nn.Module):
    """Word-level LSTM LM with tied weights (Press & Wolf 2017): ``decoder.weight is embedding.weight``."""

    def __init__(self, width: int = 24):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, width)
        self.rnn = nn.LSTM(width, width, num_layers=2, batch_first=True)
        self.decoder = nn.Linear(width, VOCAB)
        self.decoder.weight = self.embedding.weight

    def forward(self, ids):
        out, _ = self.rnn(self.embedding(ids))
        return self.decoder(out)


def lstm(seed: int = 0):
    """``LSTMClassifier``: ``model(x)``, ``x`` is ``(2, 8, 12)`` float."""
    with _seeded(seed):
        model = LSTMClassifier().eval()
    return model, _floats(seed, BATCH, SEQ, 12)


def gru(seed: int = 0):
    """``GRUClassifier``: ``model(ids)``, ``ids`` is ``(2, 8)`` int64."""
    with _seeded(seed):
        model = GRUClassifier().eval()
    return model, _tokens(seed)


def lstm_lm_tied(seed: int = 0):
    """``TiedLSTMLM``: ``model(ids)`` -> ``(2, 8, 64)`` logits."""
    with _seeded(seed):
        model = TiedLSTMLM().eval()
    assert model.decoder.weight is model.embedding.weight
    return model, _tokens(seed)


# --------------------------------------------------------------------------------------
# CNNs (torchvision-free: its registry wheel for torch 2.13 does not import on a CPU)
# --------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class TinyResNet(nn.Module):
    """ResNet-style: stem, 3 BasicBlocks (16 -> 16 -> 32 -> 32 channels), pool, fc."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layer1 = BasicBlock(16, 16, 1)
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, n_classes)

    def forward(self, x):
        return self.fc(self.pool(self.layer2(self.layer1(self.stem(x)))).flatten(1))


def _conv_bn(c_in, c_out, k, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU6())


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise (groups=channels), 1x1 project (linear)."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int = 2):
        super().__init__()
        hidden = c_in * expand
        self.use_residual = stride == 1 and c_in == c_out
        self.block = nn.Sequential(
            _conv_bn(c_in, hidden, 1),
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x):
        out = self.block(x)
        return x + out if self.use_residual else out


class TinyMobileNet(nn.Module):
    """MobileNet-style: stem, depthwise-separable conv, two inverted residuals, classifier."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(3, 16, 3, 2),
            _conv_bn(16, 16, 3, groups=16),      # depthwise
            _conv_bn(16, 24, 1),                 # pointwise
            InvertedResidual(24, 24, 1),
            InvertedResidual(24, 32, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, n_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


class DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int):
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(c_in), nn.ReLU()
        self.conv1 = nn.Conv2d(c_in, 2 * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(2 * growth), nn.ReLU()
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x):
        new = self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))
        return torch.cat([x, new], dim=1)


class TinyDenseNet(nn.Module):
    """DenseNet-style: two dense blocks of 3 layers (growth 8) joined by a 1x1-conv transition."""

    def __init__(self, n_classes: int = 10, growth: int = 8):
        super().__init__()
        c = 16
        layers = [nn.Conv2d(3, c, 3, 1, 1, bias=False)]
        for block in range(2):
            for _ in range(3):
                layers.append(DenseLayer(c, growth))
                c += growth
            if block == 0:
                layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                           nn.AvgPool2d(2)]
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, n_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _randomise_bn(model: nn.Module, seed: int) -> None:
    """BatchNorm with non-trivial running statistics and affine terms, as after training."""
    g = torch.Generator().manual_seed(seed + 3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(1 + 0.2 * torch.rand(n, generator=g))
            with torch.no_grad():
                m.weight.copy_(1 + 0.1 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))


def _cnn(cls, seed):
    with _seeded(seed):
        model = cls()
    _randomise_bn(model, seed)
    return model.eval(), _floats(seed, BATCH, 3, 16, 16)


def resnet(seed: int = 0):
    """``TinyResNet``: ``model(x)``, ``x`` is ``(2, 3, 16, 16)``."""
    return _cnn(TinyResNet, seed)


def mobilenet(seed: int = 0):
    """``TinyMobileNet``: ``model(x)``, ``x`` is ``(2, 3, 16, 16)``."""
    return _cnn(TinyMobileNet, seed)


def densenet(seed: int = 0):
    """``TinyDenseNet``: ``model(x)``, ``x`` is ``(2, 3, 16, 16)``."""
    return _cnn(TinyDenseNet, seed)


#: name -> builder ``(seed=0) -> (model, example_input)``
ZOO = {
    "gpt2": gpt2,
    "bert": bert,
    "llama": llama,
    "vit": vit,
    "transformer_encoder": lambda seed=0: transformer_encoder(seed, norm_first=False),
    "transformer_encoder_norm_first": lambda seed=0: transformer_encoder(seed, norm_first=True),
    "transformer_decoder": lambda seed=0: transformer_decoder(seed, norm_first=False),
    "transformer_decoder_norm_first": lambda seed=0: transformer_decoder(seed, norm_first=True),
    "mha_kdim": mha_kdim,
    "lstm": lstm,
    "gru": gru,
    "lstm_lm_tied": lstm_lm_tied,
    "resnet": resnet,
    "mobilenet": mobilenet,
    "densenet": densenet,
}
#: the builders that need ``transformers``
HF_MODELS = ("gpt2", "bert", "llama", "vit")


def build(name: str, seed: int = 0):
    """``ZOO[name](seed)``."""
    return ZOO[name](seed)


def call(model: nn.Module, example_input):
    """``model(x)`` for a tensor, ``model(*x)`` for a tuple."""
    if isinstance(example_input, tuple):
        return model(*example_input)
    return model(example_input)


def output_tensor(out) -> torch.Tensor:
    """The main output: ``logits`` of a Hugging Face output, the tensor itself otherwise."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    raise TypeError(f"no tensor output in {type(out).__name__}")


# --------------------------------------------------------------------------------------
# Which parameters multiply activations
# --------------------------------------------------------------------------------------


@dataclass
class Weight:
    """One parameter that multiplies activations (or an embedding), counted once.

    ``name`` is its first qualified name (``"transformer.h.0.attn.c_attn.weight"``);
    ``users`` every ``(module_path, tensor_name)`` that holds it (tied weights: several);
    ``kind`` the layer type of the first user (``"Linear"``, ``"Conv1D"``, ``"MHA.in_proj"``,
    ``"LSTM"``, ``"Embedding"``...).
    """

    name: str
    param: nn.Parameter
    kind: str
    users: list = field(default_factory=list)

    @property
    def numel(self) -> int:
        return self.param.numel()


def _is_hf_conv1d(module: nn.Module) -> bool:
    # transformers.pytorch_utils.Conv1D, recognised without importing transformers
    return _base_type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "weight")


def _base_type(module: nn.Module) -> type:
    """The module's class, also when a masking mechanism swapped it for a subclass."""
    cls = type(module)
    if cls.__name__.startswith("Parametrized") or "_prunekit_masked" in cls.__dict__:
        return cls.__bases__[0]
    return cls


def _matmul_tensor_names(module: nn.Module) -> list[tuple[str, str]]:
    """``(tensor_name, kind)`` of the tensors of ``module`` itself that multiply activations."""
    base = _base_type(module)
    if issubclass(base, (nn.Linear, nn.Bilinear)):
        return [("weight", base.__name__ if base is nn.Bilinear else "Linear")]
    if issubclass(base, nn.modules.conv._ConvNd):
        return [("weight", base.__name__)]
    if _is_hf_conv1d(module):
        return [("weight", "Conv1D")]
    if issubclass(base, nn.MultiheadAttention):
        if module._qkv_same_embed_dim:
            return [("in_proj_weight", "MHA.in_proj")]
        return [(n, "MHA." + n[0] + "_proj") for n in ("q_proj_weight", "k_proj_weight", "v_proj_weight")]
        # out_proj is a Linear submodule (NonDynamicallyQuantizableLinear), listed on its own
    if issubclass(base, nn.RNNBase):
        names = []
        for layer in range(module.num_layers):
            for suffix in ("", "_reverse")[: 2 if module.bidirectional else 1]:
                names += [f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}"]
                if getattr(module, "proj_size", 0):
                    names.append(f"weight_hr_l{layer}{suffix}")
        return [(n, base.__name__) for n in names]
    return []


def _embedding_tensor_names(module: nn.Module) -> list[tuple[str, str]]:
    base = _base_type(module)
    if issubclass(base, (nn.Embedding, nn.EmbeddingBag)):
        return [("weight", base.__name__)]
    return []


def resolve_parameter(module: nn.Module, name: str) -> nn.Parameter | None:
    """The Parameter behind ``module.<name>``, also while a masking mechanism holds it.

    ``torch.nn.utils.prune`` (and prunekit 0.1) keep it as ``<name>_orig``;
    ``torch.nn.utils.parametrize`` as ``parametrizations.<name>.original``.
    """
    params = module._parameters
    if params.get(name) is not None:
        return params[name]
    if params.get(name + "_orig") is not None:
        return params[name + "_orig"]
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None and name in parametrizations:
        return parametrizations[name].original
    return None


def effective_value(module: nn.Module, name: str) -> torch.Tensor:
    """The value ``module`` computes ``<name>`` with now (masked if masked), detached.

    For ``torch.nn.utils.prune``'s re-parametrisation this is ``<name>_orig * <name>_mask``
    (what its forward pre-hook writes before the next forward); otherwise ``module.<name>``
    (a parametrization or property computes it on access).
    """
    with torch.no_grad():
        if name + "_orig" in module._parameters and name + "_mask" in module._buffers:
            return (module._parameters[name + "_orig"] * module._buffers[name + "_mask"]).detach()
        return getattr(module, name).detach()


def _collect(model: nn.Module) -> tuple[list[Weight], list[Weight]]:
    """``(matmul, embeddings)``: one entry per Parameter, with every user of either kind."""
    seen: dict[int, Weight] = {}
    matmul_ids: set[int] = set()
    for path, module in model.named_modules(remove_duplicate=False):
        for names_of, is_matmul in ((_matmul_tensor_names, True), (_embedding_tensor_names, False)):
            for tensor_name, kind in names_of(module):
                param = resolve_parameter(module, tensor_name)
                if param is None:
                    continue
                qualified = f"{path}.{tensor_name}" if path else tensor_name
                entry = seen.get(id(param))
                if entry is None:
                    entry = seen[id(param)] = Weight(qualified, param, kind)
                elif is_matmul and id(param) not in matmul_ids:  # name it by its matmul user
                    entry.name, entry.kind = qualified, kind
                if is_matmul:
                    matmul_ids.add(id(param))
                if (path, tensor_name) not in entry.users:
                    entry.users.append((path, tensor_name))
    matmul = [w for w in seen.values() if id(w.param) in matmul_ids]
    return matmul, [w for w in seen.values() if id(w.param) not in matmul_ids]


def matmul_weights(model: nn.Module) -> list[Weight]:
    """Every parameter that multiplies activations, once each (tied: one entry, all users).

    Linear, Conv*, HF ``Conv1D``, MHA ``in_proj_weight`` / ``q/k/v_proj_weight`` (its
    ``out_proj`` is a Linear), RNN/LSTM/GRU ``weight_ih``/``weight_hh``/``weight_hr`` of every
    layer and direction. A parameter also used by an embedding (GPT-2's ``lm_head`` = ``wte``)
    is listed here, with all its users (Embedding ones included), and not in
    :func:`embedding_weights`.
    """
    return _collect(model)[0]


def embedding_weights(model: nn.Module) -> list[Weight]:
    """Embedding tables that no matmul layer shares (tied ones are in :func:`matmul_weights`)."""
    return _collect(model)[1]


def rnn_macs(model: nn.Module, example_input) -> int:
    """Multiply-accumulates of the recurrent layers for one forward pass, by hand.

    ``FlopCounterMode`` does not see inside ``aten.lstm``/``aten.gru`` on a CPU. Every time
    step of every layer and direction multiplies each entry of ``weight_ih`` and ``weight_hh``
    (and ``weight_hr``) once per sequence in the batch: ``gates * hidden * (in + hidden)``
    per step, gates = 4 (LSTM), 3 (GRU), 1 (RNN). Sequence length and batch size are read
    from the input each RNN receives (forward pre-hook); packed sequences are not handled.
    """
    total = [0]

    def hook(module, args):
        x = args[0]
        if module.batch_first and x.dim() == 3:
            batch, steps = x.shape[0], x.shape[1]
        elif x.dim() == 3:
            steps, batch = x.shape[0], x.shape[1]
        else:
            steps, batch = x.shape[0], 1
        per_step = sum(resolve_parameter(module, n).numel() for n, _ in _matmul_tensor_names(module))
        total[0] += steps * batch * per_step

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, nn.RNNBase)]
    try:
        with torch.no_grad():
            call(model, example_input)
    finally:
        for h in handles:
            h.remove()
    return total[0]

"""What can be pruned: which tensors of which module types, and how each tensor is laid out."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._validation import invalid

__all__ = [
    "Layout",
    "Target",
    "PRUNABLE_TYPES",
    "register_layout",
    "layout_of",
    "is_prunable",
    "targets",
    "target_name",
    "named_target",
    "weight_layers",
]


@dataclass(frozen=True)
class Layout:
    """How a module type holds its prunable tensors.

    Attributes:
        tensors: names of the tensors that multiply activations (``("weight",)``).
        out_dim: the dimension of each tensor that indexes output channels.
        in_dim: the dimension that indexes input features.
        channels: whether whole output channels can be masked (with bias and BatchNorm).
        uses: ``uses(module, args, output) -> {tensor: n}``: how many times each entry of
            each tensor is multiplied in one call (``count_macs`` of a masked model needs it).
    """

    tensors: tuple = ("weight",)
    out_dim: int = 0
    in_dim: int = 1
    channels: bool = True
    uses: object = None


@dataclass(frozen=True, eq=False)
class Target:
    """One prunable tensor: ``module.<tensor>`` of the layer called ``name``.

    ``name`` is the module's name in ``model.named_modules()`` for its ``weight``, and
    ``"<module name>.<tensor>"`` for any other tensor. It unpacks as ``(name, module)``, the
    pairs :meth:`prunekit.Method.prepare` receives.
    """

    name: str
    module: nn.Module
    tensor: str
    layout: Layout

    def __iter__(self):
        return iter((self.name, self.module))


def _linear_uses(module, args, output) -> dict:
    return {"weight": args[0].numel() // module.in_features}


def _conv_uses(module, args, output) -> dict:
    if module.transposed:  # every input element meets every weight of its group
        return {"weight": args[0].numel() // module.in_channels}
    return {"weight": output.numel() // module.out_channels}


_LINEAR = Layout(uses=_linear_uses)
_CONV = Layout(uses=_conv_uses)
_CONV_TRANSPOSED = Layout(out_dim=1, in_dim=0, channels=False, uses=_conv_uses)


def _conv_layout(module: nn.Module) -> Layout:
    return _CONV_TRANSPOSED if module.transposed else _CONV


def _mha_layout(module: nn.MultiheadAttention) -> Layout:
    # Q, K and V projections (one packed tensor, or three when kdim/vdim differ from
    # embed_dim); out_proj is a Linear submodule of its own. Each projection row meets every
    # token of its input: the query's for Q, the key's for K, the value's for V.
    if module._qkv_same_embed_dim:
        return Layout(tensors=("in_proj_weight",), channels=False, uses=_mha_uses)
    return Layout(tensors=("q_proj_weight", "k_proj_weight", "v_proj_weight"), channels=False,
                  uses=_mha_uses)


def _tokens(x: torch.Tensor) -> int:
    return x.numel() // x.shape[-1]


def _mha_uses(module, args, output) -> dict:
    query, key, value = (args + (None, None))[:3]
    key = query if key is None else key
    value = key if value is None else value
    if module._qkv_same_embed_dim:
        e = module.embed_dim
        counts = torch.tensor([_tokens(query)] * e + [_tokens(key)] * e + [_tokens(value)] * e)
        return {"in_proj_weight": counts.view(-1, 1)}
    return {"q_proj_weight": _tokens(query), "k_proj_weight": _tokens(key),
            "v_proj_weight": _tokens(value)}


def _rnn_layout(module: nn.RNNBase) -> Layout:
    # weight_ih_l{k}[_reverse], weight_hh_l{k}[_reverse] (and weight_hr_l{k} for LSTM
    # projections): every step multiplies each entry once; count_macs counts steps itself
    names = tuple(n for n in module._flat_weights_names if n.startswith("weight"))
    return Layout(tensors=names, channels=False)


def _hf_conv1d_layout(module: nn.Module) -> Layout | None:
    # Hugging Face's transformers.pytorch_utils.Conv1D (GPT-2): a linear layer whose weight is
    # stored transposed, (in, out); recognised by name and shape, without importing transformers
    w = getattr(module, "weight", None)
    if isinstance(w, torch.Tensor) and w.dim() == 2 and getattr(module, "nf", None) == w.shape[1]:
        return Layout(out_dim=1, in_dim=0, channels=False, uses=_conv1d_uses)
    return None


def _conv1d_uses(module, args, output) -> dict:
    return {"weight": args[0].numel() // module.weight.shape[0]}


#: module type -> :class:`Layout`, or a function ``module -> Layout | None``
_LAYOUTS: dict = {
    nn.Linear: _LINEAR,
    nn.modules.conv._ConvNd: _conv_layout,
    nn.MultiheadAttention: _mha_layout,
    nn.RNNBase: _rnn_layout,
}
#: class name -> layout function, for types recognised without importing their library
_LAYOUTS_BY_NAME: dict = {"Conv1D": _hf_conv1d_layout}

#: the module types prunekit prunes by default (and Hugging Face's ``Conv1D``, by name)
PRUNABLE_TYPES = (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention, nn.RNNBase)


def register_layout(module_type: type, layout) -> None:
    """Declare how ``module_type`` (and its subclasses) holds prunable tensors.

    Args:
        module_type: a subclass of ``nn.Module``.
        layout: a :class:`Layout`, or a function ``module -> Layout | None`` for types
            whose layout depends on the instance.
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise invalid(TypeError, "module_type", "register_layout",
                      "a subclass of torch.nn.Module", repr(module_type))
    if not (isinstance(layout, Layout) or callable(layout)):
        raise invalid(TypeError, "layout", "register_layout", "a Layout or a callable(module)",
                      repr(layout))
    _LAYOUTS[module_type] = layout


def layout_of(module: nn.Module) -> Layout | None:
    """The :class:`Layout` of ``module``, or ``None`` if it holds nothing prunekit prunes."""
    for cls in type(module).__mro__:
        entry = _LAYOUTS.get(cls) or _LAYOUTS_BY_NAME.get(cls.__name__)
        if entry is not None:
            return entry if isinstance(entry, Layout) else entry(module)
    return None


def is_prunable(module: nn.Module) -> bool:
    """Whether prunekit prunes ``module``'s tensors by default."""
    return layout_of(module) is not None


def targets(model: nn.Module, layers=None) -> list[Target]:
    """Every prunable tensor of ``model`` in module order, each parameter once.

    ``layers``: ``(name, module)`` pairs to use instead of ``model.named_modules()``. A
    parameter registered in several places (tied weights) is listed at its first holder. A
    parameter an ``nn.Embedding`` holds too (an output layer tied to the token embedding) is
    an embedding: listed only once it is masked.
    """
    pairs = model.named_modules() if layers is None else layers
    out = []
    seen = {id(p) for m in model.modules() if isinstance(m, nn.Embedding)
            for k, p in m._parameters.items() if p is not None and not k.endswith("_orig")}
    for path, module in pairs:
        layout = layout_of(module)
        if layout is None:
            continue
        for tensor in layout.tensors:
            param = module._parameters.get(tensor + "_orig", module._parameters.get(tensor))
            if param is not None and id(param) in seen:
                continue
            seen.add(id(param))
            out.append(Target(target_name(path, tensor), module, tensor, layout))
    return out


def target_name(path: str, tensor: str) -> str:
    """A tensor's name in plans and reports: the module's name for ``weight``, else ``path.tensor``."""
    return path if tensor == "weight" else (f"{path}.{tensor}" if path else tensor)


def named_target(model: nn.Module, name: str) -> Target | None:
    """The :class:`Target` for a parameter name such as ``"embed.weight"`` or a module name."""
    modules = dict(model.named_modules())
    if name in modules:
        module = modules[name]
        layout = layout_of(module) or (Layout(channels=False) if _has(module, "weight") else None)
        return Target(name, module, "weight", layout) if layout is not None else None
    path, _, tensor = name.rpartition(".")
    module = modules.get(path)
    if module is None or not _has(module, tensor):
        return None
    layout = layout_of(module)
    if layout is None or tensor not in layout.tensors:
        layout = Layout(tensors=(tensor,), channels=False)
    return Target(target_name(path, tensor), module, tensor, layout)


def _has(module: nn.Module, tensor: str) -> bool:
    return module._parameters.get(tensor) is not None or module._parameters.get(tensor + "_orig") is not None


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every module with prunable tensors, in ``named_modules()`` order."""
    return [(n, m) for n, m in model.named_modules() if is_prunable(m)]

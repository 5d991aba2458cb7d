"""What can be pruned: which tensors of which module types, and how each tensor is laid out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from torch import nn

__all__ = [
    "Layout",
    "Target",
    "PRUNABLE_TYPES",
    "register_layout",
    "layout_of",
    "is_prunable",
    "targets",
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


class Target(NamedTuple):
    """One prunable tensor: ``module.<tensor>`` of the layer called ``name``.

    ``name`` is the module's name in ``model.named_modules()`` for its ``weight``, and
    ``"<module name>.<tensor>"`` for any other tensor.
    """

    name: str
    module: nn.Module
    tensor: str
    layout: Layout


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


#: module type -> :class:`Layout`, or a function ``module -> Layout | None``
_LAYOUTS: dict = {nn.Linear: _LINEAR, nn.modules.conv._ConvNd: _conv_layout}

#: the module types prunekit prunes by default (their ``weight``)
PRUNABLE_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


def register_layout(module_type: type, layout) -> None:
    """Declare how ``module_type`` (and its subclasses) holds prunable tensors.

    Args:
        module_type: a subclass of ``nn.Module``.
        layout: a :class:`Layout`, or a function ``module -> Layout | None`` for types
            whose layout depends on the instance.
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"The 'module_type' parameter of register_layout must be a subclass of "
                        f"torch.nn.Module. Got {module_type!r} instead.")
    if not (isinstance(layout, Layout) or callable(layout)):
        raise TypeError(f"The 'layout' parameter of register_layout must be a Layout or a "
                        f"callable(module). Got {layout!r} instead.")
    _LAYOUTS[module_type] = layout


def layout_of(module: nn.Module) -> Layout | None:
    """The :class:`Layout` of ``module``, or ``None`` if it holds nothing prunekit prunes."""
    for cls in type(module).__mro__:
        entry = _LAYOUTS.get(cls)
        if entry is not None:
            return entry if isinstance(entry, Layout) else entry(module)
    return None


def is_prunable(module: nn.Module) -> bool:
    """Whether prunekit prunes ``module``'s tensors by default."""
    return layout_of(module) is not None


def targets(model: nn.Module, layers=None) -> list[Target]:
    """Every prunable tensor of ``model`` in module order (``layers``: ``(name, module)`` pairs to use instead)."""
    pairs = model.named_modules() if layers is None else layers
    out = []
    for path, module in pairs:
        layout = layout_of(module)
        if layout is None:
            continue
        for tensor in layout.tensors:
            name = path if tensor == "weight" else (f"{path}.{tensor}" if path else tensor)
            out.append(Target(name, module, tensor, layout))
    return out


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every module with prunable tensors, in ``named_modules()`` order."""
    return [(n, m) for n, m in model.named_modules() if is_prunable(m)]

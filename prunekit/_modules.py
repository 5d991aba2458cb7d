"""Walking a model's modules: names, the last layer, device, saved modes, dtype widening."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import nn

from ._validation import argument_error, invalid
from .targets import weight_layers

__all__ = [
    "resolve_modules",
    "module_ids",
    "last_layer",
    "model_device",
    "saved_modes",
    "eval_mode",
    "widened",
    "WIDE",
]


def resolve_modules(model: nn.Module, items, caller: str, param: str) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for modules given as objects or names (as in ``named_modules()``).

    ``items`` may be one module or name, or an iterable of them; duplicates are dropped.
    Anything that is not part of ``model`` is refused, naming ``param`` and the value.
    """
    if isinstance(items, (str, nn.Module)):
        items = [items]
    if not isinstance(items, Iterable):
        raise invalid(TypeError, param, caller, "a module, a module name, or an iterable of them",
                      repr(items))
    named = list(model.named_modules())
    by_name = dict(named)
    name_of = {}
    for n, m in named:
        name_of.setdefault(id(m), n)
    out, seen = [], set()
    for item in items:
        if isinstance(item, str):
            if item not in by_name:
                close = [n for n in by_name if n and (item in n or n in item)][:5]
                hint = f" Did you mean one of {close}?" if close else ""
                raise argument_error(
                    ValueError, param, caller, f"names {item!r}, which is not a module of the "
                    f"model (names as in model.named_modules()).{hint}")
            name, module = item, by_name[item]
        elif isinstance(item, nn.Module):
            if id(item) not in name_of:
                raise argument_error(ValueError, param, caller, f"contains a "
                                     f"{type(item).__name__} that is not part of the model.")
            name, module = name_of[id(item)], item
        else:
            raise invalid(TypeError, param, caller, "made of modules or module names", repr(item))
        if id(module) not in seen:
            seen.add(id(module))
            out.append((name, module))
    return out


def module_ids(model: nn.Module, items, caller: str, param: str) -> set[int]:
    """``id`` of every module :func:`resolve_modules` finds (``None``: none)."""
    if items is None:
        return set()
    return {id(m) for _, m in resolve_modules(model, items, caller, param)}


def last_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The last prunable layer in ``named_modules()`` order (usually the classifier)."""
    layers = weight_layers(model)
    return layers[-1] if layers else None


def model_device(model: nn.Module, default=None) -> torch.device:
    """The device of the model's first parameter (or buffer); ``default`` or the CPU if none."""
    if default is not None:
        return torch.device(default)
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def saved_modes(model: nn.Module):
    """Restore every module's ``training`` flag on exit, whatever happens inside."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        if modes:
            model.train(modes[0][1])  # lets custom train() overrides run, then the exact flags
        for m, flag in modes:
            m.training = flag


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Eval mode inside the block; every module's own flag restored on exit."""
    with saved_modes(model):
        model.eval()
        yield model


#: dtypes that selection and accumulation widen to float32 (no CPU kernels, too few bits)
WIDE = (torch.float16, torch.bfloat16)


def widened(t: torch.Tensor) -> torch.Tensor:
    """``t`` as float32 if it is half precision (which float32 holds exactly), else ``t``."""
    return t.float() if t.dtype in WIDE else t

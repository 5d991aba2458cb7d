"""Pruning methods and their registry: built-ins in one list; ``register_method`` adds yours."""

from __future__ import annotations

from types import MappingProxyType

from .._validation import check_choice
from .base import NEEDS, Group, Method, plan_masks
from .gradient import GradientMethod
from .kmeans import KMeansMethod
from .magnitude import ChannelMethod, KernelMethod, MagnitudeMethod, RandomChannelMethod, RandomMethod
from .oneshot import CalibratedMethod, SparseGPTMethod, WandaMethod
from .slimming import SlimmingMethod, slimming_loss, slimming_penalty

__all__ = [
    "Method",
    "Group",
    "NEEDS",
    "plan_masks",
    "register_method",
    "get_method",
    "METHODS",
    "BUILTIN_METHODS",
    "MagnitudeMethod",
    "RandomMethod",
    "ChannelMethod",
    "KernelMethod",
    "GradientMethod",
    "KMeansMethod",
    "SlimmingMethod",
    "RandomChannelMethod",
    "slimming_penalty",
    "slimming_loss",
    "CalibratedMethod",
    "WandaMethod",
    "SparseGPTMethod",
]

#: the methods prunekit ships, in the order the book introduces them
BUILTIN_METHODS = (
    MagnitudeMethod("l1", 1),
    MagnitudeMethod("l2", 2),
    RandomMethod(),
    GradientMethod("gradient"),
    GradientMethod("taylor"),
    GradientMethod("fisher"),
    KMeansMethod(),
    ChannelMethod(),
    KernelMethod(),
    SlimmingMethod(),
    RandomChannelMethod(),
    WandaMethod(),
    SparseGPTMethod(),
)

_REGISTRY: dict[str, Method] = {m.name: m for m in BUILTIN_METHODS}

#: method name -> :class:`Method`, read-only (add methods with :func:`register_method`)
METHODS = MappingProxyType(_REGISTRY)


def register_method(method: Method) -> Method:
    """Make ``method`` available as ``prune(..., method=method.name)``; returns it.

    A method of the same name is replaced, so a notebook cell can be run again.

    Examples:
        >>> import torch, prunekit as pk
        >>> # prune the largest weights (a silly method)
        >>> class Largest(pk.Method):
        ...     name = "largest"
        ...     def scores(self, name, module, weight, options):
        ...         return -weight.abs()
        >>> _ = pk.register_method(Largest())
        >>> layer = pk.prune(torch.nn.Linear(4, 1), 0.5, method="largest")
        >>> int(layer.weight_mask.sum())
        2
    """
    if not isinstance(method, Method) or not isinstance(method.name, str) or not method.name:
        raise TypeError(f"register_method expects a named Method instance. Got {method!r} instead.")
    if method.needs not in NEEDS:
        raise ValueError(f"The 'needs' attribute of method {method.name!r} must be one of "
                         f"{NEEDS}. Got {method.needs!r} instead.")
    _REGISTRY[method.name] = method
    return method


def get_method(name, caller: str) -> Method:
    """The registered method called ``name``, or a ``ValueError`` listing the valid names."""
    return _REGISTRY[check_choice(name, _REGISTRY, caller, "method")]

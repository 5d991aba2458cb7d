"""The one masking mechanism: ``<name> = <name>_orig * <name>_mask``, computed on every access."""

from __future__ import annotations

import contextlib
import contextvars
import copy
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ._validation import check_model, invalid

__all__ = [
    "base_class",
    "capture_effective",
    "computed_on_access",
    "pruned_tensor_names",
    "is_masked",
    "effective_tensor",
    "current_keep",
    "attach_mask",
    "mask_dtype",
    "check_mask_dtype",
    "refresh",
    "unmask",
    "remove",
    "strip_masks",
    "copy_model",
    "stripped_state_dict",
    "load_state_dict",
]


# A masked module's class is replaced by a subclass (one per base class and set of names,
# cached) whose ``<name>`` is a property computing ``<name>_orig * <name>_mask`` on every
# access: the technique of ``torch.nn.utils.parametrize``, with the names and state_dict of
# ``torch.nn.utils.prune`` (so checkpoints, ``layer.weight_mask`` and 0.1 code keep working),
# and a ``__reduce_ex__`` that pickles the model through its original class.
_CLASSES: dict = {}
_CAPTURE: list = []  # open capture_effective() logs
_MASK_DTYPE = contextvars.ContextVar("prunekit_mask_dtype", default=None)  # None: the tensor's dtype


def check_mask_dtype(dtype, caller: str):
    """``None`` (masks in the weight's dtype, torch's format) or ``torch.bool``."""
    if dtype is not None and dtype is not torch.bool:
        raise invalid(ValueError if isinstance(dtype, torch.dtype) else TypeError, "mask_dtype", caller,
                      "None (masks in the weight's dtype, as torch.nn.utils.prune stores them) or "
                      "torch.bool (1 byte per weight)", repr(dtype))
    return dtype


@contextlib.contextmanager
def mask_dtype(dtype):
    """New masks attached while open are stored as ``dtype`` (``None``: the weight's dtype).

    Masks that already exist keep their dtype: nesting a mask multiplies into it.
    """
    token = _MASK_DTYPE.set(check_mask_dtype(dtype, "mask_dtype"))
    try:
        yield
    finally:
        _MASK_DTYPE.reset(token)


def _masked_property(name: str) -> property:
    orig, mask = name + "_orig", name + "_mask"

    def get(self):
        value = self._parameters[orig] * self._buffers[mask]
        for log in _CAPTURE:
            log.append((self, name, value))
        return value

    return property(get, doc=f"``{orig} * {mask}``, recomputed on every access (prunekit).")


def _reduce_ex(self, protocol):
    names = tuple(sorted(type(self).__dict__["_prunekit_masked"]))
    state = self.__getstate__()
    if "_flat_weights" in state:  # an RNN's cache of its weights: computed, so not leaves
        state = {**state, "_flat_weights": [None if w is None else w.detach() for w in state["_flat_weights"]]}
    return (_rebuild, (base_class(self), names), state)


def _rebuild(base: type, names: tuple) -> nn.Module:
    obj = base.__new__(base)
    obj.__class__ = _masked_class(base, names)
    return obj


def _masked_class(base: type, names) -> type:
    key = (base, frozenset(names))
    cls = _CLASSES.get(key)
    if cls is None:
        namespace = {n: _masked_property(n) for n in names}
        namespace.update(_prunekit_masked=frozenset(names), __reduce_ex__=_reduce_ex,
                         __module__=base.__module__, __qualname__=base.__qualname__)
        cls = type(base.__name__, (base,), namespace)
        _CLASSES[key] = cls
    return cls


def base_class(module: nn.Module) -> type:
    """The module's own class (``nn.Linear``), also while prunekit masks it."""
    cls = type(module)
    return cls.__bases__[0] if "_prunekit_masked" in cls.__dict__ else cls


def _ours(module: nn.Module) -> frozenset:
    return type(module).__dict__.get("_prunekit_masked", frozenset())


def computed_on_access(module: nn.Module, name: str = "weight") -> bool:
    """Whether ``module.<name>`` is masked by prunekit (a property computed on every access)."""
    return name in _ours(module)


@contextlib.contextmanager
def capture_effective():
    """Record ``(module, name, tensor)`` for every masked tensor computed while open."""
    log = []
    _CAPTURE.append(log)
    try:
        yield log
    finally:
        _CAPTURE.remove(log)


def pruned_tensor_names(module: nn.Module) -> list[str]:
    """Names of tensors of ``module`` re-parametrised by a mask (``weight``, ``bias``, ...)."""
    return [
        key[: -len("_orig")]
        for key in module._parameters
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in module._buffers
    ]


def effective_tensor(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The tensor the module computes with, ``orig * mask`` if pruned, without gradient.

    Unlike ``module.weight`` after training steps, this is never stale: it is computed from
    the current ``weight_orig`` and ``weight_mask``.
    """
    if name in pruned_tensor_names(module):
        with torch.no_grad():
            return getattr(module, name + "_orig") * getattr(module, name + "_mask")
    return getattr(module, name).detach()


def _refresh(module: nn.Module, name: str) -> None:
    """For a module pruned by ``torch.nn.utils.prune``: recompute ``<name>`` as its hook does."""
    if name not in _ours(module):
        orig, mask = getattr(module, name + "_orig"), getattr(module, name + "_mask")
        setattr(module, name, orig * mask)


def _holders(model: nn.Module, param) -> list:
    """``(module, name)`` for every place ``param`` is registered (tied weights: several)."""
    out = []
    for m in model.modules():
        for key, p in m._parameters.items():
            if p is param:
                out.append((m, key[: -len("_orig")] if key.endswith("_orig") and key[: -len("_orig")]
                            in pruned_tensor_names(m) else key))
    return out


def attach_mask(module: nn.Module, name: str, keep: torch.Tensor, model: nn.Module | None = None) -> None:
    """Mask ``module.<name>`` with a boolean keep-mask, nested inside any existing mask.

    A new mask is stored in the tensor's dtype (torch's format), or as ``torch.bool``
    inside ``with mask_dtype(torch.bool)`` (what ``prune(..., mask_dtype=torch.bool)`` does).

    With ``model`` given, every other module of ``model`` that holds the same parameter
    (tied weights) is masked with the same mask tensor, so all its users compute with it.
    """
    if name in pruned_tensor_names(module):
        buf = getattr(module, name + "_mask")
        with torch.no_grad():
            buf.mul_(keep.to(device=buf.device, dtype=buf.dtype))
        _refresh(module, name)
        return
    param = module._parameters[name]
    mask = keep.to(device=param.device, dtype=_MASK_DTYPE.get() or param.dtype)
    holders = _holders(model, param) if model is not None else [(module, name)]
    if (module, name) not in holders:
        holders.insert(0, (module, name))
    for m, n in holders:
        _mask_one(m, n, param, mask)


def _mask_one(module: nn.Module, name: str, param, mask: torch.Tensor) -> None:
    old = module._parameters  # the same Parameter moves to <name>_orig, in the same place
    module._parameters = type(old)((k + "_orig" if k == name else k, v) for k, v in old.items())
    module._buffers[name + "_mask"] = mask
    module.__class__ = _masked_class(base_class(module), _ours(module) | {name})


def current_keep(module: nn.Module, name: str) -> torch.Tensor | None:
    """The keep-mask of ``module.<name>`` (``True`` = kept), or ``None`` if it is not masked."""
    if name in pruned_tensor_names(module):
        return getattr(module, name + "_mask") != 0
    return None


def is_masked(module: nn.Module, name: str = "weight") -> bool:
    """Whether ``module.<name>`` is masked by prunekit (or ``torch.nn.utils.prune``)."""
    return name in pruned_tensor_names(module)


def refresh(model: nn.Module) -> None:
    """Recompute tensors masked by ``torch.nn.utils.prune``'s hooks with autograd on.

    prunekit's own masks are computed on every access and never need this; torch's hooks
    leave ``module.<name>`` without a graph after a forward under ``no_grad``.
    """
    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                hook(m, None)


def unmask(module: nn.Module, names) -> None:
    """Replace ``<name>_orig``/``<name>_mask`` by the parameter ``<name>`` holding the product.

    The parameter object stays the same (an optimizer keeps training it) and keeps its
    place among the module's parameters.
    """
    order = list(module._parameters)
    ours = _ours(module)
    for name in names:
        if name not in ours:  # masked by torch.nn.utils.prune's hook
            torch_prune.remove(module, name)
            continue
        orig = module._parameters[name + "_orig"]
        mask = module._buffers.pop(name + "_mask")
        with torch.no_grad():
            orig.data = orig.data * mask
    old, stripped = module._parameters, {n + "_orig": n for n in names}

    def placed(key):  # every parameter back in its place, under its own name
        name = stripped.get(key)
        return (key, old[key]) if name is None else (name, old.get(key, old.get(name)))

    module._parameters = type(old)(placed(k) for k in order)
    left = ours - set(names)
    module.__class__ = _masked_class(base_class(module), left) if left else base_class(module)


def stripped_state_dict(model: nn.Module) -> dict:
    """The ``state_dict`` :func:`remove` would leave: ``<name>`` = orig * mask, no masks."""
    state = model.state_dict()
    stripped = type(state)()
    if hasattr(state, "_metadata"):
        stripped._metadata = state._metadata
    prefix_names = {}
    for path, module in model.named_modules():
        for name in pruned_tensor_names(module):
            prefix_names[f"{path}.{name}" if path else name] = (module, name)
    for key, value in state.items():
        base = key[: -len("_orig")] if key.endswith("_orig") else key[: -len("_mask")]
        if key.endswith(("_orig", "_mask")) and base in prefix_names:
            if key.endswith("_orig"):
                module, name = prefix_names[base]
                stripped[base] = effective_tensor(module, name)
            continue
        stripped[key] = value
    return stripped


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy``, also for models pruned with ``torch.nn.utils.prune``'s hooks.

    torch's hook stores a pruned tensor as a plain attribute which, after a forward pass
    with gradients, is a non-leaf tensor that ``deepcopy`` refuses (pytorch/pytorch#37322);
    the memo hands ``deepcopy`` a detached copy. prunekit's own masks need nothing of this.
    """
    memo = {}
    for module in model.modules():
        for name in pruned_tensor_names(module):
            value = module.__dict__.get(name)
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


def strip_masks(model: nn.Module) -> None:
    """Make every mask permanent (``*_orig * *_mask`` -> plain parameter), keeping order."""
    for module in model.modules():
        names = pruned_tensor_names(module)
        if names:
            unmask(module, names)


def remove(model: nn.Module) -> nn.Module:
    """Make pruning permanent: drop ``*_orig``/``*_mask`` and the hooks, keep the zeros.

    Works on a whole model (torch's ``prune.remove`` takes one module and one name). The
    forward pass is unchanged; the model's ``state_dict`` has plain ``weight`` keys again.
    Nothing stops later training from making the zeros non-zero: prune again or keep the
    masks while training.

    Returns:
        ``model``.
    """
    check_model(model, "remove")
    strip_masks(model)
    return model


def load_state_dict(model: nn.Module, state_dict: Mapping, strict: bool = True):
    """Load a *pruned* model's ``state_dict`` into a fresh (unpruned) model of the same class.

    A pruned model saves ``fc.weight_orig`` and ``fc.weight_mask`` instead of ``fc.weight``,
    which a fresh model's ``load_state_dict`` rejects. This helper first gives the fresh
    model the same re-parametrisation (all-ones masks), then loads, so masks and weights
    come back exactly and pruning stays in force.

    Args:
        model: the fresh model (it may already be pruned; masks are then overwritten).
        state_dict: from ``pruned_model.state_dict()`` (e.g. via
            ``torch.load(path, weights_only=True)``).
        strict: passed to ``nn.Module.load_state_dict``.

    Returns:
        What ``nn.Module.load_state_dict`` returns (missing and unexpected keys). On error the
        model is left as it was.

    Examples:
        >>> import torch, prunekit as pk
        >>> pruned = pk.prune(torch.nn.Linear(4, 2), 0.5)
        >>> fresh = torch.nn.Linear(4, 2)
        >>> _ = pk.load_state_dict(fresh, pruned.state_dict())
        >>> torch.equal(fresh.weight, pruned.weight)
        True
    """
    check_model(model, "load_state_dict")
    if not isinstance(state_dict, Mapping):
        raise invalid(TypeError, "state_dict", "load_state_dict",
                      "a mapping from names to tensors", type(state_dict).__name__)
    named = dict(model.named_modules())
    added = []
    # nn.Module.load_state_dict copies every matching tensor before it raises, so keep a
    # backup (values and parameter order) to restore the model exactly on failure.
    backup = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    orders = {id(m): list(m._parameters) for m in named.values()}
    for key in state_dict:
        if not key.endswith("_orig"):
            continue
        path, _, tensor_name = key[: -len("_orig")].rpartition(".")
        module = named.get(path)
        if (module is None or key[: -len("_orig")] + "_mask" not in state_dict
                or tensor_name in pruned_tensor_names(module)
                or not isinstance(getattr(module, tensor_name, None), torch.Tensor)):
            continue
        ones = torch.ones_like(getattr(module, tensor_name), dtype=torch.bool)
        saved = state_dict[key[: -len("_orig")] + "_mask"]
        with mask_dtype(torch.bool if getattr(saved, "dtype", None) is torch.bool else None):
            attach_mask(module, tensor_name, ones, model)  # the saved mask's dtype: bool or the weight's
        added.append((module, tensor_name))
    try:
        result = model.load_state_dict(state_dict, strict=strict)
    except Exception:
        for module, tensor_name in added:  # undo: identity masks leave values unchanged
            unmask(module, [tensor_name])
        for module, _ in added:
            for k in orders[id(module)]:
                module._parameters[k] = module._parameters.pop(k)
        with torch.no_grad():
            for k, v in model.state_dict(keep_vars=True).items():
                v.copy_(backup[k])
        _refresh_all(model)
        raise
    _refresh_all(model)
    return result


def _refresh_all(model: nn.Module) -> None:
    for module in model.modules():
        for tensor_name in pruned_tensor_names(module):
            _refresh(module, tensor_name)

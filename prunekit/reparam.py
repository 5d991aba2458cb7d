"""The one masking mechanism: ``torch.nn.utils.prune``'s ``<name>_orig * <name>_mask``, kept copyable."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn
from torch._C import _disabled_torch_function_impl
from torch.nn.utils import prune as torch_prune

from ._validation import check_model

__all__ = [
    "PrunedTensor",
    "PrunekitMask",
    "pruned_tensor_names",
    "is_masked",
    "effective_tensor",
    "current_keep",
    "attach_mask",
    "refresh",
    "unmask",
    "remove",
    "strip_masks",
    "copy_model",
    "stripped_state_dict",
    "load_state_dict",
]


class PrunedTensor(torch.Tensor):
    """The type of ``module.weight`` on a layer pruned by prunekit: ``weight_orig * weight_mask``.

    torch stores the pruned tensor as a plain attribute that, after a forward pass with
    gradients, is a non-leaf tensor; ``copy.deepcopy`` refuses those, so torch's pruned
    models cannot be copied (pytorch/pytorch#37322). This subclass behaves exactly like the
    tensor it wraps (it stays on the autograd graph, so a loss built from ``layer.weight``
    still trains ``weight_orig``; torch functions return plain tensors) but copies and
    pickles as a detached snapshot.
    """

    __torch_function__ = _disabled_torch_function_impl

    def __deepcopy__(self, memo):
        return _rebuild_pruned(self.detach().as_subclass(torch.Tensor).clone())

    def __reduce_ex__(self, protocol):
        return (_rebuild_pruned, (self.detach().as_subclass(torch.Tensor).clone(),))


def _rebuild_pruned(tensor: torch.Tensor) -> PrunedTensor:
    return tensor.as_subclass(PrunedTensor)


class PrunekitMask(torch_prune.CustomFromMask):
    """torch's ``CustomFromMask`` hook, used for every mask prunekit attaches.

    It behaves like torch's (``torch.nn.utils.prune.is_pruned`` and
    ``torch.nn.utils.prune.remove`` recognise it); before each forward it sets
    ``module.weight`` to ``weight_orig * weight_mask`` as a :class:`PrunedTensor`, so the
    model stays copyable. The mask itself lives in the module's ``<name>_mask`` buffer.
    """

    PRUNING_TYPE = "unstructured"

    def __call__(self, module, inputs):
        setattr(module, self._tensor_name, self.apply_mask(module).as_subclass(PrunedTensor))


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
    """Recompute ``module.<name>`` from orig and mask, on the autograd graph like torch does."""
    orig, mask = getattr(module, name + "_orig"), getattr(module, name + "_mask")
    setattr(module, name, (orig * mask).as_subclass(PrunedTensor))


def attach_mask(module: nn.Module, name: str, keep: torch.Tensor) -> None:
    """Attach a boolean keep-mask to ``module.<name>``, nested inside any existing mask."""
    if name in pruned_tensor_names(module):
        buf = getattr(module, name + "_mask")
        with torch.no_grad():
            buf.mul_(keep.to(device=buf.device, dtype=buf.dtype))
    else:
        tensor = getattr(module, name)
        PrunekitMask.apply(module, name, keep.to(device=tensor.device))
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, PrunekitMask) and hook._tensor_name == name:
                hook.mask = None  # the buffer holds the mask; don't keep a second copy
    _refresh(module, name)


def current_keep(module: nn.Module, name: str) -> torch.Tensor | None:
    """The keep-mask of ``module.<name>`` (``True`` = kept), or ``None`` if it is not masked."""
    if name in pruned_tensor_names(module):
        return getattr(module, name + "_mask") != 0
    return None


def is_masked(module: nn.Module, name: str = "weight") -> bool:
    """Whether ``module.<name>`` is masked by prunekit (or ``torch.nn.utils.prune``)."""
    return name in pruned_tensor_names(module)


def refresh(model: nn.Module) -> None:
    """Recompute every masked tensor with autograd on (after a forward under ``no_grad``)."""
    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                hook(m, None)


def unmask(module: nn.Module, names) -> None:
    """Replace ``<name>_orig``/``<name>_mask`` by a plain parameter ``<name>`` holding the product."""
    for name in names:
        torch_prune.remove(module, name)


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
    """``copy.deepcopy`` that also works for models pruned with ``torch.nn.utils.prune``.

    torch stores a pruned tensor as a plain attribute which, after a forward pass with
    gradients, is a non-leaf tensor that ``deepcopy`` refuses (pytorch/pytorch#37322). The
    memo hands ``deepcopy`` a detached copy of those attributes instead.
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
        if not names:
            continue
        order = list(module._parameters)
        unmask(module, names)
        renamed = [k[: -len("_orig")] if k[: -len("_orig")] in names and k.endswith("_orig") else k
                   for k in order]
        params = module._parameters
        module._parameters = type(params)((k, params[k]) for k in renamed if k in params)


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
        raise TypeError(
            "The 'state_dict' parameter of load_state_dict must be a mapping from "
            f"names to tensors. Got {type(state_dict).__name__} instead."
        )
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
        attach_mask(module, tensor_name, ones)
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
        for module in model.modules():
            for tensor_name in pruned_tensor_names(module):
                _refresh(module, tensor_name)
        raise
    for module in model.modules():
        for tensor_name in pruned_tensor_names(module):
            _refresh(module, tensor_name)
    return result

"""Network Slimming (Liu et al. 2017): channels ranked by the |gamma| of their BatchNorm.

Training adds an L1 penalty on every BatchNorm scale (:func:`slimming_penalty`,
:func:`slimming_loss`), which drives the scales of unneeded channels towards zero; then
``pk.prune(model, s, method="slimming", scope="global")`` removes the channels with the
smallest ``|gamma|`` over the whole network, with their filter, bias and BatchNorm, and
:func:`prunekit.shrink` rebuilds the narrower model for fine-tuning.
"""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_model, invalid
from ..reparam import effective_tensor
from .base import Method

__all__ = ["SlimmingMethod", "slimming_penalty", "slimming_loss"]

_BN = nn.modules.batchnorm._BatchNorm


class SlimmingMethod(Method):
    """Whole output channels by the ``|gamma|`` of the BatchNorm that follows the layer.

    The score of channel ``j`` of a Linear/Conv layer is ``|bn.weight[j]|`` of the
    BatchNorm that alone normalises the layer's output (found with ``torch.fx``, as for
    ``method="channel"``). Liu et al. compare the scales of all layers with one global
    threshold, so use ``scope="global"``; the planner masks the filter, its bias and the
    BatchNorm's weight and bias together, exactly as for ``method="channel"``.

    A layer without such a BatchNorm (e.g. the classifier, or a layer whose BatchNorm
    has ``affine=False``) has no scale to rank by: ``prune`` raises a ``ValueError``
    naming it, and ``exclude=`` leaves it dense. There is no silent fallback to another
    criterion.
    """

    name = "slimming"
    granularity = "channel"
    options: dict = {}

    def describe_targets(self) -> str:
        return "nn.Linear and nn.Conv* layers followed by an affine BatchNorm"

    def prepare(self, model, layers, options):
        followers = self.followers(model)
        missing = [t.name or "model" for t in layers
                   if not (t.module in followers and followers[t.module].affine)]
        if missing:
            raise ValueError(
                f"method='slimming' ranks a layer's channels by the |weight| (gamma) of the "
                f"affine BatchNorm that follows it, and layer(s) {missing} have none. Pass "
                f"exclude={missing!r} to leave them dense, or use method='channel'.")
        return {**options, "_bn": followers}

    def scores(self, name, module, weight, options):
        bn = options["_bn"][module]
        return effective_tensor(bn, "weight").detach().abs().to(weight.device)


def _bn_scales(model: nn.Module, caller: str) -> list[torch.Tensor]:
    check_model(model, caller)
    scales = [m.weight for m in model.modules() if isinstance(m, _BN) and m.affine]
    if not scales:
        raise invalid(ValueError, "model", caller, "a model with at least one affine BatchNorm",
                      type(model).__name__ + " without one")
    return scales


def slimming_penalty(model: nn.Module) -> torch.Tensor:
    """``sum |gamma|`` over the scales of every affine BatchNorm of ``model`` (differentiable).

    Network Slimming adds ``strength * slimming_penalty(model)`` to the training loss
    (Liu et al. use ``strength`` = 1e-4 to 1e-5); the subgradient ``strength * sign(gamma)``
    pushes unneeded channels' scales to zero. A masked BatchNorm contributes its masked
    scale, so pruned channels are not pushed on.

    Examples:
        >>> import torch, prunekit as pk
        >>> bn = torch.nn.BatchNorm1d(3)
        >>> with torch.no_grad():
        ...     _ = bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5]))
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), bn)
        >>> pk.slimming_penalty(model).item()  # |1| + |-2| + |0.5|
        3.5
    """
    scales = _bn_scales(model, "slimming_penalty")
    return sum(s.abs().sum() for s in scales)


def slimming_loss(model: nn.Module, strength: float = 1e-4, loss_fn=None):
    """A ``loss_fn(outputs, targets)`` for :func:`prunekit.training.train`: the task loss
    (cross-entropy by default) plus ``strength * slimming_penalty(model)``.

    Examples:
        >>> import prunekit as pk
        >>> model = pk.models.MLP(64, (32,), 10)
        >>> try:
        ...     pk.slimming_loss(model)  # no BatchNorm: nothing to penalise
        ... except ValueError as err:
        ...     print(str(err)[:48])
        The 'model' parameter of slimming_loss must be a
    """
    _bn_scales(model, "slimming_loss")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not strength >= 0:
        raise invalid(ValueError, "strength", "slimming_loss", "a non-negative float",
                      repr(strength))
    base = loss_fn or nn.CrossEntropyLoss()

    def loss(outputs, targets):
        return base(outputs, targets) + strength * slimming_penalty(model)

    return loss

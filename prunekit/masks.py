"""Tensor-level masks: a weight (and its gradient) in, a boolean keep-mask out (``True`` = keep)."""

from __future__ import annotations

import torch

from . import scores as criteria
from ._select import Units, keep_lowest_pruned, n_to_prune
from ._validation import check_choice, check_p, check_same_shape, check_sparsity, check_weight
from .cluster import kmeans_mask

__all__ = [
    "magnitude_mask",
    "gradient_mask",
    "channel_mask",
    "kernel_mask",
    "mask_from_scores",
    "kmeans_mask",
]


def mask_from_scores(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask shaped like ``scores`` that prunes the ``round(sparsity * n)`` lowest scores.

    Use it to prune by any importance you compute yourself (the equivalent of
    ``importance_scores`` in ``torch.nn.utils.prune``).

    Args:
        scores: floating-point tensor of importance scores, finite.
        sparsity: fraction of entries to prune, in [0, 1].

    Returns:
        ``torch.bool`` tensor shaped like ``scores``; ``True`` = keep.

    Examples:
        >>> import torch, prunekit as pk
        >>> pk.mask_from_scores(torch.tensor([3., 1., 2., 4.]), 0.5)
        tensor([ True, False, False,  True])
    """
    caller = "mask_from_scores"
    check_weight(scores, caller, "scores")
    sparsity = check_sparsity(sparsity, caller)
    return keep_lowest_pruned(scores, n_to_prune(sparsity, scores.numel())).view(scores.shape)


def magnitude_mask(weight: torch.Tensor, sparsity: float, *, p: int = 1) -> torch.Tensor:
    """Unstructured magnitude mask: prune the ``round(sparsity * numel)`` smallest ``|w|``.

    Args:
        weight: floating-point tensor of any shape, finite values. Not modified.
        sparsity: fraction of entries to prune, a real number in [0, 1].
        p: norm order, 1 or 2. Single weights rank the same under both (``|w|`` and
            ``w**2`` are monotonic in each other), so the mask does not depend on ``p``;
            the argument exists so code can switch to grouped masks without changes.

    Returns:
        ``torch.bool`` tensor shaped like ``weight`` on the same device; ``True`` = keep.

    Raises:
        TypeError, ValueError: for a bad argument, naming it and the value received.

    Examples:
        >>> import torch, prunekit as pk
        >>> w = torch.tensor([[0.1, -0.5], [2.0, -0.05]])
        >>> pk.magnitude_mask(w, 0.5)
        tensor([[False,  True],
                [ True, False]])
    """
    caller = "magnitude_mask"
    check_weight(weight, caller)
    sparsity = check_sparsity(sparsity, caller)
    check_p(p, caller)
    # ranks by |w| (criteria.magnitude_scores) without storing it: blocks of |w| are made
    # and compared while the weight is read once
    return keep_lowest_pruned(weight, n_to_prune(sparsity, weight.numel()),
                              absolute=True).view(weight.shape)


def gradient_mask(weight: torch.Tensor, grad: torch.Tensor, sparsity: float, *,
                  criterion: str = "taylor") -> torch.Tensor:
    """Unstructured mask from gradient information.

    Args:
        weight: floating-point tensor, finite values. Not modified.
        grad: gradient (or accumulated gradient statistic) shaped like ``weight``.
        sparsity: fraction of entries to prune, in [0, 1].
        criterion: ``"gradient"`` ranks by ``|g|`` (the source document's idea, weak at a
            trained minimum where every gradient is small); ``"taylor"`` ranks by
            ``|w * g|``, the first-order estimate of the loss change from removing ``w``.

    Returns:
        ``torch.bool`` tensor shaped like ``weight``; ``True`` = keep.

    Examples:
        >>> import torch, prunekit as pk
        >>> w = torch.tensor([1.0, 2.0, 3.0, 4.0])
        >>> g = torch.tensor([0.4, 0.1, 0.1, 0.01])
        >>> # Taylor scores |w*g| = .4, .2, .3, .04
        >>> pk.gradient_mask(w, g, 0.5, criterion="taylor")
        tensor([ True, False,  True, False])
    """
    caller = "gradient_mask"
    check_weight(weight, caller)
    check_weight(grad, caller, "grad")
    check_same_shape(weight, grad, caller, "weight", "grad")
    sparsity = check_sparsity(sparsity, caller)
    check_choice(criterion, criteria.GRADIENT_CRITERIA, caller, "criterion")
    scores = criteria.gradient_scores(weight, grad, criterion)
    return keep_lowest_pruned(scores, n_to_prune(sparsity, weight.numel())).view(weight.shape)


def channel_mask(weight: torch.Tensor, sparsity: float, *, p: int = 1) -> torch.Tensor:
    """Structured mask that prunes whole output channels (dim 0) by their Lp norm.

    The ``round(sparsity * out_channels)`` channels with the smallest norms are pruned;
    same choice as ``torch.nn.utils.prune.ln_structured(module, name, sparsity, n=p, dim=0)``.
    For a ``Linear`` weight a channel is a row (one output neuron); for a conv weight it
    is a filter.

    Args:
        weight: floating-point tensor with at least 2 dimensions. Not modified.
        sparsity: fraction of channels to prune, in [0, 1].
        p: 1 or 2. Unlike single weights, channels *can* rank differently under L1 and L2.

    Returns:
        ``torch.bool`` tensor shaped like ``weight``, constant over each channel.

    Examples:
        >>> import torch, prunekit as pk
        >>> # row L1 norms 3, 2; L2 norms 3, 1.41
        >>> w = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
        >>> pk.channel_mask(w, 0.5).all(dim=1)
        tensor([ True, False])
    """
    check_weight(weight, "channel_mask", min_ndim=2)
    return _unit_mask(weight, sparsity, p, "channel_mask", "channel", criteria.channel_scores)


def kernel_mask(weight: torch.Tensor, sparsity: float, *, p: int = 1) -> torch.Tensor:
    """Structured mask that prunes whole ``kH x kW`` kernels of a 4-D conv weight.

    A conv weight ``(out, in, kH, kW)`` holds ``out * in`` kernels; the
    ``round(sparsity * out * in)`` with the smallest Lp norm are pruned (Mao et al. 2017's
    kernel-level granularity).

    Args:
        weight: 4-D floating-point tensor. Not modified.
        sparsity: fraction of kernels to prune, in [0, 1].
        p: 1 or 2.

    Returns:
        ``torch.bool`` tensor shaped like ``weight``, constant over each kernel.

    Examples:
        >>> import torch, prunekit as pk
        >>> # kernel L1 norms 6, 22, 38, 54
        >>> w = torch.arange(16.0).reshape(2, 2, 2, 2)
        >>> pk.kernel_mask(w, 0.25).all(dim=(2, 3))
        tensor([[False,  True],
                [ True,  True]])
    """
    check_weight(weight, "kernel_mask", ndim=4)
    return _unit_mask(weight, sparsity, p, "kernel_mask", "kernel", criteria.kernel_scores)


def _unit_mask(weight, sparsity, p, caller: str, granularity: str, score) -> torch.Tensor:
    """Prune the ``round(sparsity * units)`` units (channels, kernels) of lowest Lp norm."""
    sparsity = check_sparsity(sparsity, caller)
    scores = score(weight, check_p(p, caller))
    keep = keep_lowest_pruned(scores, n_to_prune(sparsity, scores.numel()))
    return Units.expand(keep.reshape(-1), weight.shape, granularity)

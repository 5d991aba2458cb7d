"""Turning scores into exact-count boolean masks (True = keep).

The rule everything in prunekit follows: pruning a fraction ``s`` of ``n`` units removes
exactly ``round(s * n)`` of them (the count ``torch.nn.utils.prune`` uses for a float
amount), the ones with the lowest scores; among equal scores the unit with the lower
flat index goes first. The tie rule makes masks deterministic and *nested*: the units
pruned at a lower sparsity are always among those pruned at a higher one.

Selection finds the threshold (the k-th smallest score: a strided sample brackets it, then
an unsorted ``torch.topk`` selects inside the bracket) and compares, then settles ties at the
threshold explicitly. It never sorts the whole tensor, which is what makes
:func:`magnitude_mask` many times faster than ``torch.nn.utils.prune`` (a full sorted
``torch.topk``) on large weights (see ``benchmarks/masks.py``).
"""

from __future__ import annotations

import torch

from . import criteria
from ._validation import check_choice, check_p, check_same_shape, check_sparsity, check_weight

__all__ = [
    "magnitude_mask",
    "gradient_mask",
    "channel_mask",
    "kernel_mask",
    "mask_from_scores",
    "n_to_prune",
]


def n_to_prune(sparsity: float, n: int) -> int:
    """How many of ``n`` units a sparsity prunes: ``round(sparsity * n)``, as torch does."""
    return int(round(sparsity * n))


def _selectable(scores: torch.Tensor) -> torch.Tensor:
    # kthvalue has no half-precision CPU kernel; float32 holds every half/bfloat16 value exactly.
    if scores.dtype in (torch.float16, torch.bfloat16):
        return scores.float()
    return scores


_SAMPLE = 1 << 16  # below 4 * _SAMPLE entries a plain selection is already fast


def _kthvalue(x: torch.Tensor, k: int) -> torch.Tensor:
    """``torch.kthvalue(x, k).values`` without its quadratic worst case.

    torch's CPU ``kthvalue`` takes seconds on a few hundred thousand entries in descending
    order (e.g. ``-arange(n)``). ``topk`` with ``sorted=False`` returns the same value
    (the largest of the k smallest, or the smallest of the n - k + 1 largest) and has no
    such case.
    """
    n = x.numel()
    if k <= n - k + 1:
        return torch.topk(x, k, largest=False, sorted=False).values.max()
    return torch.topk(x, n - k + 1, largest=True, sorted=False).values.min()


def kth_smallest(flat: torch.Tensor, k: int) -> tuple[torch.Tensor, int]:
    """The k-th smallest value (1-based) of a 1-D tensor, and how many entries are <= it.

    ``torch.kthvalue`` copies and partitions the whole tensor. For large tensors we first
    bracket the answer with a deterministic strided sample: the sample's order statistics
    around rank ``k/n`` give bounds ``lo <= answer <= hi`` with overwhelming probability.
    Counting the entries below ``lo`` and selecting inside the (small) bracket is then
    exact. If the bracket misses (adversarial orderings), fall back to a full kthvalue, so
    the result is always exact; only the speed depends on the data.
    """
    n = flat.numel()
    if n > 4 * _SAMPLE:
        sample = flat[:: n // _SAMPLE].sort().values
        m = sample.numel()
        q = k / n
        margin = int(6.0 * (m * q * (1.0 - q)) ** 0.5) + 32
        lo_rank, hi_rank = int(q * m) - margin, int(q * m) + margin
        inside = None
        below = 0
        if lo_rank >= 0:
            lo = sample[lo_rank]
            inside = flat >= lo
            below = n - int(torch.count_nonzero(inside))
        if hi_rank < m:
            le_hi = flat <= sample[hi_rank]
            inside = le_hi if inside is None else inside.logical_and_(le_hi)
        candidates = flat if inside is None else flat[inside]
        if below < k <= below + candidates.numel():
            value = _kthvalue(candidates, k - below)
            return value, below + int(torch.count_nonzero(candidates <= value))
    value = _kthvalue(flat, k)
    return value, int(torch.count_nonzero(flat <= value))


def keep_lowest_pruned(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Flat bool mask that prunes exactly ``n_prune`` lowest scores (ties: lower index first).

    ``scores`` may contain ``-inf`` (units that must be pruned first, e.g. already pruned
    ones). It must not contain NaN; callers validate that.
    """
    flat = _selectable(scores.reshape(-1))
    n = flat.numel()
    if n_prune <= 0:
        return torch.ones(n, dtype=torch.bool, device=flat.device)
    if n_prune >= n:
        return torch.zeros(n, dtype=torch.bool, device=flat.device)
    threshold, n_at_or_below = kth_smallest(flat, n_prune)  # the n_prune-th smallest score
    keep = flat > threshold
    # Entries <= threshold number at least n_prune; the surplus are ties at the threshold
    # that must stay. Keep the highest-index ties so the lowest-index ones are pruned.
    surplus = n_at_or_below - n_prune
    if surplus > 0:
        tied = torch.nonzero(flat == threshold).squeeze(1)
        keep[tied[tied.numel() - surplus:]] = True
    return keep


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
    p = check_p(p, caller)
    scores = criteria.magnitude_scores(weight, p)
    return keep_lowest_pruned(scores, n_to_prune(sparsity, weight.numel())).view(weight.shape)


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
        >>> pk.gradient_mask(w, g, 0.5, criterion="taylor")   # |w*g| = .4, .2, .3, .04
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


def expand_channel_mask(unit_keep: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Broadcast a per-output-channel mask of shape ``(out,)`` to a weight of ``shape``."""
    return unit_keep.view(-1, *([1] * (len(shape) - 1))).expand(shape).clone()


def expand_kernel_mask(unit_keep: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Broadcast a per-kernel mask of shape ``(out, in)`` to a 4-D conv weight."""
    return unit_keep[:, :, None, None].expand(shape).clone()


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
        >>> w = torch.tensor([[3.0, 0.0], [1.0, 1.0]])   # L1 norms 3, 2; L2 norms 3, 1.41
        >>> pk.channel_mask(w, 0.5).all(dim=1)
        tensor([ True, False])
    """
    caller = "channel_mask"
    check_weight(weight, caller, min_ndim=2)
    sparsity = check_sparsity(sparsity, caller)
    p = check_p(p, caller)
    scores = criteria.channel_scores(weight, p)
    keep = keep_lowest_pruned(scores, n_to_prune(sparsity, scores.numel()))
    return expand_channel_mask(keep, weight.shape)


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
        >>> w = torch.arange(16.0).reshape(2, 2, 2, 2)   # kernel L1 norms 6, 22, 38, 54
        >>> pk.kernel_mask(w, 0.25).all(dim=(2, 3))
        tensor([[False,  True],
                [ True,  True]])
    """
    caller = "kernel_mask"
    check_weight(weight, caller, ndim=4)
    sparsity = check_sparsity(sparsity, caller)
    p = check_p(p, caller)
    scores = criteria.kernel_scores(weight, p)
    keep = keep_lowest_pruned(scores, n_to_prune(sparsity, scores.numel()))
    return expand_kernel_mask(keep.view(scores.shape), weight.shape)

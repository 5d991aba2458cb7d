"""Exact-count selection: which units to prune, ties to the lower index, nested masks."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._modules import widened

__all__ = [
    "n_to_prune",
    "kth_smallest",
    "keep_lowest_pruned",
    "expand_channel_mask",
    "expand_kernel_mask",
    "Units",
    "concat",
]


def n_to_prune(sparsity: float, n: int) -> int:
    """How many of ``n`` units a sparsity prunes: ``round(sparsity * n)``, as torch does."""
    return int(round(sparsity * n))


def _selectable(scores: torch.Tensor) -> torch.Tensor:
    # kthvalue has no half-precision CPU kernel; float32 holds every half/bfloat16 value exactly.
    return widened(scores)


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


def expand_channel_mask(unit_keep: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Broadcast a per-output-channel mask of shape ``(out,)`` to a weight of ``shape``."""
    return unit_keep.view(-1, *([1] * (len(shape) - 1))).expand(shape).clone()


def expand_kernel_mask(unit_keep: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Broadcast a per-kernel mask of shape ``(out, in)`` to a 4-D conv weight."""
    return unit_keep[:, :, None, None].expand(shape).clone()


class Units:
    """How a granularity groups a weight into units and expands unit masks back."""

    @staticmethod
    def count(weight: torch.Tensor, granularity: str) -> int:
        if granularity == "weight":
            return weight.numel()
        if granularity == "channel":
            return weight.shape[0]
        return weight.shape[0] * weight.shape[1]

    @staticmethod
    def pruned(keep: torch.Tensor, granularity: str) -> torch.Tensor:
        """Units whose every entry is masked, shaped like the unit scores."""
        if granularity == "weight":
            return ~keep
        if granularity == "channel":
            return ~keep.reshape(keep.shape[0], -1).any(dim=1)
        return ~keep.any(dim=3).any(dim=2)

    @staticmethod
    def expand(unit_keep: torch.Tensor, shape: torch.Size, granularity: str) -> torch.Tensor:
        if granularity == "weight":
            return unit_keep.view(shape)
        if granularity == "channel":
            return expand_channel_mask(unit_keep, shape)
        return expand_kernel_mask(unit_keep.view(shape[0], shape[1]), shape)




def concat(tensors: list) -> tuple[torch.Tensor, Callable[[torch.Tensor], list]]:
    """One flat tensor of all ``tensors`` (common dtype, first tensor's device) and its inverse.

    The dtype is ``torch.promote_types`` over all inputs (so every value survives). The
    inverse, ``split(values)``, maps a flat tensor of the same length (scores, a keep-mask:
    any dtype, kept) back to one tensor per input, each with its input's shape and
    device: what global scope needs to rank the units of all layers together.
    Inputs are not modified.
    """
    if not tensors:
        raise ValueError("concat needs at least one tensor")
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    device = tensors[0].device
    flat = torch.cat([t.reshape(-1).to(device=device, dtype=dtype) for t in tensors])
    shapes = [(t.shape, t.device) for t in tensors]
    sizes = [s.numel() for s, _ in shapes]

    def split(values: torch.Tensor) -> list:
        if values.dim() != 1 or values.numel() != flat.numel():
            raise ValueError(f"split expects a 1-D tensor of {flat.numel()} entries, "
                             f"got shape {tuple(values.shape)}")
        return [p.reshape(s).to(d) for p, (s, d) in zip(values.split(sizes), shapes)]

    return flat, split

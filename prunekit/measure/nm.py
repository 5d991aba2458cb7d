"""Storage of N:M semi-structured sparsity: kept values plus their positions in each group."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._validation import check_int, check_pattern, check_weight, invalid
from ..reparam import effective_tensor
from ..targets import targets

__all__ = ["nm_storage_bits", "follows_pattern"]


def _groups(t: torch.Tensor, m: int, in_dim: int, out_dim: int) -> torch.Tensor:
    rows = t.movedim(out_dim, 0)
    return rows.movedim(1, -1).reshape(-1, m)


def follows_pattern(weight: torch.Tensor, pattern, *, out_dim: int = 0) -> bool:
    """Whether every group of M consecutive inputs of ``weight`` holds at most N non-zeros.

    Groups as :func:`prunekit.nm_mask` forms them (along the input dimension; a conv
    weight's input channels at each kernel position).
    """
    n, m = check_pattern(pattern, "follows_pattern")
    check_weight(weight, "follows_pattern", min_ndim=2, finite=False)
    in_dim = 1 if out_dim == 0 else 0
    if weight.shape[in_dim] % m:
        return False
    return bool((_groups(weight != 0, m, in_dim, out_dim).sum(-1) <= n).all())


def nm_storage_bits(weight_or_model, pattern="2:4", *, value_bits: int = 16) -> int:
    """Bits to store weights in NVIDIA's N:M format: ``N`` values and ``N`` positions per group.

    Each group of ``M`` consecutive inputs stores its ``N`` kept values (``value_bits`` each,
    16 for the float16/bfloat16 that the sparse tensor cores take) and, for each, its position
    in the group (``ceil(log2 M)`` bits: the 2-bit metadata of 2:4). 2:4 at 16 bits thus
    costs ``2*16 + 2*2 = 36`` bits per 4 weights, 0.5625 of dense; the format stores a kept
    zero like any other value, so sparsity beyond ``1 - N/M`` saves nothing.

    Args:
        weight_or_model: a ``(out, in, ...)`` weight, or a model: every prunable tensor
            (``prunekit.targets.targets``, read with its mask); a tensor that does not
            follow the pattern (or whose input dimension ``M`` does not divide) is counted
            dense, ``numel * value_bits``.
        pattern: ``"N:M"`` or ``(N, M)``.
        value_bits: bits per stored value.

    Returns:
        The number of bits.

    Raises:
        ValueError: for a weight tensor that does not follow the pattern.

    Examples:
        >>> import torch, prunekit as pk
        >>> w = torch.tensor([[1., 0., 2., 0., 0., 3., 0., 4.]])
        >>> pk.measure.nm_storage_bits(w, "2:4")   # 2 groups x 2 x (16 + 2)
        72
    """
    caller = "nm_storage_bits"
    n, m = check_pattern(pattern, caller)
    value_bits = check_int(value_bits, caller, "value_bits", minimum=1)
    per_group = n * (value_bits + math.ceil(math.log2(m)))
    if isinstance(weight_or_model, nn.Module):
        total = 0
        for t in targets(weight_or_model):
            w = effective_tensor(t.module, t.tensor)
            if w.dim() >= 2 and follows_pattern(w, (n, m), out_dim=t.layout.out_dim):
                total += (w.numel() // m) * per_group
            else:
                total += w.numel() * value_bits
        return total
    w = check_weight(weight_or_model, caller, min_ndim=2, finite=False)
    if not follows_pattern(w, (n, m)):
        raise invalid(ValueError, "weight_or_model", caller,
                      f"a weight with at most {n} non-zeros in every group of {m} inputs",
                      "one that does not follow the pattern")
    return (w.numel() // m) * per_group

"""Exact-count selection: which units to prune, ties to the lower index, nested masks."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._arrays import NUMPY, NumpyOps, TorchOps, numpy_ok
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
_CHUNK = 1 << 16   # entries per block on the CPU: a block and its temporaries stay in cache
_SIGMAS = 6.0      # the sampled bracket spans this many standard deviations of rank each side
_SLACK = 32        # plus this many sample ranks
_FORCE_TORCH = False  # tests set it to run the torch code path on the CPU


def _ops(flat: torch.Tensor) -> NumpyOps | TorchOps:
    """NumPy for CPU float32/float64 values (on views of torch's memory), torch elsewhere.

    NumPy's comparisons, counts and ``flatnonzero`` are SIMD loops several times faster
    than torch's CPU kernels for the same job (``torch.masked_select`` on 16 M entries
    takes longer than NumPy's whole selection), and ``np.partition`` (introselect) has
    no quadratic case. No data is copied or moved: ``Tensor.numpy()`` shares memory.
    Other devices (CUDA) run the same steps in torch, on the device.

    The steps below are written once against these operations (``prunekit._arrays``,
    shared with the k-means solver); the ufuncs are passed through, so the Python-level
    dispatch is one attribute read per block. On 4096 x 4096 at sparsity 0.9, 2 threads,
    timed alternately with the NumPy/torch twins it replaced: 0.96-0.98x their time.
    """
    return NUMPY if not _FORCE_TORCH and numpy_ok(flat) else TorchOps(flat.device)


def _bracket(ops, x, k: int, absolute: bool):
    """Bounds ``lo <= k-th smallest <= hi`` from a strided sample, with overwhelming probability.

    ``x`` is a 1-D array of ``ops``. The sample's order statistics around rank ``k/n``,
    widened by ``_SIGMAS`` standard deviations of their rank (plus ``_SLACK``), give the
    bounds; ``None`` is an open end. The caller checks the counts, so a miss (an
    adversarial order) costs time, never exactness.
    """
    n = x.shape[0]
    sample = x[:: n // _SAMPLE]
    sample = ops.sort(ops.absolute(sample) if absolute else sample)
    m = sample.shape[0]
    q = k / n
    margin = int(_SIGMAS * (m * q * (1.0 - q)) ** 0.5) + _SLACK
    lo_rank, hi_rank = int(q * m) - margin, int(q * m) + margin
    lo = ops.item(sample[min(lo_rank, m - 1)]) if lo_rank >= 0 else None
    hi = ops.item(sample[max(hi_rank, 0)]) if hi_rank < m else None
    return lo, hi


def _pass(ops, x, lo, hi, absolute: bool, keep):
    """One blocked read of ``x``: entries below ``lo`` counted, entries in ``[lo, hi]`` gathered.

    Returns ``(below, values, index)``: how many (absolute) values are ``< lo``, and the
    values in the bracket with their flat indices (increasing). ``keep``, when given, is
    filled with ``value > hi`` (the entries certainly kept); ``index`` is then computed.
    Each block is read once; its temporaries (``|x|``, one bool buffer) are reused. Off
    the CPU the whole tensor is one block.
    """
    n = x.shape[0]
    chunk = min(_CHUNK, n) if ops.device.type == "cpu" else n
    absbuf = ops.empty(chunk, x) if absolute else None
    inside = ops.bools(chunk)
    above = ops.bools(chunk) if keep is None else None
    below, values, index = 0, [], []
    for start in range(0, n, chunk):
        block = x[start:start + chunk]
        size = block.shape[0]
        if absolute:
            block = ops.absolute(block, out=absbuf[:size])
        out = inside[:size]
        if lo is None:
            out[:] = False
        else:
            ops.less(block, lo, out=out)
            below += ops.count_nonzero(out)
        if hi is not None:
            gt = keep[start:start + size] if keep is not None else above[:size]
            ops.greater(block, hi, out=gt)
            ops.logical_or(out, gt, out=out)
        elif keep is not None:
            keep[start:start + size] = False
        ops.logical_not(out, out=out)  # lo <= value <= hi
        if keep is None:
            values.append(block[out])
        else:
            at = ops.flatnonzero(out)
            values.append(block[at])
            at += start
            index.append(at)
    return below, ops.cat(values), (ops.cat(index) if keep is not None else None)


def _select(ops, flat: torch.Tensor, k: int, absolute: bool, keep):
    """``(threshold, n_at_or_below, values, index)`` for the k-th smallest, 1 <= k <= n.

    ``flat`` is 1-D and selectable (float32/float64 after widening); ``absolute`` ranks
    ``|flat|`` without materialising it. A sampled bracket (large inputs) narrows the
    candidates to a small fraction; small inputs, or a bracket that misses, bracket the
    exact k-th value itself, so the result is always exact.
    """
    x = ops.asarray(flat.detach())
    if x.shape[0] > 4 * _SAMPLE:
        lo, hi = _bracket(ops, x, k, absolute)
        below, values, index = _pass(ops, x, lo, hi, absolute, keep)
        if below < k <= below + values.shape[0]:
            return _finish(ops, values, k - below, below, index)
    # exact k-th value first (one selection, over a copy for NumPy), then one pass with lo = hi = it
    exact = ops.item(ops.kth(ops.absolute(x) if absolute else x, k))
    below, values, index = _pass(ops, x, exact, exact, absolute, keep)
    return _finish(ops, values, k - below, below, index)


def _finish(ops, values, kk: int, below: int, index):
    threshold = ops.kth(values, kk)
    return threshold, below + ops.count_nonzero(values <= threshold), values, index


def kth_smallest(flat: torch.Tensor, k: int) -> tuple[torch.Tensor, int]:
    """The k-th smallest value (1-based) of a 1-D tensor, and how many entries are <= it.

    ``torch.kthvalue`` copies and partitions the whole tensor. For large tensors we first
    bracket the answer with a deterministic strided sample: the sample's order statistics
    around rank ``k/n`` give bounds ``lo <= answer <= hi`` with overwhelming probability.
    Counting the entries below ``lo`` and selecting inside the (small) bracket is then
    exact. If the bracket misses (adversarial orderings), the exact value is selected over
    the whole tensor, so the result is always exact; only the speed depends on the data.
    The value is a 0-d tensor of ``flat``'s dtype on its device.
    """
    work = _selectable(flat.reshape(-1))
    threshold, n_le, _, _ = _select(_ops(work), work, k, False, None)
    return torch.as_tensor(threshold, device=flat.device).to(flat.dtype), n_le


def keep_lowest_pruned(scores: torch.Tensor, n_prune: int, *, absolute: bool = False) -> torch.Tensor:
    """Flat bool mask that prunes exactly ``n_prune`` lowest scores (ties: lower index first).

    ``scores`` may contain ``-inf`` (units that must be pruned first, e.g. already pruned
    ones). It must not contain NaN; callers validate that. With ``absolute=True`` the
    scores are ``|scores|``, computed block by block and never stored whole (what
    :func:`prunekit.magnitude_mask` ranks by). ``scores`` is never modified.

    Cost on large tensors: one blocked read of ``scores`` that writes the mask of the
    entries above a sampled bracket and gathers the few inside it (about 1.5 % at
    sparsity 0.9), then a selection among those and a scatter; no full-size temporary.
    """
    flat = _selectable(scores.detach().reshape(-1))
    n = flat.numel()
    if n_prune <= 0:
        return torch.ones(n, dtype=torch.bool, device=flat.device)
    if n_prune >= n:
        return torch.zeros(n, dtype=torch.bool, device=flat.device)
    ops = _ops(flat)
    keep = ops.bools(n)
    threshold, n_le, values, index = _select(ops, flat, n_prune, absolute, keep)
    # keep holds value > hi; of the candidates keep those above the threshold, and of the
    # ties at the threshold the highest-index surplus (so the lowest-index ones are pruned)
    keep[index[values > threshold]] = True
    surplus = n_le - n_prune
    if surplus > 0:
        tied = index[values == threshold]
        keep[tied[tied.shape[0] - surplus:]] = True
    return ops.tensor(keep)


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

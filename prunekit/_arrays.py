"""The array operations the 1-D k-means and the exact selection run on: NumPy for CPU tensors, torch elsewhere."""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["NumpyOps", "TorchOps", "NUMPY", "numpy_ok"]

_LUT_MIN = 1 << 16   # from this many values, labels come from a 65,536-bin lookup table
_SLAB = 1 << 16      # values per slab when NumPy computes chunk sums (stays in cache)


def numpy_ok(flat: torch.Tensor) -> bool:
    """Whether NumPy can work on ``flat``'s memory as it is: a CPU float32/float64 tensor.

    NumPy's comparisons, counts and ``flatnonzero`` are SIMD loops several times faster
    than torch's CPU kernels for the same jobs, and ``Tensor.numpy()`` copies nothing.
    """
    return flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64)


class NumpyOps:
    """NumPy arrays on views of CPU tensors' memory: no copy, no thread pool to wake."""

    inf = math.inf

    @staticmethod
    def asarray(t: torch.Tensor) -> np.ndarray:
        return t.numpy()

    @staticmethod
    def tensor(a) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    @staticmethod
    def sort(a: np.ndarray) -> np.ndarray:
        return np.sort(a, kind="quicksort")

    @staticmethod
    def ints(values) -> np.ndarray:
        return np.asarray(values, dtype=np.int64)

    @staticmethod
    def arange(n: int) -> np.ndarray:
        return np.arange(n, dtype=np.int64)

    @staticmethod
    def full(n: int, value, like: np.ndarray) -> np.ndarray:
        return np.full(n, value, dtype=like.dtype)

    @staticmethod
    def empty(n: int, like: np.ndarray) -> np.ndarray:
        return np.empty(n, dtype=like.dtype)

    @staticmethod
    def linspace(start: float, stop: float, steps: int) -> np.ndarray:
        return np.linspace(start, stop, steps)

    @staticmethod
    def f64(a) -> np.ndarray:
        return np.asarray(a, dtype=np.float64)

    @staticmethod
    def i64(a) -> np.ndarray:
        return np.asarray(a).astype(np.int64)

    @staticmethod
    def cat(parts, axis: int = 0) -> np.ndarray:
        return np.concatenate(parts, axis)

    device = torch.device("cpu")

    @staticmethod
    def bools(n: int) -> np.ndarray:
        return np.empty(n, dtype=bool)

    @staticmethod
    def kth(a: np.ndarray, k: int):
        """The k-th smallest entry (1-based) of a 1-D array; ``a`` is not modified."""
        return np.partition(a, k - 1)[k - 1]

    @staticmethod
    def item(value):
        return value

    # elementwise, with ``out=``: the same call for NumPy and torch
    absolute = staticmethod(np.abs)
    less = staticmethod(np.less)
    greater = staticmethod(np.greater)
    logical_or = staticmethod(np.logical_or)
    logical_not = staticmethod(np.logical_not)
    where = staticmethod(np.where)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)
    repeat = staticmethod(np.repeat)
    flatnonzero = staticmethod(np.flatnonzero)
    unique = staticmethod(np.unique)

    @staticmethod
    def cumsum(a: np.ndarray, axis: int) -> np.ndarray:
        return np.cumsum(a, axis)

    @staticmethod
    def windows(a: np.ndarray, width: int) -> np.ndarray:
        """Read-only view of every ``width`` consecutive entries along the last axis."""
        shape = (*a.shape[:-1], a.shape[-1] - width + 1, width)
        view = np.ndarray(shape, a.dtype, a, 0, (*a.strides, a.strides[-1]))
        view.flags.writeable = False
        return view

    @staticmethod
    def count_nonzero(a: np.ndarray) -> int:
        return int(np.count_nonzero(a))

    @staticmethod
    def equal(a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.array_equal(a, b))

    @staticmethod
    def segment_min(values: np.ndarray, starts: np.ndarray, seg: np.ndarray, n_seg: int) -> np.ndarray:
        """Minimum of each run ``values[starts[i]:starts[i+1]]`` (runs are non-empty)."""
        return np.minimum.reduceat(values, starts)

    @staticmethod
    def count_le(sorted_values: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Number of sorted values ``<=`` each key (keys of the values' dtype)."""
        return np.searchsorted(sorted_values, keys, side="right")

    @staticmethod
    def round_down(mid: np.ndarray, dtype) -> np.ndarray:
        """Largest value of ``dtype`` ``<=`` each float64 ``mid``: ``x <= mid`` iff ``x <= result``."""
        if dtype == np.float64:
            return mid
        r = mid.astype(dtype)
        return np.where(r > mid, np.nextafter(r, dtype.type(-np.inf)), r)

    @staticmethod
    def chunk_sums(vs: np.ndarray, shift: float, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Per chunk of ``b`` values (the last may be shorter): sum of ``v`` and of ``v**2``,
        ``v = vs - shift`` in float64. Works slab by slab, so no float64 copy of ``vs``."""
        n = vs.size
        full = n // b * b
        n_chunks = -(-n // b)
        sums, squares = np.empty(n_chunks), np.empty(n_chunks)
        slab = max(b, _SLAB // b * b)
        buf = np.empty(min(slab, full))
        for s in range(0, full, slab):
            e = min(full, s + slab)
            x = np.subtract(vs[s:e], shift, out=buf[:e - s], dtype=np.float64).reshape(-1, b)
            np.einsum("ij->i", x, out=sums[s // b:e // b])  # faster than sum() for short rows
            np.einsum("ij,ij->i", x, x, out=squares[s // b:e // b])
        if full < n:
            x = np.subtract(vs[full:], shift, dtype=np.float64)
            sums[-1], squares[-1] = x.sum(), x @ x
        return sums, squares

    @staticmethod
    def window_sums(vs: np.ndarray, start: np.ndarray, length: np.ndarray, shift: float,
                    lanes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sums of ``v`` and ``v**2`` over ``vs[start:start + length]``, ``v = vs - shift``
        (float64), for each start; lengths below ``len(lanes)``, ``lanes = arange(b)``."""
        idx = start[..., None] + lanes
        np.minimum(idx, vs.size - 1, out=idx)
        v = np.subtract(vs[idx], shift, dtype=np.float64)
        v *= lanes < length[..., None]
        return v.sum(-1), np.einsum("...j,...j->...", v, v)

    @staticmethod
    def labels(flat: np.ndarray, mids: np.ndarray) -> np.ndarray:
        """``#{mids < x}`` for each ``x`` (ascending ``mids`` of ``flat``'s dtype), int64.

        Large inputs use a table over the top 16 bits of each value (each bit pattern range
        is an interval of values): one lookup per value, and an exact search only for the
        values whose interval holds a midpoint.
        """
        if flat.size < _LUT_MIN or mids.size == 0:
            return np.searchsorted(mids, flat, side="left").astype(np.int64, copy=False)
        bits = 8 * flat.dtype.itemsize
        utype = np.uint32 if bits == 32 else np.uint64
        low = bits - 16
        b = np.arange(1 << 16, dtype=utype)
        base = b << utype(low)
        top = base | utype((1 << low) - 1)
        negative = b >= (1 << 15)
        lows = np.where(negative, top, base).view(flat.dtype)  # smallest value in each bin
        highs = np.where(negative, base, top).view(flat.dtype)
        table = np.searchsorted(mids, lows, side="left")
        ambiguous = np.searchsorted(mids, highs, side="left") != table
        table = table.astype(np.int64, copy=False)
        bins = flat.view(utype)
        out = np.empty(flat.size, dtype=np.int64)
        slab = min(flat.size, _SLAB * 4)
        idx, hit = np.empty(slab, dtype=np.intp), np.empty(slab, dtype=bool)
        pos = []
        for s in range(0, flat.size, slab):  # slabs keep the bin indices in cache
            e = min(flat.size, s + slab)
            np.right_shift(bins[s:e], low, out=idx[:e - s], dtype=np.intp)
            np.take(table, idx[:e - s], out=out[s:e], mode="wrap")  # "wrap": unbuffered
            np.take(ambiguous, idx[:e - s], out=hit[:e - s], mode="wrap")
            pos.append(np.flatnonzero(hit[:e - s]) + s)
        pos = np.concatenate(pos)
        if pos.size:
            out[pos] = np.searchsorted(mids, flat[pos], side="left")
        return out

    @staticmethod
    def outside(flat: np.ndarray, lo, hi) -> np.ndarray:
        """``flat <= lo or flat > hi`` (a ``None`` bound never holds), as a bool array."""
        keep = np.zeros(flat.shape, dtype=bool) if hi is None else np.greater(flat, hi)
        if lo is not None:
            np.logical_or(keep, np.less_equal(flat, lo), out=keep)
        return keep


class TorchOps:
    """The same operations for torch tensors on ``device`` (e.g. CUDA: nothing leaves it)."""

    inf = math.inf

    def __init__(self, device: torch.device):
        self.device = device

    @staticmethod
    def asarray(t: torch.Tensor) -> torch.Tensor:
        return t

    @staticmethod
    def tensor(a: torch.Tensor) -> torch.Tensor:
        return a

    @staticmethod
    def sort(a: torch.Tensor) -> torch.Tensor:
        return torch.sort(a).values

    def bools(self, n: int) -> torch.Tensor:
        return torch.empty(n, dtype=torch.bool, device=self.device)

    @staticmethod
    def kth(a: torch.Tensor, k: int) -> torch.Tensor:
        """``torch.kthvalue(a, k).values`` without its quadratic worst case.

        torch's CPU ``kthvalue`` takes seconds on a few hundred thousand entries in
        descending order (e.g. ``-arange(n)``). ``topk`` with ``sorted=False`` returns the
        same value (the largest of the k smallest, or the smallest of the n - k + 1
        largest) and has no such case.
        """
        n = a.numel()
        if k <= n - k + 1:
            return torch.topk(a, k, largest=False, sorted=False).values.max()
        return torch.topk(a, n - k + 1, largest=True, sorted=False).values.min()

    @staticmethod
    def item(value: torch.Tensor) -> float:
        return value.item()

    absolute = staticmethod(torch.abs)
    less = staticmethod(torch.lt)
    greater = staticmethod(torch.gt)
    logical_or = staticmethod(torch.logical_or)
    logical_not = staticmethod(torch.logical_not)

    def ints(self, values) -> torch.Tensor:
        return torch.as_tensor(values, dtype=torch.long, device=self.device)

    def arange(self, n: int) -> torch.Tensor:
        return torch.arange(n, device=self.device)

    @staticmethod
    def full(n: int, value, like: torch.Tensor) -> torch.Tensor:
        return torch.full((n,), value, dtype=like.dtype, device=like.device)

    @staticmethod
    def empty(n: int, like: torch.Tensor) -> torch.Tensor:
        return torch.empty((n,), dtype=like.dtype, device=like.device)

    def linspace(self, start: float, stop: float, steps: int) -> torch.Tensor:
        return torch.linspace(start, stop, steps, dtype=torch.float64, device=self.device)

    def f64(self, a) -> torch.Tensor:
        return torch.as_tensor(a, device=self.device).double()

    def i64(self, a) -> torch.Tensor:
        return torch.as_tensor(a, device=self.device).long()

    @staticmethod
    def cat(parts, axis: int = 0) -> torch.Tensor:
        return torch.cat(parts, axis)

    where = staticmethod(torch.where)

    @staticmethod
    def minimum(a: torch.Tensor, b) -> torch.Tensor:
        return torch.minimum(a, b) if isinstance(b, torch.Tensor) else a.clamp(max=b)

    @staticmethod
    def maximum(a: torch.Tensor, b) -> torch.Tensor:
        return torch.maximum(a, b) if isinstance(b, torch.Tensor) else a.clamp(min=b)

    repeat = staticmethod(torch.repeat_interleave)
    unique = staticmethod(torch.unique)

    @staticmethod
    def flatnonzero(a: torch.Tensor) -> torch.Tensor:
        return torch.nonzero(a.reshape(-1)).squeeze(1)

    @staticmethod
    def cumsum(a: torch.Tensor, axis: int) -> torch.Tensor:
        return torch.cumsum(a, axis)

    @staticmethod
    def windows(a: torch.Tensor, width: int) -> torch.Tensor:
        return a.unfold(-1, width, 1)

    @staticmethod
    def count_nonzero(a: torch.Tensor) -> int:
        return int(torch.count_nonzero(a))

    @staticmethod
    def equal(a: torch.Tensor, b: torch.Tensor) -> bool:
        return torch.equal(a, b)

    @staticmethod
    def segment_min(values: torch.Tensor, starts: torch.Tensor, seg: torch.Tensor, n_seg: int) -> torch.Tensor:
        fill = math.inf if values.is_floating_point() else torch.iinfo(values.dtype).max
        out = torch.full((n_seg,), fill, dtype=values.dtype, device=values.device)
        return out.scatter_reduce_(0, seg, values, "amin")

    @staticmethod
    def count_le(sorted_values: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(sorted_values, keys, right=True)

    @staticmethod
    def round_down(mid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if dtype == torch.float64:
            return mid
        r = mid.to(dtype)
        return torch.where(r.double() > mid, torch.nextafter(r, torch.full_like(r, -math.inf)), r)

    @staticmethod
    def chunk_sums(vs: torch.Tensor, shift: float, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = vs.numel()
        full = n // b * b
        v = vs.double() - shift
        sums, squares = v[:full].view(-1, b).sum(1), (v[:full] * v[:full]).view(-1, b).sum(1)
        if full < n:
            tail = v[full:]
            sums = torch.cat([sums, tail.sum().reshape(1)])
            squares = torch.cat([squares, (tail * tail).sum().reshape(1)])
        return sums, squares

    @staticmethod
    def window_sums(vs: torch.Tensor, start: torch.Tensor, length: torch.Tensor, shift: float,
                    lanes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = (start[..., None] + lanes).clamp(max=vs.numel() - 1)
        v = (vs[idx].double() - shift) * (lanes < length[..., None])
        return v.sum(-1), (v * v).sum(-1)

    @staticmethod
    def labels(flat: torch.Tensor, mids: torch.Tensor) -> torch.Tensor:
        return torch.bucketize(flat, mids, right=False)

    @staticmethod
    def outside(flat: torch.Tensor, lo, hi) -> torch.Tensor:
        keep = torch.zeros(flat.shape, dtype=torch.bool, device=flat.device) if hi is None else flat > hi
        if lo is not None:
            keep |= flat <= lo
        return keep


NUMPY = NumpyOps()

"""K-means on weights: fast exact-or-near-exact 1-D k-means, cluster masks, weight sharing.

Three uses of k-means appear in the book (chapter 3):

* :func:`~prunekit.kmeans_1d` clusters the values of a tensor (one dimension);
* :func:`~prunekit.kmeans_mask` and ``prune(model, s, method="kmeans")`` prune *whole
  clusters*, the source document's idea with its bugs fixed (``sparsity`` is a fraction of
  weights, sparsity 0 prunes nothing, no per-weight Python loop, deterministic);
* :func:`~prunekit.share_weights` and :func:`~prunekit.compression_report` do what Deep
  Compression (Han, Mao and Dally 2016) really used k-means for: weight sharing, i.e.
  quantising each layer's surviving weights to a small codebook, fine-tuning the shared
  values, and counting bits.

``prunekit.kmeans.source_kmeans_mask`` keeps the source document's ``kmeans()`` as it was
written, so the book can show what goes wrong with it. Do not use it for anything else.

**How kmeans_1d works, and why.**
On the real line the clusters of every k-means optimum (and every Lloyd fixed point) are
*intervals* of the sorted values. So everything starts with one sort and float64 prefix
sums of the values and of their squares (shifted by the median, for accuracy). From them
the mean and the sum of squared deviations of any interval cost O(1), and

* a **Lloyd step** costs O(k log n) instead of O(k n): the cluster boundaries are
  ``searchsorted`` of the midpoints between neighbouring centres, the new centres come
  from the prefix sums;
* the **exact optimum** is a dynamic programme over the sorted values (Wang and Song 2011,
  Ckmeans.1d.dp; Gronlund et al. 2017): ``D[j][i] = min_t D[j-1][t] + cost(t, i)``. The
  interval cost is a Monge array, so each row can be computed by divide and conquer in
  O(m log m) for m points (small problems use one dense O(m^2) minimum per row instead).

The DP over all n values would still be too slow for a 4096 x 4096 weight (16.8M values),
so the algorithm is:

1. Sort; count the distinct values ``d`` (``n_clusters`` must not exceed ``d``).
2. If ``d <= 4096``: the DP over the distinct values weighted by their counts. **The
   result is the global optimum** (up to float64 rounding).
3. Otherwise the DP runs on a *summary*: the sorted values cut into about ``24 k`` blocks
   (between 384 and 8192; edges at equal counts and at equal value steps, so that both the
   dense middle and the sparse tails are resolved). Block costs come from the prefix sums
   of the exact data, so this is the best partition whose boundaries lie on block edges.
   Then a **refinement** moves all boundaries together: each boundary gets 128 evenly
   spaced candidate positions in a window around it (first about one cluster wide), an
   exact DP over the candidates picks the best combination, and the windows shrink until
   they hold single values (a final +-64 values). Last, **Lloyd steps** on the exact data
   run to a fixed point; if they move a boundary, refinement and Lloyd run again.
   The result cannot be improved by any Lloyd step nor by moving boundaries jointly by up
   to 64 positions, and is at least as good as the best block-edge partition. It is
   **not proven optimal**: in our checks (normal, Laplace, bimodal, heavy-tailed and
   pruned-weight data, 6,000 and 40,000 values, k from 2 to 128) it was the exact optimum
   in 111 of 120 cases and within 2e-4 (relative) in the rest, which were all heavy-tailed
   data or k >= 32. It beat scikit-learn's ``KMeans(n_init=10)`` in every case we tried
   (``tests/test_kmeans.py``, ``benchmarks/kmeans.py``).
4. For more than 1024 clusters the start is the equal-count quantiles instead of a DP,
   followed by the same refinement and Lloyd steps (a local optimum).

Labels are the index of the nearest returned centre, a value exactly half-way between two
centres going to the lower one. Nothing is random.

Where it runs: everything stays on the input's device. On CUDA all of it is torch. On the
CPU the sorted-value core (sort, prefix sums, DP, refinement, Lloyd) and the final mask
comparisons use NumPy on views of the same memory (no copy, no device transfer), with
results identical to the torch code (the tests run both): NumPy's sort is several times
faster than ``torch.sort`` on the CPU (which always computes an index permutation), and the
DP and Lloyd steps are many operations on small arrays, where NumPy's per-call cost is
lower and no thread pool has to wake up. Validation and labels are torch everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from ._table import format_table
from ._validation import check_choice, check_int, check_sparsity, check_weight
from .masks import n_to_prune
from .prune import (
    PRUNABLE_TYPES,
    Method,
    _check_model,
    _resolve_exclude,
    effective_tensor,
    pruned_tensor_names,
    register_method,
)

__all__ = [
    "kmeans_1d",
    "kmeans_mask",
    "KMeansPruneInfo",
    "source_kmeans_mask",
    "KMeansMethod",
    "share_weights",
    "SharedWeights",
    "SHARING_INITS",
    "compression_report",
    "CompressionReport",
    "LayerCompression",
]

_EXACT_MAX = 4096          # at most this many distinct values: exact DP over all of them
_SUMMARY_PER_CLUSTER = 24  # otherwise the DP runs on about 24 blocks per cluster,
_SUMMARY_MIN = 384         # at least 384 blocks
_SUMMARY_MAX = 8192        # and at most 8192
_DP_MAX_CLUSTERS = 1024    # more clusters: equal-count quantile start (the DP has k rows)
_DENSE_WORK = 1 << 22      # k * m**2 up to this: dense DP rows, beyond: divide and conquer
_REFINE_POINTS = 128       # candidate positions per boundary in each refinement window
_MAX_ITER = 500            # Lloyd steps at most


# --------------------------------------------------------------------------------------
# 1-D k-means on sorted values
# --------------------------------------------------------------------------------------


def _work(flat: torch.Tensor) -> torch.Tensor:
    """The values in a dtype every op here supports (half types widen to float32)."""
    flat = flat.detach().reshape(-1)
    if flat.dtype in (torch.float16, torch.bfloat16):
        return flat.float()
    return flat


def _numpy_backend(flat: torch.Tensor) -> bool:
    """CPU float32/float64 values run the sorted-value core in NumPy (see ``_Sorted``)."""
    return (not _FORCE_TORCH and flat.device.type == "cpu"
            and flat.dtype in (torch.float32, torch.float64))


_FORCE_TORCH = False  # tests set it to run the torch core on the CPU


class _Sorted:
    """Sorted values with float64 prefix sums: the core of every k-means here.

    ``v`` holds the sorted values in float64, shifted by their median (better conditioned
    sums), ``S`` the prefix sums ``S[i] = v[0] + ... + v[i-1]``. Centres and boundaries
    live in the same shifted coordinates until :meth:`centers` shifts them back.

    On the CPU the arrays are NumPy arrays (views of torch's memory where possible; no
    device transfer): ``np.sort`` is many times faster than ``torch.sort``, which always
    computes an index permutation, and the Lloyd loop and the DP run many operations on
    tiny arrays, where NumPy's per-call cost is lower and no thread pool is woken. On
    other devices (CUDA) the same code runs on torch tensors, on the device.
    """

    def __init__(self, flat: torch.Tensor):
        self.dtype, self.device = flat.dtype, flat.device
        self.np = _numpy_backend(flat)
        if self.np:
            self.vs = vs = np.sort(flat.contiguous().numpy(), kind="quicksort")
            self.n = vs.size
            self.shift = float(vs[self.n // 2])
            self.v = np.subtract(vs, self.shift, dtype=np.float64)
            self.S = np.empty(self.n + 1)
            self.S[0] = 0.0
            np.cumsum(self.v, out=self.S[1:])
        else:
            self.vs = vs = torch.sort(flat).values
            self.n = vs.numel()
            self.shift = float(vs[self.n // 2])
            self.v = vs.double() - self.shift
            zero = torch.zeros(1, dtype=torch.float64, device=self.device)
            self.S = torch.cat([zero, torch.cumsum(self.v, 0)])
        self._Q = None

    # -- small backend helpers -----------------------------------------------------------

    def _cat(self, parts):
        return np.concatenate(parts) if self.np else torch.cat(parts)

    def _ints(self, values):
        if self.np:
            return np.asarray(values, dtype=np.int64)
        return torch.as_tensor(values, dtype=torch.long, device=self.device)

    def _where(self, cond, a, b):
        return np.where(cond, a, b) if self.np else torch.where(cond, a, b)

    def _equal(self, a, b) -> bool:
        return bool(np.array_equal(a, b)) if self.np else torch.equal(a, b)

    def _right(self, keys):
        """Number of sorted values <= each key."""
        if self.np:
            return np.searchsorted(self.v, keys, side="right")
        return torch.searchsorted(self.v, keys, right=True)

    def _lin(self, start, stop, steps):
        if self.np:
            return np.linspace(start, stop, steps)
        return torch.linspace(start, stop, steps, dtype=torch.float64, device=self.device)

    # -- the algorithm -------------------------------------------------------------------

    def sizes(self, mids: torch.Tensor) -> torch.Tensor:
        """Cluster sizes (int64 tensor on the input's device) for the boundaries ``mids``."""
        if self.np:
            pos = np.searchsorted(self.vs, mids.cpu().numpy(), side="right")
            return torch.from_numpy(np.diff(np.concatenate([[0], pos, [self.n]]))).to(self.device)
        pos = torch.searchsorted(self.vs, mids.to(self.vs.dtype), right=True)
        return torch.diff(torch.cat([self._ints([0]), pos, self._ints([self.n])]))

    def n_distinct(self) -> int:
        if self.n == 1:
            return 1
        diff = self.vs[1:] != self.vs[:-1]
        return 1 + int(np.count_nonzero(diff) if self.np else torch.count_nonzero(diff))

    def assign(self, c):
        """Partition boundaries (k+1 indices into the sorted values) of the nearest centres."""
        inner = self._right((c[:-1] + c[1:]) * 0.5)
        return self._cat([self._ints([0]), inner, self._ints([self.n])])

    def means(self, bounds, previous=None):
        """Means of the clusters ``bounds`` describe; empty ones keep ``previous``."""
        counts = bounds[1:] - bounds[:-1]
        sums = self.S[bounds[1:]] - self.S[bounds[:-1]]
        c = sums / (np.maximum(counts, 1) if self.np else counts.clamp(min=1))
        if previous is not None:
            c = self._where(counts > 0, c, previous)
        return c

    def lloyd(self, bounds, centers=None):
        """Lloyd steps from a partition until it stops changing (at most ``_MAX_ITER``)."""
        c = self.means(bounds, centers)
        for _ in range(_MAX_ITER):
            new = self.assign(c)
            if self._equal(new, bounds):
                break
            bounds = new
            c = self.means(bounds, c)
        return c

    def centers(self, c) -> torch.Tensor:
        """Shifted float64 centres back to a torch tensor (float64) on the input's device."""
        c = c + self.shift
        return torch.from_numpy(np.ascontiguousarray(c)).to(self.device) if self.np else c

    def from_values(self, c0: torch.Tensor):
        """Shifted backend array of explicit centres (for the initialisations)."""
        c0 = c0.double() - self.shift
        return c0.cpu().numpy() if self.np else c0.to(self.device)

    def quantile_values(self, q: torch.Tensor) -> torch.Tensor:
        """Values (unshifted float64) at fractional positions ``q`` of the sorted data."""
        idx = (q * (self.n - 1)).round().long()
        if self.np:
            return torch.from_numpy(self.v[idx.cpu().numpy()] + self.shift)
        return self.v[idx.to(self.device)] + self.shift

    @property
    def Q(self):
        """Prefix sums of the squared (shifted) values, computed when first needed."""
        if self._Q is None:
            if self.np:
                self._Q = np.empty(self.n + 1)
                self._Q[0] = 0.0
                np.cumsum(np.square(self.v), out=self._Q[1:])
            else:
                zero = torch.zeros(1, dtype=torch.float64, device=self.device)
                self._Q = torch.cat([zero, torch.cumsum(self.v * self.v, 0)])
        return self._Q

    def cost(self, a, b):
        """Sum of squared deviations of the sorted values ``[a, b)`` (broadcast); inf if empty."""
        cnt = b - a
        s = self.S[b] - self.S[a]
        q = self.Q[b] - self.Q[a]
        if self.np:
            with np.errstate(divide="ignore", invalid="ignore"):
                c = q - s * s / cnt
            return np.where(cnt > 0, np.maximum(c, 0.0), np.inf)
        c = q - s * s / cnt
        return torch.where(cnt > 0, c.clamp_min(0.0), math.inf)

    def solve(self, k: int, n_distinct: int):
        """Shifted float64 centres of k-means with ``2 <= k <= n_distinct`` clusters."""
        bounds, exact, radius = self.start(k, n_distinct)
        if exact:  # the global optimum: a Lloyd fixed point, this only recomputes the means
            return self.lloyd(bounds)
        for _ in range(4):
            bounds = self.refine(bounds, radius)
            c = self.lloyd(bounds)
            after = self.assign(c)
            moved = int((np.abs(after - bounds) if self.np else (after - bounds).abs()).max())
            if moved == 0:
                break
            bounds, radius = after, 2 * moved + 8
        return c

    def start(self, k: int, n_distinct: int):
        """Start partition: the DP on the distinct values (exact) or on a block summary.

        Returns ``(bounds, exact, radius)``: ``bounds`` indexes the sorted values,
        ``radius`` is the window (in values) :meth:`refine` searches around each boundary.
        """
        m_max = _summary_points(k)
        v, n = self.v, self.n
        if n_distinct <= max(m_max, _EXACT_MAX) and k <= _DP_MAX_CLUSTERS:
            # blocks = runs of equal values: the DP over them is the exact optimum
            vs = self.vs
            if self.np:
                edges = np.concatenate([[0], np.flatnonzero(vs[1:] != vs[:-1]) + 1, [n]])
            else:
                inner = torch.nonzero(vs[1:] != vs[:-1]).squeeze(1) + 1
                edges = torch.cat([self._ints([0]), inner, self._ints([n])])
            exact = True
        elif k <= _DP_MAX_CLUSTERS and m_max < n_distinct:
            # blocks at equal counts (3/4 of them) and at equal value steps (1/4)
            by_count = self._lin(0, n, m_max * 3 // 4 + 1)
            lo, hi = float(v[0]), float(v[-1])
            by_value = self._right(self._lin(lo, hi, m_max // 4 + 1)[1:-1])
            if self.np:
                edges = np.unique(np.concatenate([np.round(by_count).astype(np.int64), by_value]))
            else:
                edges = torch.unique(torch.cat([by_count.round().long(), by_value]))
            exact = False
        else:  # too many clusters for the DP: start from equal-count quantiles
            edges = self._ints(np.round(np.linspace(0, n, k + 1)).astype(np.int64))
            return edges, False, 2 * (-(-n // k))
        radius = max(2 * int((edges[1:] - edges[:-1]).max()), -(-n // k))
        if self.np:
            W = torch.from_numpy(edges.astype(np.float64))
            cut = _dp(W, torch.from_numpy(self.S[edges]), torch.from_numpy(self.Q[edges]), k)
            return edges[cut.numpy()], exact, radius
        cut = _dp(edges.double(), self.S[edges], self.Q[edges], k)
        return edges[cut.to(self.device)], exact, radius

    def refine(self, bounds, radius: int):
        """Best partition with each boundary within ``radius`` values of its current place.

        Coarse to fine: each boundary gets ``_REFINE_POINTS`` evenly spaced candidate
        positions in its window, an exact DP over the candidates (k-1 small matrices)
        picks the best combination, and the window shrinks around it until the spacing
        is one value. A boundary that ends on the edge of its window is searched again
        around its new place.
        """
        k, n = len(bounds) - 1, self.n
        r = max(1, int(radius))
        for _ in range(16):
            stride = max(1, -(-2 * r // _REFINE_POINTS))
            half = r // stride
            inner = bounds[1:-1]
            if self.np:
                offsets = np.arange(-half, half + 1) * stride
                cand = np.clip(inner[:, None] + offsets[None, :], 1, n - 1)
            else:
                offsets = torch.arange(-half, half + 1, device=self.device) * stride
                cand = (inner[:, None] + offsets[None, :]).clamp(1, n - 1)
            D = self.cost(0, cand[0])
            args = []
            for j in range(1, k - 1):
                T = D[:, None] + self.cost(cand[j - 1][:, None], cand[j][None, :])
                arg = T.argmin(0) if self.np else torch.argmin(T, 0)
                cols = np.arange(T.shape[1]) if self.np else torch.arange(T.shape[1], device=self.device)
                D = T[arg, cols]
                args.append(arg)
            pick = [int((D + self.cost(cand[k - 2], n)).argmin())]
            for arg in reversed(args):
                pick.append(int(arg[pick[-1]]))
            new_inner = cand[self._ints(list(range(k - 1))), self._ints(pick[::-1])]
            moved = int((np.abs(new_inner - inner) if self.np else (new_inner - inner).abs()).max())
            bounds = self._cat([self._ints([0]), new_inner, self._ints([n])])
            if stride == 1 and moved < half:
                break
            if stride > 1:
                r = max(2 * stride, _REFINE_POINTS // 2)
        return bounds


def _summary_points(k: int) -> int:
    """Number of blocks the DP summarises large inputs into, for k clusters."""
    return min(_SUMMARY_MAX, max(_SUMMARY_MIN, _SUMMARY_PER_CLUSTER * k))


def _dp(W: torch.Tensor, S: torch.Tensor, Q: torch.Tensor, k: int) -> torch.Tensor:
    """Optimal split of m weighted points (given as prefix sums) into k intervals.

    ``W``, ``S``, ``Q``: float64 prefix sums (length m+1) of counts, values and squares.
    Returns the k+1 cut positions ``0 = b_0 < ... < b_k = m``.

    ``D[j][i] = min_t D[j-1][t] + cost(t, i)``, the cost of an interval being its sum of
    squared deviations. Small problems (``k * m**2 <= 2**22``) compute each row as one
    dense ``(m+1) x (m+1)`` minimum. Otherwise: the interval cost satisfies the quadrangle
    (Monge) inequality, so the smallest minimising ``t`` never decreases as ``i`` grows,
    and each row ``j`` is computed by divide and conquer (the middle ``i`` first; its ``t`` bounds both halves)
    in O(m log m) instead of O(m^2) (Wang and Song 2011; Gronlund et al. 2017). The
    recursion runs breadth-first: one vectorised step per level, all segments at once.
    On the CPU it runs in NumPy (small arrays: a few hundred operations, no thread pool).
    """
    m = W.numel() - 1
    if k == 1:
        return torch.tensor([0, m], device=W.device)
    dense = k * (m + 1) ** 2 <= _DENSE_WORK  # small problems: one dense min per row is faster
    if W.device.type == "cpu":
        W, S, Q = W.numpy(), S.numpy(), Q.numpy()
        args = _dp_dense_numpy(W, S, Q, k) if dense else _dp_rows(W, S, Q, k, _NumpyOps)
    else:
        args = _dp_dense_torch(W, S, Q, k) if dense else _dp_rows(W, S, Q, k, _TorchOps(W.device))
    cuts = [m]
    for arg in reversed(args):
        cuts.append(int(arg[cuts[-1]]))
    cuts.append(0)
    return torch.tensor(cuts[::-1], device=W.device)


def _dense_cost(W, S, Q, xp):
    """``C[i, t]`` = cost of the interval ``(t, i]``, infinite unless ``t < i``."""
    dW = W[:, None] - W[None, :]
    dS = S[:, None] - S[None, :]
    if xp is np:
        with np.errstate(divide="ignore", invalid="ignore"):
            C = (Q[:, None] - Q[None, :]) - dS * dS / dW
        return np.where(dW > 0, C, np.inf)
    C = (Q[:, None] - Q[None, :]) - dS * dS / dW
    return torch.where(dW > 0, C, math.inf)


def _dp_dense_numpy(W, S, Q, k: int) -> list:
    C = _dense_cost(W, S, Q, np)
    m = W.size - 1
    D = C[:, 0].copy()  # one cluster: the interval (0, i]
    rows = np.arange(m + 1)
    args = []
    for _ in range(2, k):
        T = D[None, :] + C
        arg = np.argmin(T, axis=1)  # the first minimum: the smallest t
        D = T[rows, arg]
        args.append(arg)
    last = np.zeros(m + 1, dtype=np.int64)
    last[m] = np.argmin(D + C[m])  # the last row only needs i = m
    return [*args, last]


def _dp_dense_torch(W, S, Q, k: int) -> list:
    C = _dense_cost(W, S, Q, torch)
    m = W.numel() - 1
    D = C[:, 0].clone()
    args = []
    for _ in range(2, k):
        D, arg = torch.min(D[None, :] + C, dim=1)
        args.append(arg)
    last = torch.zeros(m + 1, dtype=torch.long, device=W.device)
    last[m] = torch.argmin(D + C[m])
    return [*args, last]


class _NumpyOps:
    """The few array operations :func:`_dp_rows` needs, for NumPy arrays."""

    arange = staticmethod(np.arange)
    cat = staticmethod(np.concatenate)
    repeat = staticmethod(np.repeat)
    minimum = staticmethod(np.minimum)
    where = staticmethod(np.where)
    cumsum = staticmethod(np.cumsum)

    @staticmethod
    def full(n, value, like):
        return np.full(n, value, dtype=like.dtype)

    @staticmethod
    def segment_min(values, starts, seg, n_seg):
        return np.minimum.reduceat(values, starts)

    @staticmethod
    def ints(values):
        return np.asarray(values, dtype=np.int64)


class _TorchOps:
    """The same operations for torch tensors on ``device``."""

    def __init__(self, device):
        self.device = device

    def arange(self, n):
        return torch.arange(n, device=self.device)

    cat = staticmethod(torch.cat)
    minimum = staticmethod(torch.minimum)
    where = staticmethod(torch.where)

    @staticmethod
    def cumsum(x):
        return torch.cumsum(x, 0)

    @staticmethod
    def repeat(x, counts):
        return torch.repeat_interleave(x, counts)

    @staticmethod
    def full(n, value, like):
        return torch.full((n,), value, dtype=like.dtype, device=like.device)

    @staticmethod
    def segment_min(values, starts, seg, n_seg):
        fill = torch.inf if values.is_floating_point() else torch.iinfo(values.dtype).max
        out = torch.full((n_seg,), fill, dtype=values.dtype, device=values.device)
        return out.scatter_reduce_(0, seg, values, "amin")

    def ints(self, values):
        return torch.as_tensor(values, dtype=torch.long, device=self.device)


def _dp_rows(W, S, Q, k: int, ops) -> list:
    """Rows 2..k of the DP by monotone divide and conquer; returns their argmin tables."""
    m = W.shape[0] - 1
    big = m + 1

    def cost(t, i):
        s = S[i] - S[t]
        return (Q[i] - Q[t]) - s * s / (W[i] - W[t])

    rows = ops.arange(m + 1)
    D = ops.full(m + 1, math.inf, W)
    D[1:] = cost(0, rows[1:])  # one cluster: the interval (0, i]
    args = []
    for j in range(2, k + 1):
        hi = m - (k - j)
        lo = m if j == k else j  # the last row only needs i = m
        new = ops.full(m + 1, math.inf, W)
        arg = ops.full(m + 1, 0, rows)
        ilo, ihi, tlo, thi = ops.ints([lo]), ops.ints([hi]), ops.ints([j - 1]), ops.ints([hi - 1])
        while ilo.shape[0]:
            mid = (ilo + ihi) // 2
            top = ops.minimum(thi, mid - 1)
            length = top - tlo + 1
            starts = ops.cumsum(length) - length
            n_seg = ilo.shape[0]
            seg = ops.repeat(ops.arange(n_seg), length)
            t = ops.arange(seg.shape[0]) - starts[seg] + tlo[seg]
            val = D[t] + cost(t, mid[seg])
            best_val = ops.segment_min(val, starts, seg, n_seg)
            best = ops.segment_min(ops.where(val == best_val[seg], t, big), starts, seg, n_seg)
            new[mid] = best_val
            arg[mid] = best
            left, right = ilo < mid, mid < ihi
            ilo, ihi, tlo, thi = (
                ops.cat([ilo[left], mid[right] + 1]), ops.cat([mid[left] - 1, ihi[right]]),
                ops.cat([tlo[left], best[right]]), ops.cat([best[left], thi[right]]),
            )
        D = new
        args.append(arg)
    return args


def _round_down(mid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Largest value of ``dtype`` <= each float64 ``mid``: ``x <= mid`` iff ``x <= result``."""
    if dtype == torch.float64:
        return mid
    r = mid.to(dtype)
    return torch.where(r.double() > mid, torch.nextafter(r, torch.full_like(r, -math.inf)), r)


def _midpoints(centers: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Decision boundaries between ascending centres, rounded down to ``dtype``.

    ``x`` (of ``dtype``) belongs to cluster ``j`` iff ``mid[j-1] < x <= mid[j]``: the
    nearest centre, a value exactly half-way going to the lower one.
    """
    c = centers.double()
    return _round_down((c[:-1] + c[1:]) * 0.5, dtype)


def _labels(flat: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre (ascending ``centers``), ties to the lower index."""
    return torch.bucketize(flat, _midpoints(centers, flat.dtype), right=False)


def _cluster_values(flat: torch.Tensor, k: int, caller: str, what: str):
    """float64 centres (ascending, on flat's device) of k-means on 1-D work values.

    Returns ``(centers, sorted)``; ``sorted`` is the :class:`_Sorted` of the values.
    """
    srt = _Sorted(flat)
    d = srt.n_distinct()
    if k > d:
        raise ValueError(
            f"The 'n_clusters' parameter of {caller} must be <= the number of distinct values "
            f"in {what} ({d}). Got {k} instead."
        )
    if k == 1:
        return srt.centers(srt.means(srt._ints([0, srt.n]))), srt
    return srt.centers(srt.solve(k, d)), srt


def _fit(x: torch.Tensor, k: int, caller: str, what: str):
    """Cluster the (validated) values of ``x``.

    Returns ``(flat, centers, sizes, mids)``: the flattened work values, the centres in
    x's dtype, the cluster sizes (int64) and the decision boundaries (:func:`_midpoints`).
    Sizes come from the sorted values (O(k log n)), not from a pass over the labels.
    """
    flat = _work(x)
    c64, srt = _cluster_values(flat, k, caller, what)
    centers = c64.to(x.dtype)
    mids = _midpoints(centers, flat.dtype)
    return flat, centers, srt.sizes(mids), mids


def kmeans_1d(x: torch.Tensor, n_clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K-means of the values of a tensor (one dimension): sorted, fast, deterministic.

    Minimises the inertia ``sum_i (x_i - centers[labels_i])**2``. With at most 4096
    distinct values the result is the exact global optimum (a dynamic programme over the
    sorted values). With more, the same DP runs on a summary of the data and the result is
    refined on the exact values (jointly moving boundaries, then Lloyd steps): not proven
    optimal, but in our checks the optimum or within 2e-4 of it, and never worse than
    scikit-learn's ``KMeans(n_init=10)``. A 4096 x 4096 weight with 16 clusters takes a
    few seconds on 2 CPU cores. The docstring of the ``prunekit.kmeans`` module describes
    the algorithm.

    Args:
        x: floating-point tensor of any shape, finite values; flattened. Not modified.
        n_clusters: number of clusters, an integer from 1 to the number of distinct
            values in ``x``.

    Returns:
        ``(centers, labels)``: ``centers`` is a 1-D tensor of ``n_clusters`` values in
        ascending order, dtype and device of ``x``; ``labels`` is an int64 tensor shaped
        like ``x`` holding the index of the nearest centre (a value exactly half-way
        between two centres gets the lower index).

    Raises:
        TypeError: if ``x`` is not a floating-point tensor or ``n_clusters`` is not an
            integer (booleans are refused).
        ValueError: if ``x`` is empty or has NaN or infinite values, or ``n_clusters``
            is below 1 or above the number of distinct values (so a constant tensor
            only allows ``n_clusters=1``).

    Examples:
        >>> import torch, prunekit as pk
        >>> x = torch.tensor([[0.1, 0.2, 1.0], [1.1, 5.0, 0.15]])
        >>> centers, labels = pk.kmeans_1d(x, 3)
        >>> centers
        tensor([0.1500, 1.0500, 5.0000])
        >>> labels
        tensor([[0, 0, 1],
                [1, 2, 0]])
    """
    caller = "kmeans_1d"
    check_weight(x, caller, "x")
    k = check_int(n_clusters, caller, "n_clusters", minimum=1)
    flat, centers, _, mids = _fit(x, k, caller, "'x'")
    return centers, torch.bucketize(flat, mids, right=False).view(x.shape)


# --------------------------------------------------------------------------------------
# Pruning whole clusters
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KMeansPruneInfo:
    """What a k-means pruning did: requested versus achieved sparsity, and every cluster.

    ``print`` it for a per-cluster table; :meth:`as_dict` gives one row for a table over
    several sparsities (e.g. ``pandas.DataFrame([info.as_dict() for info in infos])``).

    Attributes:
        requested_sparsity: the ``sparsity`` asked for.
        achieved_sparsity: fraction of the weights pruned afterwards.
        n_weights: number of weights.
        n_target: ``round(requested_sparsity * n_weights)``, the count asked for.
        n_pruned: number of weights pruned afterwards (including ``n_already_pruned``).
        n_already_pruned: weights pruned before (model level; 0 for :func:`~prunekit.kmeans_mask`).
            They are not clustered.
        centers: cluster centres, ascending.
        sizes: number of weights in each cluster.
        pruned_clusters: ``True`` for each cluster that was pruned.
    """

    requested_sparsity: float
    achieved_sparsity: float
    n_weights: int
    n_target: int
    n_pruned: int
    n_already_pruned: int
    centers: tuple
    sizes: tuple
    pruned_clusters: tuple

    @property
    def n_clusters(self) -> int:
        """Number of clusters."""
        return len(self.centers)

    @property
    def n_clusters_pruned(self) -> int:
        """Number of clusters pruned."""
        return sum(self.pruned_clusters)

    def as_dict(self) -> dict:
        """The summary as one flat dictionary (one table row)."""
        return {
            "requested": self.requested_sparsity,
            "achieved": self.achieved_sparsity,
            "n_weights": self.n_weights,
            "n_target": self.n_target,
            "n_pruned": self.n_pruned,
            "clusters_pruned": self.n_clusters_pruned,
            "n_clusters": self.n_clusters,
        }

    def __str__(self) -> str:
        head = (
            f"requested sparsity {self.requested_sparsity:.2%} ({self.n_target:,} of "
            f"{self.n_weights:,} weights), achieved {self.achieved_sparsity:.2%} "
            f"({self.n_pruned:,}) by pruning {self.n_clusters_pruned} of {self.n_clusters} clusters"
        )
        if self.n_already_pruned:
            head += f"; {self.n_already_pruned:,} were pruned before"
        rows = [("cluster", "center", "size", "pruned")]
        for i, (c, s, p) in enumerate(zip(self.centers, self.sizes, self.pruned_clusters)):
            rows.append((str(i), f"{c:.4g}", f"{s:,}", "yes" if p else "no"))
        widths = [max(len(r[j]) for r in rows) for j in range(4)]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in rows]
        return "\n".join([head, *lines])

    __repr__ = __str__


def _choose(centers: torch.Tensor, sizes: torch.Tensor, n_remove: int) -> torch.Tensor:
    """Which clusters to prune: the p smallest |centre|, cumulative size nearest ``n_remove``.

    Clusters are ranked by |centre|, equal magnitudes by lower index (the negative centre).
    Among equally near counts the smaller p (fewer pruned weights) wins.
    """
    k = centers.numel()
    order = torch.sort(centers.abs(), stable=True).indices
    cum = torch.cat([torch.zeros(1, dtype=torch.long, device=sizes.device), torch.cumsum(sizes[order], 0)])
    p = int(torch.argmin((cum - n_remove).abs()))
    pruned = torch.zeros(k, dtype=torch.bool, device=centers.device)
    pruned[order[:p]] = True
    return pruned


def _prune_clusters(values: torch.Tensor, k: int, n_remove: int, caller: str, what: str):
    """Cluster 1-D ``values`` and prune whole clusters; returns keep, centres, sizes, pruned."""
    flat, centers, sizes, mids = _fit(values, k, caller, what)
    pruned = _choose(centers, sizes, n_remove)
    chosen = torch.nonzero(pruned).squeeze(1).tolist()
    if not chosen:
        return torch.ones(flat.shape, dtype=torch.bool, device=flat.device), centers, sizes, pruned
    a, b = chosen[0], chosen[-1]
    if b - a + 1 == len(chosen):
        # The clusters nearest zero form a run [a, b] of adjacent clusters (|centre| falls,
        # then rises, along ascending centres), i.e. one interval of values: two comparisons.
        lo = float(mids[a - 1]) if a > 0 else None
        hi = float(mids[b]) if b < k - 1 else None
        return _outside(flat, lo, hi), centers, sizes, pruned
    return ~pruned[torch.bucketize(flat, mids, right=False)], centers, sizes, pruned  # defensive


def _outside(flat: torch.Tensor, lo: float | None, hi: float | None) -> torch.Tensor:
    """``flat <= lo or flat > hi`` (a missing bound never holds), as a bool tensor.

    The bounds are values of ``flat``'s dtype (:func:`_midpoints`), so the comparisons are
    exact. On the CPU this runs in NumPy on the same memory (one thread, no pool to wake).
    """
    if _numpy_backend(flat):
        a = flat.numpy()
        keep = np.zeros(a.shape, dtype=bool) if hi is None else np.greater(a, hi)
        if lo is not None:
            np.logical_or(keep, np.less_equal(a, lo), out=keep)
        return torch.from_numpy(keep)
    keep = torch.zeros(flat.shape, dtype=torch.bool, device=flat.device) if hi is None else flat > hi
    if lo is not None:
        keep |= flat <= lo
    return keep


def _info(requested, n, target, n_pruned, already, centers, sizes, pruned) -> KMeansPruneInfo:
    return KMeansPruneInfo(
        requested_sparsity=float(requested),
        achieved_sparsity=n_pruned / n if n else 0.0,
        n_weights=int(n),
        n_target=int(target),
        n_pruned=int(n_pruned),
        n_already_pruned=int(already),
        centers=tuple(float(c) for c in centers.tolist()) if centers is not None else (),
        sizes=tuple(int(s) for s in sizes.tolist()) if sizes is not None else (),
        pruned_clusters=tuple(bool(p) for p in pruned.tolist()) if pruned is not None else (),
    )


def kmeans_mask(weight: torch.Tensor, sparsity: float, *, n_clusters: int = 8,
                return_info: bool = False):
    """Mask that prunes whole k-means clusters of the weight values, smallest ``|centre|`` first.

    The values are clustered with :func:`~prunekit.kmeans_1d`. Clusters are pruned in order of
    increasing ``|centre|`` (equal magnitudes: the negative centre first), and the number
    of clusters pruned is the one whose total size is nearest to ``round(sparsity * n)``
    weights; when two counts are equally near, the smaller one (fewer weights pruned)
    wins. So ``sparsity=0`` prunes nothing and ``sparsity=1`` prunes everything, and the
    achieved sparsity is usually *not* the requested one: whole clusters only come in
    their own sizes. Pass ``return_info=True`` to see both.

    Because the clustering does not depend on ``sparsity``, masks of the same weight and
    ``n_clusters`` are nested: what a lower sparsity prunes, a higher one prunes too.

    1-D clusters are intervals, so this is magnitude pruning with the threshold moved to a
    cluster boundary; see :func:`prunekit.magnitude_mask` for the exact-count version.

    Args:
        weight: floating-point tensor of any shape, finite values. Not modified.
        sparsity: the fraction of *weights* to prune, a real number in [0, 1].
        n_clusters: number of clusters, from 1 to the number of distinct values.
        return_info: also return a :class:`~prunekit.KMeansPruneInfo`.

    Returns:
        A ``torch.bool`` tensor shaped like ``weight`` on its device (``True`` = keep), or
        ``(mask, info)`` if ``return_info`` is true.

    Raises:
        TypeError, ValueError: for a bad argument, naming it and the value received.

    Examples:
        >>> import torch, prunekit as pk
        >>> w = torch.tensor([-2.0, -1.9, -0.1, 0.0, 0.1, 0.12, 1.0, 1.1])
        >>> mask, info = pk.kmeans_mask(w, 0.5, n_clusters=3, return_info=True)
        >>> mask
        tensor([ True,  True, False, False, False, False,  True,  True])
        >>> [round(c, 2) for c in info.centers], info.sizes
        ([-1.95, 0.03, 1.05], (2, 4, 2))
        >>> info.achieved_sparsity
        0.5
    """
    caller = "kmeans_mask"
    check_weight(weight, caller)
    sparsity = check_sparsity(sparsity, caller)
    k = check_int(n_clusters, caller, "n_clusters", minimum=1)
    if not isinstance(return_info, bool):
        raise TypeError(
            f"The 'return_info' parameter of {caller} must be a bool. Got {return_info!r} instead."
        )
    n = weight.numel()
    target = n_to_prune(sparsity, n)
    keep, centers, sizes, pruned = _prune_clusters(weight, k, target, caller, "'weight'")
    mask = keep.view(weight.shape)
    if not return_info:
        return mask
    n_pruned = n - int(torch.count_nonzero(keep))
    return mask, _info(sparsity, n, target, n_pruned, 0, centers, sizes, pruned)


def source_kmeans_mask(tensor: torch.Tensor, num_clusters: int, sparsity: float,
                       seed=None) -> torch.Tensor:
    """The source document's ``kmeans()``, kept to show its problems. Do not use it.

    This is the code of ``pruning-methods.md`` unchanged, except that the unused ``info``
    argument is gone and ``seed`` is passed to scikit-learn's ``KMeans`` as
    ``random_state`` (``None``, the default, is the original's non-deterministic
    behaviour). Its problems, which the book demonstrates:

    * ``sparsity`` is the fraction of *clusters* pruned, not of weights: the threshold is
      the ``sparsity`` quantile of the ``|centres|``. The cluster nearest zero holds the
      most weights, so far more weights than requested are pruned (a normal tensor with
      8 clusters at ``sparsity=0.5`` loses about 70%).
    * It prunes at ``sparsity=0``: the 0-quantile is the smallest ``|centre|``, and the
      strict ``>`` prunes that cluster.
    * ``KMeans`` runs without a fixed ``random_state``, so results change between runs.
    * The mask is written one weight at a time in a Python loop (seconds for 250k
      weights); ``mask[labels]`` does the same at once.
    * Kept weights are not replaced by their centres, so there is no weight sharing and no
      compression beyond the zeros.

    Use :func:`prunekit.kmeans_mask` (correct semantics) or :func:`prunekit.share_weights`
    (what k-means is good for) instead. Needs scikit-learn.

    Args:
        tensor: the weights (without gradient, e.g. ``weight.detach()``).
        num_clusters: number of k-means clusters.
        sparsity: the quantile of the ``|centres|`` used as threshold.
        seed: ``random_state`` of ``KMeans``; ``None`` as in the original.

    Returns:
        ``torch.bool`` tensor shaped like ``tensor``, ``True`` = keep.

    Examples:
        >>> import torch
        >>> from prunekit.kmeans import source_kmeans_mask
        >>> w = torch.randn(1000, generator=torch.Generator().manual_seed(0))
        >>> mask = source_kmeans_mask(w, 8, 0.0, seed=0)
        >>> bool((~mask).any())     # sparsity 0 still prunes a cluster
        True
    """
    from sklearn.cluster import KMeans

    # ---- the source document's code, as written (only `random_state=seed` added) ----
    # Flatten tensor values for clustering
    flattened_values = tensor.flatten().view(-1, 1).cpu().numpy()

    # Perform K-means clustering
    kmeans = KMeans(n_clusters=num_clusters, random_state=seed)
    kmeans.fit(flattened_values)

    # Get cluster centers and prune values in clusters with smaller magnitudes
    cluster_centers = torch.tensor(kmeans.cluster_centers_).to(tensor.device)
    threshold = torch.quantile(cluster_centers.abs().flatten(), sparsity)
    mask = (cluster_centers.abs() > threshold).to(torch.bool).to(tensor.device)

    # Apply mask to original tensor
    mask_tensor = torch.zeros_like(tensor, dtype=torch.bool).to(tensor.device)
    for i, cluster_id in enumerate(kmeans.labels_):
        mask_tensor.view(-1)[i] = mask[cluster_id]

    return mask_tensor


# --------------------------------------------------------------------------------------
# prune(model, s, method="kmeans")
# --------------------------------------------------------------------------------------


class KMeansMethod(Method):
    """``prune(model, sparsity, method="kmeans", scope=..., n_clusters=8, info=None)``.

    Prunes whole k-means clusters of weight values, smallest ``|centre|`` first, landing
    as near the target as whole clusters allow (the rule of :func:`~prunekit.kmeans_mask`: the
    number of clusters whose total size is nearest to what is still to prune, ties to
    fewer weights).

    * ``scope="layer"``: each layer's *unpruned* weights are clustered on their own and
      the layer is pruned as near as possible to ``round(sparsity * n_layer)`` weights.
    * ``scope="global"``: the unpruned weights of all layers are clustered together (one
      clustering, values compared as they are) and pruned as near as possible to
      ``round(sparsity * n_total)``, so layers end up with different sparsities.

    Already pruned weights count toward the target, are not clustered, and stay pruned
    (masks are nested). A layer whose already pruned weights exceed its target keeps its
    mask, with a warning. ``n_clusters`` must not exceed the number of distinct unpruned
    values of any layer (layer scope) or of all layers together (global scope); it is
    checked, like everything else, before the model is changed.

    Options (keyword arguments of :func:`prunekit.prune`):

    * ``n_clusters``: number of clusters (default 8).
    * ``info``: ``None``, or a dictionary that receives a :class:`prunekit.KMeansPruneInfo`
      per layer name (``scope="layer"``) or under the key ``"global"`` (requested versus
      achieved sparsity, centres, cluster sizes). It is filled only on success.

    Examples:
        >>> import torch, prunekit as pk
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.Linear(16, 4))
        >>> info = {}
        >>> _ = pk.prune(model, 0.5, method="kmeans", n_clusters=8, info=info)
        >>> sorted(info)
        ['0', '1']
        >>> 0.3 < info["0"].achieved_sparsity < 0.7
        True
    """

    name = "kmeans"
    granularity = "weight"
    options = {"n_clusters": 8, "info": None}

    def check_options(self, options: dict, caller: str) -> dict:
        options = super().check_options(options, caller)
        check_int(options["n_clusters"], caller, "n_clusters", minimum=1)
        info = options["info"]
        if info is not None and not isinstance(info, MutableMapping):
            raise TypeError(
                f"The 'info' parameter of {caller} must be None or a dict to fill with "
                f"KMeansPruneInfo per layer. Got {info!r} instead."
            )
        return options

    def plan(self, model, layers, sparsity, scope, options, caller="prune"):
        k = int(options["n_clusters"])
        weights, currents = [], []
        for _, module in layers:
            weights.append(effective_tensor(module, "weight"))
            cur = getattr(module, "weight_mask") != 0 if "weight" in pruned_tensor_names(module) else None
            currents.append(cur)

        def unpruned(w, cur):
            return w.reshape(-1) if cur is None else w.reshape(-1)[cur.reshape(-1).to(w.device)]

        masks, infos = {}, {}
        if scope == "layer":
            for (name, module), w, cur in zip(layers, weights, currents):
                s = sparsity[name] if isinstance(sparsity, Mapping) else sparsity
                n = w.numel()
                values = unpruned(w, cur)
                already = n - values.numel()
                target = self._count(s, n, already, name or "model")
                keep_values, centers, sizes, pruned = None, None, None, None
                if values.numel():
                    keep_values, centers, sizes, pruned = _prune_clusters(
                        values, k, target - already, caller,
                        f"the unpruned weights of layer {name or 'model'!r}")
                keep = self._expand(w, cur, keep_values)
                masks[(module, "weight")] = keep
                n_pruned = n - int(torch.count_nonzero(keep))
                infos[name] = _info(s, n, n_to_prune(s, n), n_pruned, already, centers, sizes, pruned)
        else:
            device = weights[0].device
            dtype = weights[0].dtype
            for w in weights[1:]:
                dtype = torch.promote_types(dtype, w.dtype)
            parts = [unpruned(w, cur).to(device=device, dtype=dtype) for w, cur in zip(weights, currents)]
            values = torch.cat(parts)
            n = sum(w.numel() for w in weights)
            already = n - values.numel()
            target = self._count(sparsity, n, already, "model")
            keep_values, centers, sizes, pruned = None, None, None, None
            if values.numel():
                keep_values, centers, sizes, pruned = _prune_clusters(
                    values, k, target - already, caller, "the unpruned weights of all layers")
                splits = keep_values.split([p.numel() for p in parts])
            else:
                splits = [None] * len(parts)
            n_pruned = 0
            for (_, module), w, cur, part in zip(layers, weights, currents, splits):
                keep = self._expand(w, cur, None if part is None else part.to(w.device))
                masks[(module, "weight")] = keep
                n_pruned += w.numel() - int(torch.count_nonzero(keep))
            infos["global"] = _info(sparsity, n, n_to_prune(sparsity, n), n_pruned, already,
                                    centers, sizes, pruned)
        if options["info"] is not None:
            options["info"].update(infos)
        return masks

    @staticmethod
    def _expand(w, cur, keep_values):
        """Full keep-mask of a layer from the keep flags of its unpruned weights."""
        if cur is None:
            if keep_values is None:
                return torch.ones(w.shape, dtype=torch.bool, device=w.device)
            return keep_values.view(w.shape)
        cur = cur.to(w.device)
        keep = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
        if keep_values is not None:
            keep[cur.reshape(-1)] = keep_values
        return keep.view(w.shape)


register_method(KMeansMethod())


# --------------------------------------------------------------------------------------
# Weight sharing (Deep Compression)
# --------------------------------------------------------------------------------------

#: centroid initialisations of :func:`~prunekit.share_weights` (Han et al. 2016, section 3.2,
#: plus "kmeans")
SHARING_INITS = ("linear", "density", "random", "kmeans")


class SharedWeights(nn.Module):
    """Parametrization ``weight = codebook[indices] * mask`` (weight sharing).

    :func:`~prunekit.share_weights` registers one on the ``weight`` of each layer with
    ``torch.nn.utils.parametrize``. The layer then computes with the shared values, and
    training updates the ``codebook`` (an ``nn.Parameter``): autograd sums the gradients
    of all weights that share a centroid, which is Deep Compression's centroid update
    ``dL/dC_k = sum_ij dL/dW_ij * 1(I_ij = k)``. Pruned weights (``mask`` false) are
    exactly zero and get no gradient. The full-precision weight from before sharing stays
    in ``parametrizations.weight.original``; it is not used and receives no gradient.

    Attributes:
        codebook: ``nn.Parameter`` of the shared values, ascending when created.
        indices: buffer of centroid indices, shaped like the weight (uint8 for up to 256
            centroids, int16 or int32 beyond).
        mask: ``torch.bool`` buffer, ``False`` where the weight is pruned (exactly zero).
    """

    def __init__(self, codebook: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor):
        super().__init__()
        self.codebook = nn.Parameter(codebook.detach().clone())
        self.register_buffer("indices", indices.to(_index_dtype(codebook.numel())))
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        del weight  # replaced by the shared values
        return self.codebook[self.indices.int()] * self.mask

    def extra_repr(self) -> str:
        return f"n_centroids={self.codebook.numel()}, shape={tuple(self.indices.shape)}"


def _index_dtype(k: int) -> torch.dtype:
    if k <= 256:
        return torch.uint8
    if k <= 1 << 15:
        return torch.int16
    return torch.int32


def _shared(module: nn.Module) -> SharedWeights | None:
    if parametrize.is_parametrized(module, "weight"):
        for p in module.parametrizations.weight:
            if isinstance(p, SharedWeights):
                return p
    return None


def _codebook(values: torch.Tensor, k: int, init: str, seed: int) -> torch.Tensor:
    """k centroids (ascending, values' dtype and device) for non-empty 1-D ``values``."""
    flat = _work(values)
    if init == "kmeans":
        srt = _Sorted(flat)
        kk = min(k, srt.n_distinct())
        c, _ = _cluster_values(flat, kk, "share_weights", "the weights")
        if kk < k:  # fewer distinct values than centroids: the unused entries repeat the last
            c = torch.cat([c, c[-1:].expand(k - kk)])
        return c.to(values.dtype)
    srt = _Sorted(flat)
    lo, hi = srt.quantile_values(torch.tensor([0.0, 1.0], dtype=torch.float64)).tolist()
    if init == "linear":  # evenly spaced between the smallest and the largest weight
        c0 = torch.linspace(lo, hi, k, dtype=torch.float64)
    elif init == "density":  # evenly spaced on the y-axis of the CDF (quantiles)
        c0 = srt.quantile_values((torch.arange(k, dtype=torch.float64) + 0.5) / k).cpu()
    else:  # "random" (Forgy): k of the weights, drawn with a seeded generator
        g = torch.Generator().manual_seed(seed)
        n = srt.n
        pick = torch.randperm(n, generator=g)[:k] if n >= k else torch.randint(0, n, (k,), generator=g)
        c0 = torch.sort(srt.quantile_values(pick.double() / max(n - 1, 1)).cpu()).values
    c0 = srt.from_values(c0)
    c = srt.lloyd(srt.assign(c0), c0)
    return srt.centers(c).to(values.dtype)


def share_weights(model: nn.Module, *, bits: int | None = None, n_clusters: int | None = None,
                  init: str = "linear", exclude=(), seed: int = 0) -> nn.Module:
    """Deep Compression's weight sharing: each layer computes with a small codebook.

    For every ``nn.Linear`` and ``nn.Conv*`` layer (except ``exclude``) the non-zero
    weights are clustered with 1-D k-means (Lloyd's algorithm from ``init``, run until
    the assignment stops changing), each weight is replaced by its centroid, and the
    layer's ``weight`` becomes ``codebook[indices] * mask`` through a
    :class:`~prunekit.SharedWeights` parametrization (``torch.nn.utils.parametrize``). Zero is not a
    cluster: weights that are exactly zero (pruned, or zeros for any other reason) stay
    exactly zero and receive no gradient. Layers never share a codebook (as in the paper).

    Fine-tune afterwards with any optimizer over ``model.parameters()``: the codebooks are
    parameters, and each centroid's gradient is the sum of the gradients of its weights.
    Save and load with ``state_dict`` into a model prepared the same way (pruned, then
    ``share_weights`` with the same settings); ``copy.deepcopy`` works, pickling the whole
    model does not (a limit of torch's parametrizations).

    Masks of ``prunekit.prune`` are folded into the parametrization: the layer loses
    ``weight_orig``/``weight_mask`` (like :func:`prunekit.remove`) and keeps its zeros.
    Prune first, share last: pruning a shared layer again is not supported.
    :func:`~prunekit.compression_report` counts the bits.

    Args:
        model: the model, changed in place.
        bits: codebook size ``2**bits`` (Deep Compression: 8 for conv, 5 for FC layers).
            Give ``bits`` or ``n_clusters``, not both.
        n_clusters: codebook size, if not a power of two.
        init: centroid initialisation: ``"linear"`` (evenly spaced between the smallest
            and largest weight; the paper's choice, best for the large weights),
            ``"density"`` (quantiles: evenly spaced on the CDF), ``"random"`` (Forgy:
            random weights, seeded by ``seed``), or ``"kmeans"`` (start from
            :func:`~prunekit.kmeans_1d`'s near-optimal clustering, which minimises the squared
            error).
        exclude: modules, or their names as in ``model.named_modules()``, to leave as
            they are.
        seed: seed of the ``"random"`` initialisation.

    Returns:
        ``model``.

    Raises:
        TypeError, ValueError: for a bad argument or a layer that already shares weights;
            the model is left untouched.

    Examples:
        >>> import torch, prunekit as pk
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Linear(16, 8))
        >>> _ = pk.prune(model, 0.5)
        >>> _ = pk.share_weights(model, bits=2)
        >>> model[0].weight.unique().numel()   # 4 shared values and zero
        5
        >>> pk.sparsity(model)
        0.5
    """
    caller = "share_weights"
    _check_model(model, caller)
    if (bits is None) == (n_clusters is None):
        raise TypeError(
            f"{caller} needs exactly one of 'bits' and 'n_clusters'. "
            f"Got bits={bits!r}, n_clusters={n_clusters!r} instead."
        )
    if bits is not None:
        b = check_int(bits, caller, "bits", minimum=1)
        if b > 16:
            raise ValueError(f"The 'bits' parameter of {caller} must be an integer in the range [1, 16]. "
                             f"Got {bits!r} instead.")
        k = 1 << b
    else:
        k = check_int(n_clusters, caller, "n_clusters", minimum=1)
    check_choice(init, SHARING_INITS, caller, "init")
    check_int(seed, caller, "seed")
    skip = _resolve_exclude(model, exclude, caller)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES) and id(m) not in skip]
    if not layers:
        raise ValueError(f"{caller} found no nn.Linear or nn.Conv* layers in {type(model).__name__}.")
    plans = []
    for name, module in layers:
        if _shared(module) is not None:
            raise ValueError(
                f"Layer {name or 'model'!r} already shares weights. Call "
                "torch.nn.utils.parametrize.remove_parametrizations(layer, 'weight') first, "
                "or exclude it."
            )
        if parametrize.is_parametrized(module, "weight"):
            raise ValueError(
                f"Layer {name or 'model'!r} has another parametrization of 'weight'; "
                f"{caller} does not combine with it. Exclude the layer."
            )
        w = check_weight(effective_tensor(module, "weight"), caller, f"{name or 'model'}.weight")
        plans.append((name, module, w))
    prepared = []
    for name, module, w in plans:  # compute everything before changing anything
        mask = w != 0
        values = w[mask]
        if values.numel():
            codebook = _codebook(values, k, init, seed)
            idx = torch.zeros(w.shape, dtype=torch.long, device=w.device)
            idx[mask] = _labels(_work(values), codebook)
        else:
            codebook = torch.zeros(k, dtype=w.dtype, device=w.device)
            idx = torch.zeros(w.shape, dtype=torch.long, device=w.device)
        prepared.append((module, SharedWeights(codebook, idx, mask)))
    for module, shared in prepared:
        if "weight" in pruned_tensor_names(module):
            torch_prune.remove(module, "weight")
        parametrize.register_parametrization(module, "weight", shared)
    return model


# --------------------------------------------------------------------------------------
# Compressed size (Deep Compression's accounting)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerCompression:
    """One row of a :class:`~prunekit.CompressionReport`: how one layer's weight is stored.

    Attributes:
        layer: the layer's name in ``model.named_modules()``.
        kind: the layer's class name.
        params: number of weights.
        nonzeros: number of non-zero weights.
        codebook_size: number of shared values (0 if the layer does not share weights).
        value_bits: bits per stored weight: ``ceil(log2(codebook_size))`` for a shared
            layer, 32 (a float32) otherwise.
        index_bits: bits of a relative index (sparse format).
        fillers: filler zeros the relative indices need (gaps longer than the index
            range).
        format: ``"sparse"`` or ``"dense"``, whichever is smaller.
        dense_bits: the float32 baseline, ``32 * params``.
        compressed_bits: the bits in the chosen format, codebook included.
    """

    layer: str
    kind: str
    params: int
    nonzeros: int
    codebook_size: int
    value_bits: int
    index_bits: int
    fillers: int
    format: str
    dense_bits: int
    compressed_bits: int

    @property
    def ratio(self) -> float:
        """The compression ratio, float32 size divided by compressed size."""
        return self.dense_bits / self.compressed_bits if self.compressed_bits else math.inf


@dataclass(frozen=True)
class CompressionReport:
    """Per-layer storage and the model total, Deep Compression's way. ``print`` it.

    Attributes:
        rows: one :class:`~prunekit.LayerCompression` per ``Linear``/``Conv`` layer, in model order.
        other_params: the model's remaining parameters (biases, BatchNorm, ...), counted
            as dense float32 in both sizes.
    """

    rows: tuple
    other_params: int

    @property
    def dense_bytes(self) -> float:
        """Size of all parameters as dense float32, in bytes."""
        return (sum(r.dense_bits for r in self.rows) + 32 * self.other_params) / 8

    @property
    def compressed_bytes(self) -> float:
        """Compressed size of all parameters, in bytes (the other parameters as float32)."""
        return (sum(r.compressed_bits for r in self.rows) + 32 * self.other_params) / 8

    @property
    def ratio(self) -> float:
        """The compression ratio of the whole model, ``dense_bytes / compressed_bytes``."""
        return self.dense_bytes / self.compressed_bytes

    def as_dicts(self) -> list[dict]:
        """Rows as dictionaries (e.g. for ``pandas.DataFrame``), the total last."""
        out = [
            {"layer": r.layer, "type": r.kind, "params": r.params, "nonzeros": r.nonzeros,
             "codebook": r.codebook_size, "value_bits": r.value_bits, "index_bits": r.index_bits,
             "fillers": r.fillers, "format": r.format, "dense_bytes": r.dense_bits / 8,
             "compressed_bytes": r.compressed_bits / 8, "ratio": r.ratio}
            for r in self.rows
        ]
        n_params = sum(r.params for r in self.rows) + self.other_params
        out.append({"layer": "total", "type": "", "params": n_params,
                    "nonzeros": None, "codebook": None, "value_bits": None, "index_bits": None,
                    "fillers": None, "format": "", "dense_bytes": self.dense_bytes,
                    "compressed_bytes": self.compressed_bytes, "ratio": self.ratio})
        return out

    def __str__(self) -> str:
        header = ("layer", "type", "params", "nonzeros", "codebook", "bits", "index", "format",
                  "dense", "compressed", "ratio")
        lines = [
            (r.layer, r.kind, f"{r.params:,}", f"{r.nonzeros:,}", str(r.codebook_size or "-"),
             str(r.value_bits), str(r.index_bits) if r.format == "sparse" else "-", r.format,
             _fmt_bytes(r.dense_bits / 8), _fmt_bytes(r.compressed_bits / 8), f"{r.ratio:.1f}x")
            for r in self.rows
        ]
        if self.other_params:
            b = _fmt_bytes(4 * self.other_params)
            lines.append(("(other)", "", f"{self.other_params:,}", "", "", "32", "-", "dense", b, b, "1.0x"))
        lines.append(("total", "", f"{sum(r.params for r in self.rows) + self.other_params:,}", "", "",
                      "", "", "", _fmt_bytes(self.dense_bytes), _fmt_bytes(self.compressed_bytes),
                      f"{self.ratio:.1f}x"))
        return format_table(header, lines, right=set(range(len(header))) - {0, 1, 7})

    __repr__ = __str__


def _fmt_bytes(b: float) -> str:
    if b >= 1 << 20:
        return f"{b / (1 << 20):.2f} MiB"
    if b >= 1 << 10:
        return f"{b / (1 << 10):.1f} KiB"
    return f"{b:.0f} B"


def _layer_storage(weight: torch.Tensor, codebook_size: int, index_bits: int):
    """``(value_bits, fillers, sparse_bits, dense_bits_in_codes)`` of one weight tensor."""
    flat = weight.detach().reshape(-1)
    n = flat.numel()
    value_bits = max(1, math.ceil(math.log2(codebook_size))) if codebook_size else 32
    codebook_bits = 32 * codebook_size
    pos = torch.nonzero(flat).squeeze(1)
    nnz = pos.numel()
    if nnz:
        gaps = torch.diff(pos, prepend=pos.new_tensor([-1])) - 1  # zeros before each non-zero
        fillers = int(torch.sum(gaps >> index_bits))               # one filler per 2**b zeros
    else:
        fillers = 0
    sparse = (nnz + fillers) * (index_bits + value_bits) + codebook_bits
    dense = n * value_bits + codebook_bits
    return value_bits, fillers, sparse, dense


def compression_report(model: nn.Module, *, index_bits: int | None = None) -> CompressionReport:
    """Storage of a pruned and/or weight-shared model, counted as in Deep Compression.

    For each ``nn.Linear`` and ``nn.Conv*`` layer the weight is stored either

    * **sparse**: one entry per non-zero weight, each a ``value_bits`` code plus an
      ``index_bits`` *relative* index (the number of zeros skipped since the previous
      entry, flattened row-major); a run of zeros longer than the index can express
      (``2**index_bits - 1``) costs a *filler* entry (a stored zero) per ``2**index_bits``
      zeros, as in the paper's figure 2; or
    * **dense**: a code for every weight, no indices,

    whichever is smaller, plus the codebook (32 bits per shared value). ``value_bits`` is
    ``ceil(log2(codebook size))`` for a layer with :func:`~prunekit.share_weights`, 32 (float32)
    otherwise. Everything else (biases, BatchNorm) counts as dense float32. Huffman coding,
    Deep Compression's third stage, is not applied. For ``n`` weights shared by ``k``
    values without pruning this gives the paper's ratio
    ``r = 32 n / (n log2(k) + 32 k)``.

    Args:
        model: any ``nn.Module`` (pruned, shared, both or neither). Not modified.
        index_bits: bits per relative index. Default: the paper's, 8 for conv layers and
            5 for fully connected ones.

    Returns:
        A :class:`~prunekit.CompressionReport`: ``print`` it, or read ``.ratio``,
        ``.compressed_bytes``, ``.rows``.

    Raises:
        TypeError, ValueError: for a bad argument.

    Examples:
        >>> import torch, prunekit as pk
        >>> layer = torch.nn.Linear(4, 4, bias=False)
        >>> _ = pk.share_weights(layer, bits=2)     # 16 weights, 4 shared values
        >>> report = pk.compression_report(layer)
        >>> report.rows[0].compressed_bits          # 16 * 2 index bits + 4 * 32 codebook bits
        160
        >>> round(report.ratio, 2)                  # the paper's example: 3.2
        3.2
    """
    caller = "compression_report"
    _check_model(model, caller)
    if index_bits is not None:
        check_int(index_bits, caller, "index_bits", minimum=1)
    rows, counted = [], set()
    for name, module in model.named_modules():
        if not isinstance(module, PRUNABLE_TYPES):
            continue
        w = effective_tensor(module, "weight")
        shared = _shared(module)
        k = shared.codebook.numel() if shared is not None else 0
        ib = index_bits if index_bits is not None else (5 if isinstance(module, nn.Linear) else 8)
        value_bits, fillers, sparse, dense = _layer_storage(w, k, ib)
        fmt = "sparse" if sparse < dense else "dense"
        nnz = int(torch.count_nonzero(w))
        kind = type(module).__name__
        if parametrize.is_parametrized(module):  # torch renames the class "Parametrized..."
            kind = type(module).__bases__[0].__name__
        rows.append(LayerCompression(
            name or "(model)", kind, w.numel(), nnz, k, value_bits, ib,
            fillers if fmt == "sparse" else 0, fmt, 32 * w.numel(), min(sparse, dense),
        ))
        if shared is not None:
            counted.add(id(shared.codebook))
            counted.add(id(module.parametrizations.weight.original))
        for pname in ("weight", "weight_orig"):
            p = module._parameters.get(pname)
            if p is not None:
                counted.add(id(p))
    if not rows:
        raise ValueError(f"{type(model).__name__} has no nn.Linear or nn.Conv* layers to report on.")
    other = sum(p.numel() for p in model.parameters() if id(p) not in counted)
    return CompressionReport(tuple(rows), int(other))

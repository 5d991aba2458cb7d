"""Exact-or-near-optimal 1-D k-means on sorted values (DP on a summary, refinement, Lloyd)."""

from __future__ import annotations

import math

import numpy as np
import torch

from .._validation import check_int, check_weight

__all__ = ["kmeans_1d"]


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

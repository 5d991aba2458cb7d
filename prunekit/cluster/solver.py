"""Exact-or-near-optimal 1-D k-means: a DP on sorted values or a summary, refinement, Lloyd."""

from __future__ import annotations

import math

import torch

from .._validation import check_int, check_weight, invalid
from ._ops import TorchOps, ops_for

__all__ = ["kmeans_1d", "Sorted", "work_values", "cluster_values", "fit", "nearest", "dp_cuts"]

_EXACT_MAX = 4096          # at most this many distinct values: exact DP over all of them
_SUMMARY_PER_CLUSTER = 24  # otherwise the DP runs on about 24 blocks per cluster,
_SUMMARY_MIN = 384         # at least 384 blocks
_SUMMARY_MAX = 8192        # and at most 8192
_BY_COUNT = 0.75           # a fraction of them at equal counts, the rest at equal value steps
_DP_MAX_CLUSTERS = 1024    # more clusters: equal-count quantile start (the DP has k rows)
_DENSE_WORK = 1 << 22      # k * m**2 up to this: DP rows over a dense cost matrix, beyond: divide and conquer
_PIVOT_MIN = 64            # from this many rows, row minima are searched from pivot rows
_REFINE_COARSE = 32        # candidate positions per boundary while a window is wider than
_REFINE_FINAL = 64         # +-64 values; the last windows try every position within +-64
_MAX_ITER = 500            # Lloyd steps at most


def work_values(x: torch.Tensor) -> torch.Tensor:
    """The values of ``x`` flattened, in a dtype every op here supports (half widens to float32)."""
    flat = x.detach().reshape(-1)
    if flat.dtype in (torch.float16, torch.bfloat16):
        return flat.float()
    return flat


def _chunk(n: int) -> int:
    """Values per chunk of the prefix sums: 1 (plain prefix sums) for small inputs, up to 64."""
    b = 1
    while b < 64 and b * b * 1024 < n:
        b *= 2
    return b


def _explained(w, s, ops, nonempty: bool = False):
    """``s**2 / w`` for intervals of ``w`` values with sum ``s``; ``-inf`` for empty ones.

    An interval's cost (sum of squared deviations) is its sum of squares minus this.
    ``nonempty=True`` promises there is no empty interval. Overwrites ``s``: pass a temporary.
    """
    s *= s
    if nonempty:
        s /= w
        return s
    s /= ops.maximum(w, 1.0)
    return ops.where(w > 0, s, -ops.inf)


def _cost(w, s, q, ops):
    """Sum of squared deviations of intervals with ``w`` values, sum ``s``, squares ``q``;
    infinity for an empty interval. Broadcasts."""
    return q - _explained(w, s, ops)


class Sorted:
    """The sorted values of a tensor, and the float64 mean and cost of any run of them.

    Prefix sums of the values and their squares (shifted by the median, for accuracy) are
    kept per chunk of ``b`` values, and completed inside a chunk when asked, so building
    them costs little more than one pass over the values. Arrays belong to ``self.ops``.
    Centres and partitions live in shifted coordinates until :meth:`centers`.
    """

    def __init__(self, flat: torch.Tensor):
        flat = work_values(flat)
        self.dtype, self.device = flat.dtype, flat.device
        self.ops = ops = ops_for(flat)
        self.vs = vs = ops.sort(ops.asarray(flat))
        self.n = n = int(vs.shape[0])
        self.shift = float(vs[n // 2])
        # NaN sorts last and infinities go to the ends: two looks check every value
        self.finite = math.isfinite(float(vs[0])) and math.isfinite(float(vs[-1]))
        self.b = b = _chunk(n)
        self._lane = ops.arange(b)
        if self.finite:
            sums, squares = ops.chunk_sums(vs, self.shift, b)
            zero = ops.full(1, 0.0, sums)
            self._S = ops.cat([zero, ops.cumsum(sums, 0)])
            self._Q = ops.cat([zero, ops.cumsum(squares, 0)])

    def prefix(self, idx):
        """``(S, Q)``: float64 sums of the shifted values ``v[:i]`` and of ``v[:i]**2``, each ``i``."""
        if self.b == 1:
            return self._S[idx], self._Q[idx]
        c = idx // self.b
        first = c * self.b
        s, q = self.ops.window_sums(self.vs, first, idx - first, self.shift, self._lane)
        return self._S[c] + s, self._Q[c] + q

    def prefix_runs(self, cand):
        """:meth:`prefix` at rows of consecutive positions (``cand[:, p+1] - cand[:, p]`` is
        0 or 1): one chunked look-up per row, then the values themselves."""
        ops = self.ops
        S0, Q0 = self.prefix(cand[:, :1])
        v = ops.f64(self.vs[cand[:, :-1]]) - self.shift
        v = ops.where(cand[:, 1:] > cand[:, :-1], v, 0.0)
        return ops.cat([S0, S0 + ops.cumsum(v, 1)], 1), ops.cat([Q0, Q0 + ops.cumsum(v * v, 1)], 1)

    def n_distinct(self) -> int:
        if self.n == 1:
            return 1
        return 1 + self.ops.count_nonzero(self.vs[1:] != self.vs[:-1])

    def count_le(self, keys):
        """Number of values ``<=`` each float64 (unshifted) key."""
        ops = self.ops
        return ops.count_le(self.vs, ops.round_down(keys, self.vs.dtype))

    def assign(self, c):
        """Partition (k+1 positions in the sorted values) of the nearest of the centres ``c``."""
        inner = self.count_le((c[:-1] + c[1:]) * 0.5 + self.shift)
        return self.ops.cat([self.ops.ints([0]), inner, self.ops.ints([self.n])])

    def means(self, bounds, previous=None):
        """Means of the parts of a partition; empty parts keep ``previous``."""
        S, _ = self.prefix(bounds)
        counts = bounds[1:] - bounds[:-1]
        c = (S[1:] - S[:-1]) / self.ops.maximum(counts, 1)
        return c if previous is None else self.ops.where(counts > 0, c, previous)

    def lloyd(self, bounds, centers=None):
        """Lloyd steps from a partition until it stops changing (at most ``_MAX_ITER``)."""
        c = self.means(bounds, centers)
        for _ in range(_MAX_ITER):
            new = self.assign(c)
            if self.ops.equal(new, bounds):
                break
            bounds = new
            c = self.means(bounds, c)
        return c

    def centers(self, c) -> torch.Tensor:
        """Shifted centres back to a float64 tensor on the input's device."""
        return self.ops.tensor(c + self.shift).to(self.device)

    def from_values(self, c0: torch.Tensor):
        """Explicit (ascending) centres as a shifted float64 array, e.g. to start :meth:`lloyd`."""
        return self.ops.f64(self.ops.asarray((c0.double() - self.shift).to(self.device)))

    def quantile_values(self, q: torch.Tensor) -> torch.Tensor:
        """Values (float64 tensor) at fractional positions ``q`` of the sorted values."""
        idx = self.ops.asarray((q * (self.n - 1)).round().long().to(self.device))
        return self.ops.tensor(self.ops.f64(self.vs[idx])).to(self.device)

    def sizes(self, mids):
        """Part sizes (int64 tensor) for decision boundaries ``mids`` of the values' dtype."""
        ops = self.ops
        pos = ops.count_le(self.vs, ops.asarray(mids))
        edges = ops.cat([ops.ints([0]), pos, ops.ints([self.n])])
        return ops.tensor(edges[1:] - edges[:-1]).to(self.device)

    # -- the algorithm -------------------------------------------------------------------

    def solve(self, k: int, n_distinct: int):
        """Shifted float64 centres of k-means with ``2 <= k <= n_distinct`` clusters."""
        bounds, exact, radius = self.start(k, n_distinct)
        if exact:  # the global optimum: a Lloyd fixed point, this only computes the means
            return self.lloyd(bounds)
        for _ in range(4):
            bounds = self.refine(bounds, radius)
            c = self.lloyd(bounds)
            after = self.assign(c)
            moved = int(abs(after - bounds).max())
            if moved == 0:
                break
            bounds, radius = after, 2 * moved + 8
        return c

    def start(self, k: int, n_distinct: int):
        """Start partition: the DP on the distinct values (exact) or on a block summary.

        Returns ``(bounds, exact, radius)``; ``radius`` is the window (in values) that
        :meth:`refine` searches around each boundary.
        """
        ops, n = self.ops, self.n
        m_max = _summary_points(k)
        if k > _DP_MAX_CLUSTERS:  # too many clusters for the DP: equal-count quantiles
            edges = ops.i64(ops.linspace(0, n, k + 1).round())
            return edges, False, 2 * (-(-n // k))
        exact = n_distinct <= max(m_max, _EXACT_MAX)
        if exact:  # blocks = runs of equal values: the DP over them is the exact optimum
            inner = ops.flatnonzero(self.vs[1:] != self.vs[:-1]) + 1
            edges = ops.cat([ops.ints([0]), inner, ops.ints([n])])
        else:  # blocks at equal counts (3/4 of them) and at equal value steps (1/4)
            n_count = int(m_max * _BY_COUNT)
            by_count = ops.i64(ops.linspace(0, n, n_count + 1).round())
            steps = ops.linspace(float(self.vs[0]), float(self.vs[-1]), m_max - n_count + 1)[1:-1]
            edges = ops.unique(ops.cat([by_count, self.count_le(steps)]))
        radius = max(2 * int((edges[1:] - edges[:-1]).max()), -(-n // k))
        S, Q = self.prefix(edges)
        cuts = dp_cuts(ops.f64(edges), S, Q, k, ops)
        return edges[ops.ints(cuts)], exact, radius

    def refine(self, bounds, radius: int):
        """Best partition with each boundary within ``radius`` values of its current place.

        Coarse to fine: while the window is wider than ``+-_REFINE_FINAL`` values, each
        boundary gets about ``_REFINE_COARSE`` evenly spaced candidate positions in it; an
        exact DP over the candidates picks the best combination, and the window shrinks
        around it. Then every position within ``+-_REFINE_FINAL`` is a candidate. A
        boundary that ends on the edge of its window is searched again around its new place.
        """
        ops, n = self.ops, self.n
        k = bounds.shape[0] - 1
        S_n, Q_n = self._S[-1], self._Q[-1]
        r = max(1, int(radius))
        for _ in range(16):
            stride = 1 if r <= _REFINE_FINAL else -(-2 * r // _REFINE_COARSE)
            half = r // stride
            inner = bounds[1:-1]
            offsets = (ops.arange(2 * half + 1) - half) * stride
            cand = (inner[:, None] + offsets).clip(1, n - 1)
            S, Q = self.prefix_runs(cand) if stride == 1 else self.prefix(cand)
            W = ops.f64(cand)
            D = _cost(W[0], S[0] - self._S[0], Q[0] - self._Q[0], ops)  # the first part: [0, candidate)
            rows = ops.arange(cand.shape[1])
            # unclipped windows: counts between candidates are a shift of one matrix
            at = inner.tolist()
            whole = [half * stride < c < n - half * stride for c in at]
            gaps = ops.f64(offsets[:, None] - offsets[None, :])
            args = []
            for j in range(1, k - 1):  # D[b] = Q[j][b] - max_a (E[b, a] + Q[j-1][a] - D[a])
                if whole[j] and whole[j - 1]:
                    w = gaps + float(at[j] - at[j - 1])
                    apart = at[j] - at[j - 1] > 2 * half * stride  # no empty part: no guard
                else:
                    w = W[j][:, None] - W[j - 1]
                    apart = bool(W[j][0] > W[j - 1][-1])
                T = _explained(w, S[j][:, None] - S[j - 1], ops, nonempty=apart)
                T += Q[j - 1] - D
                arg = T.argmax(1)
                D = Q[j] - T[rows, arg]
                args.append(arg)
            last = _cost(n - W[-1], S_n - S[-1], Q_n - Q[-1], ops)
            pick = [int((D + last).argmin())]
            for arg in reversed(args):
                pick.append(int(arg[pick[-1]]))
            new_inner = cand[ops.arange(k - 1), ops.ints(pick[::-1])]
            moved = int(abs(new_inner - inner).max())
            bounds = ops.cat([ops.ints([0]), new_inner, ops.ints([n])])
            if stride == 1 and moved < half:
                break
            if stride > 1:
                r = max(2 * stride, _REFINE_FINAL)
        return bounds


def _summary_points(k: int) -> int:
    """Number of blocks the DP summarises large inputs into, for k clusters."""
    return min(_SUMMARY_MAX, max(_SUMMARY_MIN, _SUMMARY_PER_CLUSTER * k))


def dp_cuts(W, S, Q, k: int, ops) -> list[int]:
    """Optimal split of m weighted points into k intervals: the k+1 cuts ``0 = b_0 < ... < b_k = m``.

    ``W``, ``S``, ``Q`` (float64, length m+1) are prefix sums of the counts, values and
    squares. ``D[j][i] = min_t D[j-1][t] + cost(t, i)``; small problems (``k * m**2 <=
    _DENSE_WORK``) compute each row as one dense minimum, larger ones by divide and
    conquer, since the smallest minimising ``t`` never decreases as ``i`` grows (the
    interval cost is Monge; Wang and Song 2011, Gronlund et al. 2017).
    """
    m = W.shape[0] - 1
    if k == 1:
        return [0, m]
    dense = k * (m + 1) ** 2 <= _DENSE_WORK
    args = _dp_dense(W, S, Q, k, ops) if dense else _dp_monotone(W, S, Q, k, ops)
    cuts = [m]
    for arg in reversed(args):
        cuts.append(int(arg[cuts[-1]]))
    cuts.append(0)
    return cuts[::-1]


def _dp_dense(W, S, Q, k: int, ops) -> list:
    """Argmin tables of DP rows 2..k over a precomputed matrix of interval costs.

    Each row takes the dense minimum at every ``s``-th ``i`` (the pivots); the smallest
    minimising ``t`` never decreases with ``i``, so the rows between two pivots search only
    a window that covers the pivots' minimisers (as wide as the widest gap).
    """
    m = W.shape[0] - 1
    E = _explained_matrix(W, S, ops)  # the cost of (t, i] is Q[i] - Q[t] - E[i, t]
    D = Q - E[:, 0]  # one part: the interval (0, i]
    rows = ops.arange(m + 1)
    s = math.isqrt(m + 1) if m + 1 >= _PIVOT_MIN else 1
    is_pivot = (rows % s == s - 1) | (rows == m)
    piv, rest = rows[is_pivot], rows[~is_pivot]
    group = ops.count_le(piv, rest)  # the first pivot after each other row
    pr, rr = ops.arange(piv.shape[0]), ops.arange(rest.shape[0])
    pivot_rows, best = E[piv], ops.empty(m + 1, D)
    args = []
    for _ in range(2, k):
        H = Q - D  # D[j][i] = Q[i] - max_t (E[i, t] + H[t])
        T = pivot_rows + H
        a = T.argmax(1)  # the first maximum: the smallest t
        arg = ops.empty(m + 1, rows)
        best[piv], arg[piv] = T[pr, a], a
        if rest.shape[0]:  # between pivots: t from the lower pivot's maximiser to the upper's
            lo, hi = ops.cat([ops.ints([0]), a])[group], a[group]
            w = int((hi - lo).max()) + 1
            lo = ops.minimum(lo, m + 1 - w)  # windows [lo, lo + w) inside the row
            band = ops.windows(E, w)[rest, lo] + ops.windows(H, w)[lo]
            b = band.argmax(1)
            best[rest], arg[rest] = band[rr, b], lo + b
        D = Q - best
        args.append(arg)
    last = ops.full(m + 1, 0, rows)
    last[m] = (E[m] + (Q - D)).argmax()  # the last row only needs i = m
    return [*args, last]


def _explained_matrix(W, S, ops, block: int = 64):
    """``E[i, t] = (S[i] - S[t])**2 / (W[i] - W[t])`` for ``t < i``, ``-inf`` elsewhere.

    Built in blocks of rows, each only as wide as it needs, so half of it is never computed.
    """
    m = W.shape[0] - 1
    E = ops.full((m + 1) * (m + 1), -ops.inf, W).reshape(m + 1, m + 1)
    for lo in range(1, m + 1, block):
        hi = min(m + 1, lo + block)  # rows lo..hi-1: t < lo always counts, lo <= t < hi - 1 may not
        w, s = W[lo:hi, None] - W[None, :hi - 1], S[lo:hi, None] - S[None, :hi - 1]
        E[lo:hi, :lo] = _explained(w[:, :lo], s[:, :lo], ops, nonempty=True)
        E[lo:hi, lo:hi - 1] = _explained(w[:, lo:], s[:, lo:], ops)
    return E


def _dp_monotone(W, S, Q, k: int, ops) -> list:
    """Argmin tables of DP rows 2..k by monotone divide and conquer, breadth first."""
    m = W.shape[0] - 1
    big = m + 1

    def cost(t, i):
        return _cost(W[i] - W[t], S[i] - S[t], Q[i] - Q[t], ops)

    rows = ops.arange(m + 1)
    D = ops.full(m + 1, math.inf, W)
    D[1:] = cost(rows[:1], rows[1:])  # one part: the interval (0, i]
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
            starts = ops.cumsum(length, 0) - length
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


def midpoints(centers: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Decision boundaries between ascending centres, rounded down to ``dtype``.

    ``x`` (of ``dtype``) belongs to cluster ``j`` iff ``mid[j-1] < x <= mid[j]``: the
    nearest centre, a value exactly half-way going to the lower one.
    """
    c = centers.double()
    return TorchOps.round_down((c[:-1] + c[1:]) * 0.5, dtype)


def nearest(flat: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of the ascending ``centers`` for 1-D work values, ties to the lower."""
    ops = ops_for(flat)
    mids = midpoints(centers, flat.dtype).to(flat.device)
    return ops.tensor(ops.labels(ops.asarray(flat), ops.asarray(mids))).to(flat.device)


def cluster_values(flat: torch.Tensor, k: int, caller: str, what: str, srt: Sorted | None = None):
    """``(centers, sorted)``: float64 centres (ascending, on flat's device) of k-means on
    the values of ``flat``, and their :class:`Sorted`. ``k`` above the number of distinct
    values raises a ``ValueError`` for ``caller`` naming ``what``."""
    srt = Sorted(flat) if srt is None else srt
    if not srt.finite:
        raise ValueError(f"{caller} can only cluster finite values; {what} has NaN or infinite ones.")
    d = srt.n_distinct()
    if k > d:
        raise invalid(ValueError, "n_clusters", caller,
                      f"<= the number of distinct values in {what} ({d})", repr(k))
    if k == 1:
        return srt.centers(srt.means(srt.ops.ints([0, srt.n]))), srt
    return srt.centers(srt.solve(k, d)), srt


def fit(x: torch.Tensor, k: int, caller: str, what: str, srt: Sorted | None = None):
    """Cluster the values of ``x``: ``(centers, sizes, mids, sorted)``.

    ``centers`` in x's dtype, cluster ``sizes`` (int64, from the sorted values), the
    decision boundaries ``mids`` (:func:`midpoints`) and the :class:`Sorted` values.
    """
    c64, srt = cluster_values(x, k, caller, what, srt)
    centers = c64.to(x.dtype)
    mids = midpoints(centers, srt.dtype)
    return centers, srt.sizes(mids), mids, srt


def kmeans_1d(x: torch.Tensor, n_clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K-means of the values of a tensor (one dimension): sorted, fast, deterministic.

    Minimises the inertia ``sum_i (x_i - centers[labels_i])**2``. With at most 4096
    distinct values the result is the exact global optimum (a dynamic programme over the
    sorted distinct values). With more, the same programme runs on a summary of the
    sorted values (about 24 blocks per cluster) and the result is refined on all of them
    by joint moves of the cluster boundaries (finally by up to 64 values) and Lloyd steps
    to a fixed point: at least as good as the best partition on the blocks' edges, but
    not proven optimal. Everything stays on the input's device.

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
    check_weight(x, caller, "x", finite=False)
    srt = Sorted(x)
    if not srt.finite:
        check_weight(x, caller, "x")  # raises, counting the NaN and infinite entries
    k = check_int(n_clusters, caller, "n_clusters", minimum=1)
    centers, _, mids, srt = fit(x, k, caller, "'x'", srt)
    ops = srt.ops
    flat = ops.asarray(work_values(x))
    labels = ops.tensor(ops.labels(flat, ops.asarray(mids.to(srt.device))))
    return centers, labels.to(x.device).view(x.shape)

"""Pruning whole k-means clusters of weight values, smallest ``|centre|`` first."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._select import n_to_prune
from .._table import Table, TableRepr
from .._validation import check_bool, check_int, check_sparsity, check_weight
from .solver import Sorted, fit, work_values

__all__ = ["KMeansPruneInfo", "kmeans_mask", "prune_clusters", "cluster_info"]


@dataclass(frozen=True, repr=False)
class KMeansPruneInfo(TableRepr):
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

    def _table(self) -> Table:
        head = (
            f"requested sparsity {self.requested_sparsity:.2%} ({self.n_target:,} of "
            f"{self.n_weights:,} weights), achieved {self.achieved_sparsity:.2%} "
            f"({self.n_pruned:,}) by pruning {self.n_clusters_pruned} of {self.n_clusters} clusters"
        )
        if self.n_already_pruned:
            head += f"; {self.n_already_pruned:,} were pruned before"
        rows = tuple((str(i), f"{c:.4g}", f"{s:,}", "yes" if p else "no")
                     for i, (c, s, p) in enumerate(zip(self.centers, self.sizes, self.pruned_clusters)))
        return Table(("cluster", "center", "size", "pruned"), rows, frozenset(range(4)),
                     total=False, title=head)


def _choose(centers: np.ndarray, sizes: np.ndarray, n_remove: int) -> np.ndarray:
    """Which clusters to prune: the p smallest |centre|, cumulative size nearest ``n_remove``.

    Clusters are ranked by |centre|, equal magnitudes by lower index (the negative centre).
    Among equally near counts the smaller p (fewer pruned weights) wins. Unless everything
    is to go, the cluster with the largest |centre| stays: a layer is never emptied below
    sparsity 1.
    """
    order = np.argsort(np.abs(centers), kind="stable")
    cum = np.concatenate([[0], np.cumsum(sizes[order])])
    if n_remove < cum[-1]:
        cum = cum[:-1]  # p <= k - 1
    pruned = np.zeros(centers.size, dtype=bool)
    pruned[order[:int(np.argmin(np.abs(cum - n_remove)))]] = True
    return pruned


def prune_clusters(values: torch.Tensor, k: int, n_remove: int, caller: str, what: str,
                   srt: Sorted | None = None):
    """Cluster 1-D ``values`` into ``k`` and prune whole clusters, about ``n_remove`` weights.

    Returns ``(keep, centers, sizes, pruned)``: a bool tensor shaped like the values
    (True = keep), the centres (values' dtype), cluster sizes (int64) and a bool tensor
    marking the pruned clusters. ``srt`` may pass the values' :class:`Sorted` if already built.
    """
    centers, sizes, mids, srt = fit(values, k, caller, what, srt)
    chosen = _choose(centers.double().cpu().numpy(), sizes.cpu().numpy(), n_remove)  # k values
    pruned = torch.from_numpy(chosen).to(centers.device)
    flat = work_values(values)
    ops = srt.ops
    picked = np.flatnonzero(chosen).tolist()
    if not picked:
        return torch.ones(flat.shape, dtype=torch.bool, device=flat.device), centers, sizes, pruned
    a, b = picked[0], picked[-1]
    if b - a + 1 == len(picked):
        # The clusters nearest zero form a run [a, b] of adjacent clusters (|centre| falls,
        # then rises, along ascending centres), i.e. one interval of values: two comparisons.
        lo = mids[a - 1].item() if a > 0 else None
        hi = mids[b].item() if b < k - 1 else None
        keep = ops.tensor(ops.outside(ops.asarray(flat), lo, hi)).to(flat.device)
        return keep, centers, sizes, pruned
    labels = ops.tensor(ops.labels(ops.asarray(flat), ops.asarray(mids.to(flat.device))))
    return ~pruned[labels.to(flat.device)], centers, sizes, pruned  # defensive


def cluster_info(requested, n, target, n_pruned, already, centers, sizes, pruned) -> KMeansPruneInfo:
    """A :class:`KMeansPruneInfo` from counts and the tensors :func:`prune_clusters` returns."""
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
    check_weight(weight, caller, finite=False)
    srt = Sorted(weight)
    if not srt.finite:
        check_weight(weight, caller)  # raises, counting the NaN and infinite entries
    sparsity = check_sparsity(sparsity, caller)
    k = check_int(n_clusters, caller, "n_clusters", minimum=1)
    check_bool(return_info, caller, "return_info")
    n = weight.numel()
    target = n_to_prune(sparsity, n)
    keep, centers, sizes, pruned = prune_clusters(weight, k, target, caller, "'weight'", srt)
    mask = keep.view(weight.shape)
    if not return_info:
        return mask
    n_pruned = int(sizes[pruned].sum())  # whole clusters: no pass over the mask
    return mask, cluster_info(sparsity, n, target, n_pruned, 0, centers, sizes, pruned)

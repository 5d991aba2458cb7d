"""The ``kmeans`` method: prune whole k-means clusters of weight values, in either scope."""

from __future__ import annotations

import warnings
from collections.abc import MutableMapping

import torch

from .._select import n_to_prune
from .._validation import argument_error, check_int
from ..cluster import prune_clusters
from ..cluster.pruning import cluster_info
from .base import Method

__all__ = ["KMeansMethod"]


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
    mask, with a warning. A layer whose unpruned weights are all equal (a constant layer)
    is left as it is, with a warning naming it; otherwise ``n_clusters`` must not exceed
    the number of distinct unpruned values of any layer (layer scope) or of all layers
    (global scope), checked, like everything else, before the model is changed.

    Options (keyword arguments of :func:`prunekit.prune`):

    * ``n_clusters``: number of clusters (default 8).
    * ``info``: ``None``, or a dictionary that receives a :class:`prunekit.KMeansPruneInfo`
      per layer name (``scope="layer"``) or under the key ``"global"`` (requested versus
      achieved sparsity, centres, cluster sizes). It is filled only on success.

    Examples:
        >>> import torch, prunekit as pk
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(
        ...     torch.nn.Linear(32, 16), torch.nn.Linear(16, 4))
        >>> info = {}
        >>> _ = pk.prune(model, 0.5, method="kmeans", n_clusters=8, info=info)
        >>> sorted(info)
        ['0', '1']
        >>> 0.3 < info["0"].achieved_sparsity < 0.7
        True
    """

    name = "kmeans"
    granularity = "weight"
    exact = False
    options = {"n_clusters": 8, "info": None}

    def check_options(self, options: dict, caller: str) -> dict:
        options = super().check_options(options, caller)
        check_int(options["n_clusters"], caller, "n_clusters", minimum=1)
        info = options["info"]
        if info is not None and not isinstance(info, MutableMapping):
            raise argument_error(TypeError, "info", caller, f"must be None or a dict to fill with "
                f"KMeansPruneInfo per layer. Got {info!r} instead."
            )
        return {**options, "_infos": {}}

    def scores(self, name, module, weight, options):
        return weight  # the values are clustered, not ranked

    def select(self, scores, group, options):
        n_remove = group.n_target - group.n_already
        what = ("the unpruned weights of all layers" if group.scope == "global"
                else f"the unpruned weights of layer {group.name or 'model'!r}")
        k = int(options["n_clusters"])
        if k > 1 and n_remove > 0 and bool((scores == scores[0]).all()):
            warnings.warn(
                f"prune(method='kmeans') left {what} as they are: they all have the same value "
                f"({float(scores[0]):g}), so there are no n_clusters={k} clusters to rank. "
                "Exclude the layer, or prune it with another method.",
                stacklevel=4,
            )
            return torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
        keep, centers, sizes, pruned = prune_clusters(scores, int(options["n_clusters"]),
                                                      n_remove, "prune", what)
        n_pruned = group.n_already + scores.numel() - int(torch.count_nonzero(keep))
        options["_infos"][group.name] = cluster_info(
            group.sparsity, group.n_units, n_to_prune(group.sparsity, group.n_units), n_pruned,
            group.n_already, centers, sizes, pruned)
        return keep

    def finish(self, options):
        if options["info"] is not None:
            options["info"].update(options["_infos"])

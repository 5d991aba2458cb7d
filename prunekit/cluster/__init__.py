"""One-dimensional k-means (exact or near-optimal) and pruning of whole clusters."""

from .pruning import KMeansPruneInfo, cluster_info, kmeans_mask, prune_clusters
from .solver import kmeans_1d

__all__ = ["kmeans_1d", "kmeans_mask", "KMeansPruneInfo", "prune_clusters", "cluster_info"]

"""The source document's code as written, for the book to show its problems; not part of the API."""

from __future__ import annotations

import torch
from sklearn.cluster import KMeans

__all__ = ["source_kmeans_mask"]


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
        >>> from prunekit.reference import source_kmeans_mask
        >>> w = torch.randn(1000, generator=torch.Generator().manual_seed(0))
        >>> mask = source_kmeans_mask(w, 8, 0.0, seed=0)
        >>> bool((~mask).any())     # sparsity 0 still prunes a cluster
        True
    """
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

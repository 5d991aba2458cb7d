"""prunekit: neural-network pruning for PyTorch, the companion package of the pruning book.

Tensor level (pure functions, ``True`` = keep)::

    pk.magnitude_mask(weight, sparsity, p=1)
    pk.gradient_mask(weight, grad, sparsity, criterion="taylor")
    pk.channel_mask(weight, sparsity, p=1)
    pk.kernel_mask(weight, sparsity, p=1)
    pk.kmeans_mask(weight, sparsity, n_clusters=8)

Model level (in place)::

    pk.prune(model, sparsity, method="l1", scope="layer", exclude=())
    pk.remove(model)
    pk.sparsity(model); print(pk.sparsity_report(model))

Masking sets weights to zero; it does not make a model smaller or faster by itself.
"""

import warnings as _warnings

from . import (
    calibration,
    cluster,
    data,
    lottery,
    measure,
    methods,
    models,
    plotting,
    schedules,
    scores,
    structured,
    targets,
    training,
)
from .cluster import KMeansPruneInfo, kmeans_1d
from .comparison import DEFAULT_METHODS, Comparison, compare
from .gradients import GRADIENT_STATISTICS, GradientStats, collect_gradient_stats
from .lottery import LotteryRound, LotteryTickets, lottery_tickets
from .masks import (
    channel_mask,
    gradient_mask,
    kernel_mask,
    kmeans_mask,
    magnitude_mask,
    mask_from_scores,
)
from .measure import (
    CompressionReport,
    Latency,
    LayerCompression,
    LayerSparsity,
    ModelComparison,
    SparsityReport,
    compare_models,
    compression_report,
    count_macs,
    count_parameters,
    measure_latency,
    model_size_bytes,
    nm_storage_bits,
    sparse_storage_bits,
    sparsity,
    sparsity_report,
)
from .methods import METHODS, Method, register_method
from .methods.slimming import slimming_loss, slimming_penalty
from .obs import obs_prune
from .oneshot import InputStats, nm_mask, sparsegpt, wanda_mask
from .pruning import SCOPES, prunable_layers, prune
from .reparam import effective_tensor, load_state_dict, remove
from .scores import GRADIENT_SCORES
from .sensitivity import SensitivityScan, sensitivity_scan
from .sharing import SharedWeights, share_weights
from .structured import UnsupportedGraphError, shrink, tp_prune

__version__ = "0.2.0"

__all__ = [
    "__version__",
    # subpackages and modules
    "calibration",
    "cluster",
    "data",
    "lottery",
    "measure",
    "methods",
    "models",
    "plotting",
    "schedules",
    "scores",
    "structured",
    "targets",
    "training",
    # tensor level
    "magnitude_mask",
    "gradient_mask",
    "channel_mask",
    "kernel_mask",
    "kmeans_mask",
    "mask_from_scores",
    "nm_mask",
    "wanda_mask",
    "sparsegpt",
    "InputStats",
    "obs_prune",
    "kmeans_1d",
    "KMeansPruneInfo",
    # model level
    "prune",
    "remove",
    "load_state_dict",
    "effective_tensor",
    "prunable_layers",
    "SCOPES",
    # measuring
    "sparsity",
    "sparsity_report",
    "SparsityReport",
    "LayerSparsity",
    "count_parameters",
    "count_macs",
    "model_size_bytes",
    "sparse_storage_bits",
    "nm_storage_bits",
    "compression_report",
    "CompressionReport",
    "LayerCompression",
    "measure_latency",
    "Latency",
    "compare_models",
    "ModelComparison",
    # gradient statistics
    "collect_gradient_stats",
    "GradientStats",
    "GRADIENT_STATISTICS",
    "GRADIENT_SCORES",
    # weight sharing
    "share_weights",
    "SharedWeights",
    # structured pruning made physical
    "shrink",
    "UnsupportedGraphError",
    "tp_prune",
    "sensitivity_scan",
    "SensitivityScan",
    # comparing methods fairly
    "compare",
    "Comparison",
    "DEFAULT_METHODS",
    # lottery tickets
    "lottery_tickets",
    "LotteryTickets",
    "LotteryRound",
    # extension
    "Method",
    "register_method",
    "slimming_penalty",
    "slimming_loss",
    "METHODS",
]

#: names that left the top level in 0.2: name -> (new home, module to import it from)
_MOVED = {
    "TinyResNet": ("prunekit.models.TinyResNet", "models"),
    "PrunekitImportance": ("prunekit.structured.PrunekitImportance", "structured"),
    "PRUNABLE_TYPES": ("prunekit.targets.PRUNABLE_TYPES", "targets"),
}


def __getattr__(name):
    if name in _MOVED:
        where, module = _MOVED[name]
        _warnings.warn(f"prunekit.{name} moved to {where}; the old name goes away in the next "
                       "release.", DeprecationWarning, stacklevel=2)
        return getattr(globals()[module], name)
    raise AttributeError(f"module 'prunekit' has no attribute {name!r}")

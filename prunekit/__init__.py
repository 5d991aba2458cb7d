"""prunekit: neural-network pruning for PyTorch, the companion package of the pruning book.

Tensor level (pure functions, ``True`` = keep)::

    pk.magnitude_mask(weight, sparsity, p=1)
    pk.gradient_mask(weight, grad, sparsity, criterion="taylor")
    pk.channel_mask(weight, sparsity, p=1)
    pk.kernel_mask(weight, sparsity, p=1)

Model level (in place, through ``torch.nn.utils.prune``)::

    pk.prune(model, sparsity, method="l1", scope="layer", exclude=())
    stats = pk.collect_gradient_stats(model, loader, loss_fn)   # over many batches
    pk.prune(model, sparsity, method="taylor", stats=stats)     # or "gradient", "fisher"
    pk.remove(model)
    pk.sparsity(model)          # achieved fraction of zeros
    print(pk.sparsity_report(model))

Comparing methods fairly (same start, same fine-tuning budget, several seeds)::

    result = pk.compare(model_fn, train_loader, test_loader, sparsities=[0.5, 0.9])
    print(result); result.plot("compression_ratio", "accuracy")

Masking sets weights to zero; it does not make a model smaller or faster by itself.
"""

from . import data, models, plotting, schedules, training
from .gradients import GRADIENT_SCORES, GRADIENT_STATISTICS, GradientStats, collect_gradient_stats
from .compare import DEFAULT_METHODS, Comparison, compare
from .kmeans import (
    CompressionReport,
    KMeansPruneInfo,
    LayerCompression,
    SharedWeights,
    compression_report,
    kmeans_1d,
    kmeans_mask,
    share_weights,
)
from .masks import channel_mask, gradient_mask, kernel_mask, magnitude_mask, mask_from_scores
from .metrics import LayerSparsity, SparsityReport, sparsity, sparsity_report
from .profile import (
    Latency,
    ModelComparison,
    compare_models,
    count_macs,
    count_parameters,
    measure_latency,
    model_size_bytes,
    sparse_storage_bits,
)
from .prune import (
    METHODS,
    PRUNABLE_TYPES,
    SCOPES,
    Method,
    effective_tensor,
    load_state_dict,
    prunable_layers,
    prune,
    register_method,
    remove,
)
from .sensitivity import SensitivityScan, sensitivity_scan
from .structured import UnsupportedGraphError, shrink
from .tp_adapter import PrunekitImportance, TinyResNet, tp_prune

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # submodules the chapters share
    "data",
    "models",
    "plotting",
    "schedules",
    "training",
    # tensor level
    "magnitude_mask",
    "gradient_mask",
    "channel_mask",
    "kernel_mask",
    "mask_from_scores",
    # model level
    "prune",
    "remove",
    "load_state_dict",
    "sparsity",
    "sparsity_report",
    "SparsityReport",
    "LayerSparsity",
    "effective_tensor",
    "prunable_layers",
    # gradient-based pruning (chapter 2)
    "collect_gradient_stats",
    "GradientStats",
    "GRADIENT_STATISTICS",
    "GRADIENT_SCORES",
    # k-means: cluster pruning and weight sharing (chapter 3)
    "kmeans_1d",
    "kmeans_mask",
    "KMeansPruneInfo",
    "share_weights",
    "SharedWeights",
    "compression_report",
    "CompressionReport",
    "LayerCompression",
    # structured pruning: physical removal, measurement, sensitivity (chapter 4)
    "shrink",
    "UnsupportedGraphError",
    "sensitivity_scan",
    "SensitivityScan",
    "tp_prune",
    "PrunekitImportance",
    "TinyResNet",
    "count_parameters",
    "count_macs",
    "model_size_bytes",
    "sparse_storage_bits",
    "measure_latency",
    "Latency",
    "compare_models",
    "ModelComparison",
    # comparing methods fairly (chapter 5)
    "compare",
    "Comparison",
    "DEFAULT_METHODS",
    # extension
    "Method",
    "register_method",
    "METHODS",
    "SCOPES",
    "PRUNABLE_TYPES",
]

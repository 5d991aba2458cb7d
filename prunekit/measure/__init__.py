"""Measuring what pruning did: sparsity, parameters and MACs, storage bits, latency."""

from .counts import count_macs, count_parameters, model_size_bytes
from .latency import Latency, ModelComparison, compare_models, measure_latency
from .nm import follows_pattern, nm_storage_bits
from .report import LayerSparsity, SparsityReport, sparsity, sparsity_report
from .storage import (
    STORAGE_GRANULARITIES,
    CompressionReport,
    LayerCompression,
    compression_report,
    sparse_storage_bits,
)

__all__ = [
    "sparsity",
    "sparsity_report",
    "SparsityReport",
    "LayerSparsity",
    "count_parameters",
    "count_macs",
    "model_size_bytes",
    "sparse_storage_bits",
    "nm_storage_bits",
    "follows_pattern",
    "STORAGE_GRANULARITIES",
    "compression_report",
    "CompressionReport",
    "LayerCompression",
    "measure_latency",
    "Latency",
    "compare_models",
    "ModelComparison",
]

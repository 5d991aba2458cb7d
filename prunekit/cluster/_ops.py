"""Which array operations the 1-D k-means runs on: NumPy for CPU tensors, torch elsewhere."""

from __future__ import annotations

import torch

from .._arrays import NUMPY, NumpyOps, TorchOps, numpy_ok

__all__ = ["NumpyOps", "TorchOps", "ops_for", "FORCE_TORCH"]

FORCE_TORCH = False  # tests set it to run the torch implementation on the CPU


def ops_for(flat: torch.Tensor) -> NumpyOps | TorchOps:
    """The implementation for 1-D work values: NumPy for CPU float32/float64, else torch."""
    return NUMPY if not FORCE_TORCH and numpy_ok(flat) else TorchOps(flat.device)

"""Importance scores: tensors in, scores out. Higher score = more important = kept longer.

Each function is pure (inputs are never modified) and vectorised. Scores are computed per
*unit*: a single weight for unstructured criteria, an output channel for
:func:`channel_scores`, a ``k x k`` kernel for :func:`kernel_scores`.
"""

from __future__ import annotations

import torch

__all__ = [
    "magnitude_scores",
    "gradient_scores",
    "channel_scores",
    "kernel_scores",
    "GRADIENT_CRITERIA",
]

#: criterion name -> what it scores (the docstring of :func:`gradient_scores` explains each)
GRADIENT_CRITERIA = ("gradient", "taylor")


def magnitude_scores(weight: torch.Tensor, p: int = 1) -> torch.Tensor:
    """``|w|`` per weight.

    For single weights the L1 score ``|w|`` and the L2 score ``w**2`` rank identically
    (squaring is monotonic on non-negative numbers), so both orders use ``|w|``. L1 and L2
    only differ once weights are grouped (channels, kernels) or used as a training penalty.
    """
    del p  # same ranking for p = 1 and p = 2; kept for a uniform signature
    return weight.detach().abs()


def gradient_scores(weight: torch.Tensor, grad: torch.Tensor, criterion: str = "taylor") -> torch.Tensor:
    """Scores from a gradient (or an accumulated gradient statistic) shaped like ``weight``.

    * ``"gradient"``: ``|g|``, the source document's idea (small gradient = unimportant).
    * ``"taylor"``: ``|w * g|``, the first-order Taylor estimate of the loss change when
      ``w`` is set to zero (Molchanov et al. 2017; SNIP's connection sensitivity).
    """
    g = grad.detach()
    if criterion == "gradient":
        return g.abs()
    if criterion == "taylor":
        return (weight.detach() * g).abs()
    raise ValueError(f"unknown gradient criterion {criterion!r}")  # validated by callers


def channel_scores(weight: torch.Tensor, p: int = 1) -> torch.Tensor:
    """Lp norm of each output channel (dim 0): shape ``(weight.shape[0],)``.

    Matches the norm ``torch.nn.utils.prune.ln_structured(..., n=p, dim=0)`` ranks by.
    """
    w = weight.detach().reshape(weight.shape[0], -1)
    return torch.linalg.vector_norm(w, ord=p, dim=1)


def kernel_scores(weight: torch.Tensor, p: int = 1) -> torch.Tensor:
    """Lp norm of each ``kH x kW`` kernel of a 4-D conv weight: shape ``(out, in)``."""
    return torch.linalg.vector_norm(weight.detach(), ord=p, dim=(2, 3))

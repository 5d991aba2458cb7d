"""Importance scores: tensors in, scores out (higher = kept longer); pure and vectorised."""

from __future__ import annotations

import torch

__all__ = [
    "magnitude_scores",
    "gradient_scores",
    "channel_scores",
    "kernel_scores",
    "statistic_scores",
    "GRADIENT_CRITERIA",
    "GRADIENT_SCORES",
    "STATISTIC_OF",
]

#: criterion name -> what it scores (the docstring of :func:`gradient_scores` explains each)
GRADIENT_CRITERIA = ("gradient", "taylor")

#: gradient score (and ``prune`` method) -> the gradient statistic it is computed from
STATISTIC_OF = {"gradient": "abs_grad", "taylor": "grad", "fisher": "sq_grad"}

#: the gradient-based scores (and ``prune`` methods): ``"gradient"``, ``"taylor"``, ``"fisher"``
GRADIENT_SCORES = tuple(STATISTIC_OF)


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


def statistic_scores(criterion: str, weight: torch.Tensor, stat: torch.Tensor) -> torch.Tensor:
    """Per-weight score of a gradient criterion from the statistic it reads (:data:`STATISTIC_OF`).

    ``"gradient"``: ``|sum_b |g_b|| = sum_b |g_b|``; ``"taylor"``: ``|w * sum_b g_b|``;
    ``"fisher"``: ``w**2 * sum_b g_b**2``.
    """
    if criterion == "fisher":
        w = weight.detach()
        return w * w * stat.detach()
    return gradient_scores(weight, stat, criterion)

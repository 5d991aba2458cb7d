"""Optimal Brain Surgeon (Hassibi & Stork 1993) on one tensor, with an exact Hessian.

OBS removes weights one at a time. With ``H`` the Hessian of the loss with respect to the
flattened weight ``w`` and ``Hinv`` its inverse, removing weight ``q`` and letting every
other weight move optimally (under the quadratic model of the loss) costs

    L_q = w_q**2 / (2 * Hinv[q, q])         with the update   dw = -(w_q / Hinv[q, q]) Hinv[:, q].

After a removal, the inverse Hessian of the remaining weights is the rank-one update
``Hinv - Hinv[:, q] Hinv[q, :] / Hinv[q, q]`` (row and column ``q`` become zero), so every
step costs O(n^2) and no matrix is inverted twice. Optimal Brain Damage keeps only the
diagonal of ``H`` and moves nothing: its saliency is ``h_qq * w_q**2 / 2``.

SparseGPT (Frantar & Alistarh 2023, ``method="sparsegpt"``) is this step applied row by
row to the layer-reconstruction loss, whose Hessian ``2 X X^T`` every row shares.
"""

from __future__ import annotations

import numbers

import torch

from ._select import n_to_prune
from ._validation import check_sparsity, check_weight, describe, invalid

__all__ = ["obs_prune"]

_CALLER = "obs_prune"


def _check_damp(damp) -> float:
    must = "a non-negative real number"
    if isinstance(damp, bool) or not isinstance(damp, numbers.Real):
        raise invalid(TypeError, "damp", _CALLER, must, repr(damp))
    damp = float(damp)
    if not damp >= 0.0 or damp == float("inf"):
        raise invalid(ValueError, "damp", _CALLER, must, repr(damp))
    return damp


def _check_hessian(hessian, n: int) -> None:
    if not isinstance(hessian, torch.Tensor) or not hessian.is_floating_point():
        got = describe(hessian) if isinstance(hessian, torch.Tensor) else type(hessian).__name__
        raise invalid(TypeError, "hessian", _CALLER, "a floating-point torch.Tensor", got)
    if hessian.shape != (n, n):
        raise invalid(ValueError, "hessian", _CALLER,
                      f"a square ({n}, {n}) tensor, n = weight.numel() = {n}", describe(hessian))
    if not bool(torch.isfinite(hessian).all()):
        raise invalid(ValueError, "hessian", _CALLER, "finite", "a tensor with inf or nan values")


def obs_prune(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, *,
              damp: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal Brain Surgeon: prune ``round(sparsity * n)`` weights one by one, updating the rest.

    At every step the weight with the smallest saliency ``w_q**2 / (2 [H^-1]_qq)`` among
    those still kept is removed (ties go to the lower index), all other kept weights move
    by ``-(w_q / [H^-1]_qq) H^-1 e_q``, and the inverse Hessian is updated for the
    removal. For a quadratic loss ``0.5 (w - w*)^T H (w - w*)`` each step is the exact
    optimum for its weight, and the kept weights always minimise the loss given the
    weights removed so far. Each step is a few vectorised O(n^2) operations; the
    computation runs in float64 on ``weight``'s device. Meant for small layers: ``H``
    has ``n^2`` entries (a 100 -> 10 layer: 1,000 x 1,000).

    Args:
        weight: floating-point tensor of any shape with ``n`` entries. Not modified.
        hessian: ``(n, n)`` symmetric positive-definite Hessian of the loss with respect
            to ``weight.flatten()`` (row-major). Not modified.
        sparsity: fraction of entries to prune, a real number in [0, 1].
        damp: added to the diagonal as ``damp * mean(diag(hessian))`` before inverting
            (as SparseGPT's ``percdamp``). A cross-entropy Hessian is singular (adding one
            vector to every row of a classifier's weight leaves the loss unchanged), so it
            needs ``damp > 0``; ``0`` keeps the Hessian exact.

    Returns:
        ``(new_weight, mask)``: the updated weight, shaped and typed like ``weight``, with
        exact zeros where pruned, and the ``torch.bool`` keep-mask (``True`` = keep) that
        prunes exactly ``round(sparsity * n)`` entries.

    Raises:
        TypeError, ValueError: for a bad argument, naming it and the value received; a
            ``hessian`` that is not symmetric positive definite (after ``damp``) is refused.

    Examples:
        >>> import torch, prunekit as pk
        >>> w = torch.tensor([1.0, 0.5, 2.0])
        >>> H = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
        >>> new_w, keep = pk.obs_prune(w, H, 1 / 3)
        >>> keep
        tensor([ True, False,  True])
        >>> new_w     # weight 0 absorbs part of the removed weight 1: 1 + 0.5 / 2
        tensor([1.2500, 0.0000, 2.0000])
    """
    check_weight(weight, _CALLER)
    n = weight.numel()
    _check_hessian(hessian, n)
    sparsity = check_sparsity(sparsity, _CALLER)
    damp = _check_damp(damp)

    h = hessian.detach().to(device=weight.device, dtype=torch.float64)
    scale = float(h.abs().max()) or 1.0
    if not torch.allclose(h, h.T, rtol=1e-5, atol=1e-8 * scale):
        raise invalid(ValueError, "hessian", _CALLER, "symmetric",
                      f"a tensor with max |H - H^T| = {float((h - h.T).abs().max()):.3g}")
    h = (h + h.T) / 2
    if damp:
        h = h + damp * h.diagonal().mean() * torch.eye(n, dtype=h.dtype, device=h.device)
    chol, info = torch.linalg.cholesky_ex(h)
    if int(info) != 0:
        raise invalid(ValueError, "hessian", _CALLER,
                      "symmetric positive definite (pass damp > 0 for a singular one)",
                      f"a matrix that is not (Cholesky failed at column {int(info) - 1}, "
                      f"damp={damp!r})")
    hinv = torch.cholesky_inverse(chol)

    w = weight.detach().reshape(-1).to(torch.float64).clone()
    # The working set: `hinv` and `w_kept` cover the positions `idx` (ascending); removed
    # weights drop out of it whenever it has shrunk by a quarter, so later steps are cheaper.
    idx = torch.arange(n, device=weight.device)
    w_kept = w.clone()
    alive = torch.ones(n, dtype=torch.bool, device=weight.device)
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=weight.device)
    n_alive = n
    for _ in range(n_to_prune(sparsity, n)):
        saliency = torch.where(alive, w_kept.square() / (2 * hinv.diagonal()), inf)
        q = int(torch.argmin(saliency))          # first minimum: ties to the lower index
        col = hinv[:, q].clone()
        w_kept -= (w_kept[q] / col[q]) * col     # the OBS update; w_kept[q] becomes 0
        hinv.addr_(col, col, alpha=-1.0 / float(col[q]))   # inverse Hessian without weight q
        alive[q] = False
        w_kept[~alive] = 0.0                     # exact zeros (rounding leaves ~1e-17)
        n_alive -= 1
        if n_alive < 0.75 * alive.numel() and n_alive > 0:
            w[idx] = w_kept
            keep_local = torch.nonzero(alive).flatten()
            idx, w_kept = idx[keep_local], w_kept[keep_local]
            hinv = hinv[keep_local][:, keep_local]
            alive = torch.ones(n_alive, dtype=torch.bool, device=weight.device)
    w[idx] = w_kept
    keep = torch.zeros(n, dtype=torch.bool, device=weight.device)
    keep[idx[alive]] = True
    return w.to(weight.dtype).view(weight.shape), keep.view(weight.shape)

"""One-shot pruning kernels from calibration data: N:M masks, Wanda scores, SparseGPT, input statistics."""

from __future__ import annotations

import math
import numbers

import torch

from ._validation import argument_error, check_int, check_sparsity, check_weight, describe, invalid
from .calibration import InputStats  # re-exported: it lived here first

__all__ = [
    "nm_mask",
    "row_mask_from_scores",
    "wanda_scores",
    "wanda_mask",
    "InputStats",
    "sparsegpt",
    "sparsegpt_into",
]

_HALF = (torch.float16, torch.bfloat16)
_SUB = 8  # SparseGPT: columns per batched update inside a block
_PAIRWISE = 1 << 18  # N:M groups * m * m up to this: rank by pairwise comparison, above it: sort


# --------------------------------------------------------------------------------------
# Validation shared by the functions below
# --------------------------------------------------------------------------------------


def _check_scores(scores, caller: str, name: str = "scores") -> torch.Tensor:
    """A non-empty floating-point tensor without NaN (``-inf`` marks already pruned entries)."""
    if not isinstance(scores, torch.Tensor):
        raise invalid(TypeError, name, caller, "a torch.Tensor", type(scores).__name__)
    if not scores.is_floating_point():
        raise invalid(TypeError, name, caller, "a floating-point tensor", describe(scores))
    if scores.numel() == 0:
        raise invalid(ValueError, name, caller, "a non-empty tensor", describe(scores))
    if bool(torch.isnan(scores).any()):
        bad = int(torch.isnan(scores).sum())
        raise invalid(ValueError, name, caller, "free of NaN", f"{describe(scores)} with {bad} NaN entries")
    return scores


def _check_nm(n, m, caller: str) -> tuple[int, int]:
    m = check_int(m, caller, "m", minimum=1)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise invalid(TypeError, "n", caller, "an integer", repr(n))
    if not 0 <= n < m:
        raise invalid(ValueError, "n", caller, f"an integer in the range [0, m - 1] = [0, {m - 1}] (m={m})",
                      repr(n))
    return int(n), m


def _check_divides(m: int, size: int, caller: str) -> None:
    if size % m:
        raise argument_error(ValueError, "m", caller, f"must divide the input dimension (in={size}). "
                         f"Got {m} instead.")


def _wide(t: torch.Tensor) -> torch.Tensor:
    # float32 holds every half/bfloat16 value exactly; selection kernels want float32 on CPU
    return t.float() if t.dtype in _HALF else t


# --------------------------------------------------------------------------------------
# Selection: N:M groups and exact counts per row
# --------------------------------------------------------------------------------------


def _nm_keep_rows(rows: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask for ``rows`` (..., k*m): in each run of m along the last dim keep the n highest."""
    g = _wide(rows).reshape(-1, m)
    if g.shape[0] * m * m <= _PAIRWISE:
        # rank of each entry in its group: how many are lower, or equal at a lower index.
        # A few elementwise ops: on small inputs cheaper than a sort (and its scatter).
        a, b = g.unsqueeze(2), g.unsqueeze(1)
        lower = torch.ones(m, m, dtype=torch.bool, device=g.device).tril_(-1)  # [i, j]: j < i
        rank = ((b < a) | ((b == a) & lower)).sum(2)
        keep = rank >= m - n
    else:
        order = torch.sort(g, dim=1, stable=True).indices  # ascending; equal scores in index order
        keep = torch.ones(g.shape, dtype=torch.bool, device=g.device)
        keep.scatter_(1, order[:, : m - n], False)
    keep &= g != -math.inf  # already pruned entries stay pruned
    return keep.view(rows.shape)


def _nm_prune_columns(s: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Prune-mask for one N:M group stored as columns, ``s`` (m, out): the m - n lowest per column.

    SparseGPT's sweep holds a group as m contiguous rows of W^T. Pairwise ranks over dim 0
    with ties to the lower index, as :func:`_nm_keep_rows`, without its transposes and
    about 2x faster on (4, 2048); large groups go through that function's sort.
    """
    if s.numel() * m > _PAIRWISE:
        return ~_nm_keep_rows(s.T, n, m).T
    a, b = s.unsqueeze(1), s.unsqueeze(0)
    lower = torch.ones(m, m, dtype=torch.bool, device=s.device).tril_(-1).unsqueeze(2)  # [i, j]: j < i
    rank = ((b < a) | ((b == a) & lower)).sum(1, dtype=torch.uint8)
    return rank < m - n


def _prune_lowest(s: torch.Tensor, k: int) -> torch.Tensor:
    """Bool (R, C): True for the k lowest entries of every row of ``s``, ties to the lower index."""
    rows, cols = s.shape
    if k <= 0:
        return torch.zeros(s.shape, dtype=torch.bool, device=s.device)
    if k >= cols:
        return torch.ones(s.shape, dtype=torch.bool, device=s.device)
    s = _wide(s)
    # the k-th smallest of each row: from the smaller of the two partial selections
    if k <= cols - k + 1:
        threshold = torch.topk(s, k, dim=1, largest=False, sorted=False).values.amax(1, keepdim=True)
    else:
        threshold = torch.topk(s, cols - k + 1, dim=1, sorted=False).values.amin(1, keepdim=True)
    prune = s < threshold
    tied = s == threshold
    need = k - prune.sum(1, keepdim=True)  # how many ties at the threshold each row must prune
    if bool((tied.sum(1, keepdim=True) == need).all()):
        return prune | tied
    return prune | (tied & (tied.cumsum(1) <= need))  # the lowest-index ties first


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """N:M keep-mask: in every group of ``m`` consecutive inputs keep the ``n`` highest scores.

    Groups run along the input dimension, NVIDIA's 2:4 convention (what
    ``torch.sparse.to_sparse_semi_structured`` expects): the last dim of a 2-D ``(out, in)``
    weight; for a conv weight ``(out, in, *k)`` along ``in`` separately for every output and
    kernel position, as NVIDIA's ASP does; a 1-D tensor is one row. Within a group, ties
    are pruned at the lower index first (as :func:`prunekit.mask_from_scores` does).
    ``-inf`` scores mark entries already pruned: they are pruned first and never kept, so
    such a group keeps fewer than ``n``.

    Args:
        scores: floating-point importance scores shaped like the weight, no NaN. Not modified.
        n: how many to keep in each group, ``0 <= n < m``.
        m: group size; must divide the input dimension.

    Returns:
        ``torch.bool`` tensor shaped like ``scores`` on its device; ``True`` = keep. With
        finite scores exactly ``n`` of every ``m`` are kept (sparsity ``1 - n/m``).

    Raises:
        TypeError, ValueError: for a bad argument, naming it and the value received.

    Examples:
        >>> import torch
        >>> from prunekit.oneshot import nm_mask
        >>> nm_mask(torch.tensor([[4., 1., 3., 2., 0., 0., 5., 0.]]), 2, 4)
        tensor([[ True, False,  True, False, False, False,  True,  True]])
    """
    caller = "nm_mask"
    _check_scores(scores, caller)
    n, m = _check_nm(n, m, caller)
    dim = 0 if scores.dim() == 1 else 1
    _check_divides(m, scores.shape[dim], caller)
    with torch.no_grad():
        t = scores.detach().movedim(dim, -1)
        return _nm_keep_rows(t, n, m).movedim(-1, dim).contiguous()


def row_mask_from_scores(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask that prunes exactly ``round(sparsity * in)`` lowest scores in every output row.

    Rows are ``scores.reshape(out, -1)`` (dim 0 indexes outputs; a conv row holds
    ``in * kH * kW`` entries). Ties are pruned at the lower index first; ``-inf`` scores are
    pruned first and count towards the row's exact number. Wanda compares scores within
    each output row this way.

    Args:
        scores: floating-point tensor with at least 2 dims, no NaN. Not modified.
        sparsity: fraction of each row to prune, in [0, 1].

    Returns:
        ``torch.bool`` tensor shaped like ``scores``; ``True`` = keep.

    Raises:
        TypeError, ValueError: for a bad argument, naming it and the value received.

    Examples:
        >>> import torch
        >>> from prunekit.oneshot import row_mask_from_scores
        >>> scores = torch.tensor([[3., 1., 2., 4.], [1., 1., 1., 1.]])
        >>> row_mask_from_scores(scores, 0.5)
        tensor([[ True, False, False,  True],
                [False, False,  True,  True]])
    """
    caller = "row_mask_from_scores"
    _check_scores(scores, caller)
    if scores.dim() < 2:
        raise invalid(ValueError, "scores", caller, "a tensor with at least 2 dimensions (dim 0 indexes "
                      "output rows)", describe(scores))
    sparsity = check_sparsity(sparsity, caller)
    with torch.no_grad():
        rows = scores.detach().reshape(scores.shape[0], -1)
        k = int(round(sparsity * rows.shape[1]))
        return (~_prune_lowest(rows, k)).view(scores.shape)


# --------------------------------------------------------------------------------------
# Wanda (Sun et al. 2024, "A Simple and Effective Pruning Approach for Large Language Models")
# --------------------------------------------------------------------------------------


def _check_norms(weight: torch.Tensor, input_norms, caller: str) -> torch.Tensor:
    cols = weight[0].numel()
    if not isinstance(input_norms, torch.Tensor) or not input_norms.is_floating_point():
        raise invalid(TypeError, "input_norms", caller, "a floating-point torch.Tensor",
                      describe(input_norms))
    if input_norms.shape != (cols,):
        raise invalid(ValueError, "input_norms", caller, f"a 1-D tensor of shape ({cols},), one norm per "
                      "input column of weight.reshape(out, -1)", describe(input_norms))
    lo, hi = torch.aminmax(input_norms.detach())
    if not (bool(torch.isfinite(hi)) and float(lo) >= 0):
        raise invalid(ValueError, "input_norms", caller, "finite and non-negative (they are norms)",
                      f"{describe(input_norms)} with minimum {float(lo)} and maximum {float(hi)}")
    return input_norms


def wanda_scores(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """Wanda importance ``|W_ij| * ||X_j||_2`` (Sun et al. 2024).

    ``X_j`` is input feature j over every calibration token (:meth:`InputStats.norms`).
    Compare the scores within each output row (:func:`row_mask_from_scores`) or within
    N:M groups (:func:`nm_mask`), as the paper does.

    Args:
        weight: floating-point ``(out, in)`` weight, finite; a conv weight ``(out, in, *k)``
            is read as ``weight.reshape(out, -1)`` (the feature order of ``F.unfold``). Not modified.
        input_norms: ``(in,)`` (``(in * prod(k),)`` for conv), finite and non-negative.

    Returns:
        Scores shaped like ``weight`` on its device, in float32 (float64 for a float64 weight).

    Raises:
        TypeError, ValueError: for a bad argument, naming it and the value received.

    Examples:
        >>> import torch
        >>> from prunekit.oneshot import wanda_scores
        >>> weight = torch.tensor([[1., -2.], [3., 0.5]])
        >>> wanda_scores(weight, torch.tensor([4., 1.]))
        tensor([[ 4.0000,  2.0000],
                [12.0000,  0.5000]])
    """
    caller = "wanda_scores"
    check_weight(weight, caller, min_ndim=2)
    _check_norms(weight, input_norms, caller)
    dtype = torch.promote_types(weight.dtype, torch.float32)
    with torch.no_grad():
        rows = weight.detach().reshape(weight.shape[0], -1).to(dtype).abs()
        return rows.mul_(input_norms.detach().to(device=weight.device, dtype=dtype)).view(weight.shape)


def wanda_mask(weight: torch.Tensor, input_norms: torch.Tensor, sparsity: float | None = None, *,
               n: int | None = None, m: int | None = None) -> torch.Tensor:
    """Wanda keep-mask: per output row (``sparsity``) or N:M (``n``, ``m``); no weight update.

    Args:
        weight: floating-point ``(out, in)`` or conv weight, finite. Not modified.
        input_norms: ``||X_j||_2`` per input column, see ``wanda_scores``.
        sparsity: fraction of every row to prune (exactly ``round(sparsity * in)`` per row).
        n, m: keep ``n`` of every ``m`` instead (:func:`nm_mask`); ``sparsity`` may then be
            omitted or equal ``1 - n/m``.

    Returns:
        ``torch.bool`` tensor shaped like ``weight``; ``True`` = keep.

    Raises:
        TypeError, ValueError: for a bad argument, naming it and the value received.

    Examples:
        >>> import torch
        >>> from prunekit.oneshot import wanda_mask
        >>> weight = torch.tensor([[1., -2.], [3., 0.5]])
        >>> wanda_mask(weight, torch.tensor([4., 1.]), 0.5)
        tensor([[ True, False],
                [ True, False]])
    """
    caller = "wanda_mask"
    sparsity, n, m = _resolve_pattern(sparsity, n, m, caller)
    scores = wanda_scores(weight, input_norms)
    if n is not None:
        return nm_mask(scores, n, m)
    return row_mask_from_scores(scores, sparsity)


def _resolve_pattern(sparsity, n, m, caller: str):
    """``(sparsity, None, None)`` for unstructured, ``(1 - n/m, n, m)`` for N:M."""
    if n is None and m is None:
        if sparsity is None:
            raise TypeError(f"{caller}() needs either 'sparsity' or both 'n' and 'm' (N:M, e.g. n=2, m=4).")
        return check_sparsity(sparsity, caller), None, None
    if n is None or m is None:
        missing = "n" if n is None else "m"
        raise TypeError(f"{caller}() got only one of 'n' and 'm'; N:M sparsity needs both ({missing!r} is None).")
    n, m = _check_nm(n, m, caller)
    if sparsity is not None and abs(check_sparsity(sparsity, caller) - (1 - n / m)) > 1e-9:
        raise invalid(ValueError, "sparsity", caller, f"omitted or 1 - n/m = {1 - n / m!r} for {n}:{m} sparsity",
                      repr(sparsity))
    return 1 - n / m, n, m


# --------------------------------------------------------------------------------------
# SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be
# Accurately Pruned in One-Shot")
# --------------------------------------------------------------------------------------


def _check_hessian(hessian, cols: int, caller: str) -> None:
    if not isinstance(hessian, torch.Tensor) or not hessian.is_floating_point():
        raise invalid(TypeError, "hessian", caller, "a floating-point torch.Tensor", describe(hessian))
    if hessian.shape != (cols, cols):
        raise invalid(ValueError, "hessian", caller, f"a ({cols}, {cols}) tensor, one row and column per "
                      "input column of weight.reshape(out, -1)", describe(hessian))
    lo, hi = torch.aminmax(hessian.detach())
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        raise invalid(ValueError, "hessian", caller, "finite", describe(hessian))


def check_percdamp(percdamp, caller: str) -> float:
    """SparseGPT's dampening: a finite real number >= 0 (``TypeError`` for a non-number)."""
    if isinstance(percdamp, bool) or not isinstance(percdamp, numbers.Real) or not 0 <= percdamp < math.inf:
        raise invalid(TypeError if not isinstance(percdamp, numbers.Real) else ValueError, "percdamp", caller,
                      "a finite real number >= 0", repr(percdamp))
    return float(percdamp)


def _inverse_factor(h: torch.Tensor, percdamp: float, caller: str) -> torch.Tensor:
    """Upper Cholesky factor ``U`` of ``(H + lambda I)^-1`` (``U^T U``), lambda = percdamp * mean(diag H).

    As the reference code: factor H, invert it, factor the inverse. (``J L^-1 J`` for
    ``J H J = L L^T`` is the same factor with one factorisation, 2-4x faster, but in
    float32 it flipped a few near-tied mask entries in 3 of 6 seeds on 2048 inputs, each
    time raising the error by 1e-6 to 2e-5 relative; this route matched float64's masks.)

    All three steps run in ``h``'s own memory: ``h`` (symmetric, row-major) is read through
    its transpose, which is column-major as LAPACK works, so torch needs no copy (three
    ``(C, C)`` temporaries saved; the factor is bit for bit the one the copying route gives).
    ``h`` is overwritten; the returned ``U`` is a column-major view of it.
    """
    diag = h.diagonal()
    diag.add_(percdamp * float(diag.mean()))
    factor = h.mT  # the same matrix (h is symmetric), stored column-major
    info = torch.empty((), dtype=torch.int32, device=h.device)
    torch.linalg.cholesky_ex(factor, out=(factor, info))
    if int(info) == 0:
        torch.cholesky_inverse(factor, out=factor)
        torch.linalg.cholesky_ex(factor, upper=True, out=(factor, info))
    if int(info) != 0:
        raise argument_error(ValueError, "hessian", caller, f"must be positive definite after dampening "
                         f"(percdamp={percdamp}); its Cholesky factorisation failed. Use more calibration "
                         "rows or a larger percdamp.")
    return factor


def sparsegpt(weight: torch.Tensor, hessian: torch.Tensor, *, sparsity: float | None = None,
              n: int | None = None, m: int | None = None, blocksize: int = 128,
              percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT (Frantar & Alistarh 2023, Algorithm 1): prune one layer AND update its kept weights.

    Not in place: returns a new weight. The columns of ``weight.reshape(out, -1)`` are swept
    in blocks of ``blocksize``. ``H`` is dampened by ``percdamp * mean(diag H)``; dead inputs
    (``H_jj = 0``) get ``H_jj = 1`` and their weight column set to zero, as the reference
    code does. With ``U`` the upper Cholesky factor of ``H^-1``, each pruned weight ``w``
    leaves the error ``w / U_jj``, spread over the block's later columns at once and over
    later blocks lazily (one matmul per block). The mask is chosen adaptively, by
    ``w^2 / U_jj^2`` on the weights as updated so far:

    * unstructured: block ``[i1, i2)`` prunes the lowest ``round(s*out*i2) - round(s*out*i1)``
      scores among its ``out * (i2 - i1)`` entries (ties: lower row-major index first), so
      the total is exactly ``round(sparsity * weight.numel())``; per-row counts vary. (The
      reference code's ``<= threshold`` prunes about one more per block.)
    * N:M: every group of ``m`` columns, when the sweep reaches it, prunes exactly ``m - n``
      per row (``n`` kept, as in :func:`nm_mask`; a conv weight's columns are swept in
      ``(*k, in)`` order so the groups match :func:`nm_mask`'s).

    Args:
        weight: floating-point ``(out, in)`` weight, or conv ``(out, in, *k)``, finite. Not modified.
        hessian: ``(C, C)`` for ``C = weight[0].numel()``, e.g. :meth:`InputStats.hessian`. Not modified.
        sparsity: fraction of all weights to prune, in [0, 1].
        n, m: N:M instead: keep ``n`` of every ``m`` along the input dim; ``m`` must divide
            ``in`` and ``blocksize``. ``sparsity`` may then be omitted or equal ``1 - n/m``.
        blocksize: columns per block (the paper's B = 128).
        percdamp: dampening as a fraction of ``mean(diag H)`` (the paper's 1 %).

    Returns:
        ``(new_weight, keep)``: the updated weight (``weight``'s dtype, shape and device;
        exact zeros where pruned) and the ``torch.bool`` keep-mask. Computed in float32, or
        float64 if ``weight`` or ``hessian`` is float64.

    Raises:
        TypeError, ValueError: for a bad argument, naming it and the value received, or a
            Hessian that is not positive definite after dampening.

    Examples:
        >>> import torch
        >>> from prunekit.oneshot import sparsegpt
        >>> w = torch.tensor([[0.5, 1., -0.2, 2.]])
        >>> h = torch.tensor([[2., 1., 0., 0.],
        ...                   [1., 2., 0., 0.],
        ...                   [0., 0., 2., 0.],
        ...                   [0., 0., 0., 2.]])
        >>> new, keep = sparsegpt(w, h, sparsity=0.5, percdamp=0.0)
        >>> keep
        tensor([[False,  True, False,  True]])
        >>> new  # the pruned 0.5 is compensated through the correlated second input
        tensor([[0.0000, 1.2500, 0.0000, 2.0000]])
    """
    caller = "sparsegpt"
    *checked, dtype = _check_sparsegpt(weight, hessian, sparsity, n, m, blocksize, percdamp, caller)
    with torch.no_grad():
        h = hessian.detach().to(device=weight.device, dtype=dtype, copy=True)
        return _sparsegpt(weight, h, *checked, caller)


def sparsegpt_into(weight: torch.Tensor, hessian: torch.Tensor, *, sparsity: float | None = None,
                   n: int | None = None, m: int | None = None, blocksize: int = 128,
                   percdamp: float = 0.01, prior: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`sparsegpt` that writes the updated weight into ``weight`` and may overwrite
    ``hessian`` (when already in the computation's dtype and on ``weight``'s device).

    For :func:`prunekit.prune`, which owns its statistics' Gram matrix and needs it once
    (:meth:`InputStats._take_hessian`): no copy of ``H``, of its factors or of the weight is
    made beyond the sweep's own working copy. ``weight`` is written only after the sweep
    succeeded; on an error it is unchanged. ``prior``: the current keep-mask (shaped like
    ``weight``); entries it prunes start at zero and stay pruned. Returns the keep-mask.
    """
    caller = "sparsegpt"
    *checked, dtype = _check_sparsegpt(weight, hessian, sparsity, n, m, blocksize, percdamp, caller)
    with torch.no_grad():
        h = hessian.detach().to(device=weight.device, dtype=dtype)
        return _sparsegpt(weight, h, *checked, caller, prior=prior, into=weight)[1]


def _check_sparsegpt(weight, hessian, sparsity, n, m, blocksize, percdamp, caller: str):
    check_weight(weight, caller, min_ndim=2)
    cols = weight[0].numel()
    _check_hessian(hessian, cols, caller)
    sparsity, n, m = _resolve_pattern(sparsity, n, m, caller)
    blocksize = check_int(blocksize, caller, "blocksize", minimum=1)
    percdamp = check_percdamp(percdamp, caller)
    perm = None
    if m is not None:
        _check_divides(m, weight.shape[1], caller)
        if blocksize % m:
            raise invalid(ValueError, "blocksize", caller, f"a multiple of m={m} for N:M sparsity", repr(blocksize))
        if weight.dim() > 2:  # sweep (out, *k, in): N:M groups along `in`, as nm_mask's
            perm = torch.arange(cols, device=weight.device).view(weight.shape[1], -1).T.reshape(-1)
    dtype = torch.float64 if torch.float64 in (weight.dtype, hessian.dtype) else torch.float32
    return sparsity, n, m, blocksize, percdamp, perm, dtype


def _sparsegpt(weight: torch.Tensor, h: torch.Tensor, sparsity, n, m, blocksize: int, percdamp: float,
               perm, caller: str, *, prior: torch.Tensor | None = None,
               into: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sparsegpt` on checked arguments. ``h`` (``(C, C)``, the computation's dtype, on
    ``weight``'s device) is overwritten. ``prior``: entries it prunes start at 0 and stay
    pruned. ``into``: write the updated weight there (``weight`` itself may be given)."""
    out, cols = weight.shape[0], weight[0].numel()
    with torch.no_grad():
        wt = torch.empty((cols, out), dtype=h.dtype, device=weight.device)  # W^T: the working copy
        wt.copy_(weight.detach().reshape(out, cols).T)
        pruned_before = None if prior is None else ~prior.reshape(out, cols).T
        if pruned_before is not None:
            wt.masked_fill_(pruned_before, 0)
        if perm is not None:
            wt, h = wt[perm], h[perm][:, perm]
            if pruned_before is not None:
                pruned_before = pruned_before[perm]
        dead = h.diagonal() == 0
        h.diagonal()[dead] = 1
        wt[dead] = 0
        u = _inverse_factor(h, percdamp, caller)
        prune = _sweep(wt, u, sparsity, n, m, blocksize)
        del u, h
        if pruned_before is not None:
            prune |= pruned_before  # never revive a weight pruned before
        wt.masked_fill_(prune, 0)
        if perm is not None:
            inverse = torch.empty_like(perm)
            inverse[perm] = torch.arange(cols, device=perm.device)
            wt, prune = wt[inverse], prune[inverse]
        keep = (~prune).T.reshape(weight.shape).contiguous()
        del prune
        if into is not None:
            into.copy_(wt.T.reshape(weight.shape))
            return into, keep
        new = wt.T.to(weight.dtype).reshape(weight.shape).contiguous()
    return new, keep


def _sweep(wt: torch.Tensor, u: torch.Tensor, sparsity: float, n: int | None, m: int | None,
           blocksize: int) -> torch.Tensor:
    """The column sweep on ``wt`` = W^T (cols, out), in place; returns the prune mask (cols, out).

    Stored transposed so a weight column is a contiguous row (about 3x faster than sweeping
    (out, cols)). Inside a block the errors are batched once more, every ``_SUB`` columns
    (a multiple of m for N:M, so a group is complete when chosen): the per-column updates
    then touch only a few rows, small enough to run single-threaded, and the rest is one
    matmul per sub-block: the same algorithm with ~300 instead of ~2,100 multi-threaded ops
    for 2048 columns, which is what stalls on a busy machine (single-threaded CPU time
    drops only ~5 %).
    """
    cols, out = wt.shape
    prune = torch.empty(wt.shape, dtype=torch.bool, device=wt.device)
    err = torch.empty(min(blocksize, cols), out, dtype=wt.dtype, device=wt.device)
    factor = torch.empty_like(err)  # w / U_jj where pruned, 0 where kept: the error per weight
    sub = _SUB if m is None else m * -(-_SUB // m)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        w1, u1, e1, f1, p1 = wt[i1:i2], u[i1:i2, i1:i2], err[:count], factor[:count], prune[i1:i2]
        d = u1.diagonal().unsqueeze(1)
        if n is None:
            k = int(round(sparsity * (out * i2))) - int(round(sparsity * (out * i1)))
            scores = (w1.square() / d.square()).T.reshape(1, -1)  # row-major over (out, block): tie order
            p1.copy_(_prune_lowest(scores, k).view(out, count).T)
            torch.div(p1, d, out=f1)
        for j1 in range(0, count, sub):
            j2 = min(j1 + sub, count)
            for i in range(j1, j2):
                if n is not None and i % m == 0:  # choose this group's mask on the weights updated so far
                    g = slice(i, i + m)
                    p1[g] = _nm_prune_columns(w1[g].square() / d[g].square(), n, m)
                    torch.div(p1[g], d[g], out=f1[g])
                e = torch.mul(w1[i], f1[i], out=e1[i])
                w1[i + 1:j2].addr_(u1[i, i + 1:j2], e, alpha=-1)
            w1[j2:].addmm_(u1[j1:j2, j2:].T, e1[j1:j2], alpha=-1)  # the rest of the block
        wt[i2:].addmm_(u[i1:i2, i2:].T, e1, alpha=-1)  # lazy update of the later blocks
    return prune

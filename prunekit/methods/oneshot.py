"""One-shot methods that read calibration inputs: Wanda and SparseGPT."""

from __future__ import annotations

import math

import torch

from .._validation import check_int, invalid
from ..calibration import Calibrated, calibration_support, effective_rows, from_rows, rows_of
from ..oneshot import check_percdamp, nm_mask, row_mask_from_scores, sparsegpt_into, wanda_scores
from ..reparam import attach_mask, current_keep, pruned_tensor_names
from .base import Method

__all__ = ["WandaMethod", "SparseGPTMethod", "CalibratedMethod"]


class CalibratedMethod(Method):
    """A method that prunes each tensor from statistics of its inputs (``needs="calibration"``).

    :func:`prunekit.prune` collects the statistics (:mod:`prunekit.calibration`) and calls
    :meth:`prune_target` once per tensor, in the order the model uses them.
    """

    needs = "calibration"
    hessian = False  # whether prune_target needs the Gram matrix X Xᵀ (else column norms)
    options = {"calibration": None, "sequential": True}

    def applies_to_target(self, target) -> bool:
        return super().applies_to_target(target) and calibration_support(target) is None

    def describe_targets(self) -> str:
        return ("nn.Linear, nn.Conv2d (groups=1), nn.MultiheadAttention and Hugging Face Conv1D "
                "weights (not RNN weights)")

    def check_options(self, options: dict, caller: str) -> dict:
        options = super().check_options(options, caller)
        if not isinstance(options["sequential"], bool):
            raise invalid(TypeError, "sequential", caller, "True or False", repr(options["sequential"]))
        return options

    def prune_target(self, model, cal: Calibrated, sparsity: float | None, nm, options: dict) -> None:
        """Compute and attach the mask of ``cal.target`` (and any weight update)."""
        raise NotImplementedError


class WandaMethod(CalibratedMethod):
    """Wanda (Sun et al. 2024): ``|W_ij| * ||X_j||_2``, compared within each output row; no update."""

    name = "wanda"

    def prune_target(self, model, cal, sparsity, nm, options):
        t = cal.target
        w, prior = effective_rows(t)
        keep = torch.ones(w.shape, dtype=torch.bool, device=w.device)
        for rows, stats in cal.parts:
            sl = slice(None) if rows is None else rows
            scores = wanda_scores(w[sl], stats.norms().to(w.device))
            if prior is not None:
                scores = scores.masked_fill(~prior[sl], -math.inf)
            keep[sl] = nm_mask(scores, *nm) if nm else row_mask_from_scores(scores, sparsity)
        attach_mask(t.module, t.tensor, from_rows(t, keep), model)


class SparseGPTMethod(CalibratedMethod):
    """SparseGPT (Frantar & Alistarh 2023): OBS column sweep that also updates the kept weights."""

    name = "sparsegpt"
    hessian = True
    options = {"calibration": None, "sequential": True, "blocksize": 128, "percdamp": 0.01}

    def check_options(self, options, caller):
        options = super().check_options(options, caller)
        check_int(options["blocksize"], caller, "blocksize", minimum=1)
        check_percdamp(options["percdamp"], caller)
        return options

    def prune_target(self, model, cal, sparsity, nm, options):
        t = cal.target
        blocksize = options["blocksize"]
        if nm and blocksize % nm[1]:
            blocksize = nm[1] * max(1, blocksize // nm[1])
        pattern = {"n": nm[0], "m": nm[1]} if nm else {"sparsity": sparsity}
        kw = dict(blocksize=blocksize, percdamp=float(options["percdamp"]), **pattern)
        module = t.module
        param = getattr(module, t.tensor + "_orig" if t.tensor in pruned_tensor_names(module) else t.tensor)
        rows, prior = rows_of(t, param), current_keep(module, t.tensor)
        # One Hessian for all rows (every layer but a cross-attention): its sweep writes the
        # updated weights straight into the parameter, and the statistics' Gram matrix is
        # factorised in place, so the only copies are the sweep's working copy of W and the
        # mask (the memory goal of benchmarks/oneshot_memory.py). The Q, K and V rows of a
        # cross-attention each have their own Hessian: they are swept in a copy, written
        # once all three succeeded.
        whole = len(cal.parts) == 1 and cal.parts[0][0] is None
        target = rows if whole else rows.detach().clone()
        keep = torch.empty(rows.shape, dtype=torch.bool, device=rows.device)
        for part, stats in cal.parts:
            sl = slice(None) if part is None else part
            keep[sl] = sparsegpt_into(target[sl], stats._take_hessian(), **kw,
                                      prior=None if prior is None else rows_of(t, prior)[sl])
        if not whole:
            with torch.no_grad():
                rows.copy_(target)
        attach_mask(module, t.tensor, from_rows(t, keep), model)

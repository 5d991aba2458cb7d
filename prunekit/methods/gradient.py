"""Gradient methods (``gradient``, ``taylor``, ``fisher``): rank weights by gradient statistics."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import nn

from .._validation import argument_error, check_loader, check_loss_fn, describe
from ..gradients import GradientStats, check_collect_options, collect
from ..reparam import current_keep, effective_tensor
from ..scores import GRADIENT_SCORES, STATISTIC_OF, statistic_scores
from .base import Method

__all__ = ["GradientMethod"]


class GradientMethod(Method):
    """``prune`` methods that rank single weights by gradient statistics.

    Options (keyword arguments of ``prunekit.prune``): either ``stats`` (a
    ``prunekit.GradientStats``, or a mapping ``{layer_name: tensor}``), or ``loader`` and
    ``loss_fn`` (with optional ``max_batches``, ``mode``, ``device``, ``progress``) to
    collect the statistic the method needs, exactly as ``prunekit.collect_gradient_stats``
    does, before any mask is attached. A mapping's tensors play the role of the statistic:
    a gradient ``g`` for ``"gradient"`` (score ``|g|``) and ``"taylor"`` (score
    ``|w * g|``), the same scores as ``prunekit.gradient_mask``; a non-negative sum of
    squared gradients ``s`` for ``"fisher"`` (score ``w**2 * s``).

    Scores use the model's current (effective) weights. If they differ from the weights
    the ``prunekit.GradientStats`` were collected at (other than by entries pruned since), a
    warning says the statistics are stale.
    """

    granularity = "weight"
    needs = "gradients"
    options = {"stats": None, "loader": None, "loss_fn": None, "max_batches": None,
               "mode": "eval", "device": None, "progress": False}
    _COLLECTION = ("loader", "loss_fn", "max_batches", "mode", "device", "progress")

    def __init__(self, name: str):
        if name not in STATISTIC_OF:
            raise ValueError(
                f"GradientMethod name must be one of {GRADIENT_SCORES}. Got {name!r} instead."
            )
        self.name = name
        self.statistic = STATISTIC_OF[name]

    def check_options(self, options: dict, caller: str) -> dict:
        given = set(options)
        options = super().check_options(options, caller)
        stats = options["stats"]
        if stats is not None:
            extra = [k for k in self._COLLECTION if k in given]
            if extra:
                raise ValueError(
                    f"{caller}(method={self.name!r}) got stats= together with "
                    f"{', '.join(repr(k) for k in extra)}, which only apply when {caller} "
                    "collects the statistics itself. Pass either stats=... or loader= and "
                    "loss_fn=."
                )
            if isinstance(stats, GradientStats):
                if self.statistic not in stats.statistics:
                    raise argument_error(ValueError, "stats", caller, f"must hold the {self.statistic!r} "
                        f"statistic, which method={self.name!r} ranks by. Got GradientStats "
                        f"with {stats.statistics} instead; collect it with "
                        f"statistics=(..., {self.statistic!r})."
                    )
            elif not isinstance(stats, Mapping):
                raise argument_error(TypeError, "stats", caller, f"must be a prunekit.GradientStats or a "
                    f"mapping {{layer_name: tensor}}. Got {describe(stats)} instead."
                )
            return options
        loader, loss_fn = options["loader"], options["loss_fn"]
        if loader is None or loss_fn is None:
            missing = " and ".join(repr(k) for k, v in (("loader", loader), ("loss_fn", loss_fn))
                                   if v is None)
            raise ValueError(
                f"{caller}(method={self.name!r}) needs gradient information, and {missing} "
                f"{'is' if ' and ' not in missing else 'are'} missing. Pass "
                "stats=prunekit.collect_gradient_stats(model, loader, loss_fn) (or a mapping "
                "{layer_name: tensor shaped like the weight}), or pass loader= and loss_fn= "
                f"(and optionally max_batches=, mode=) so that {caller} collects them."
            )
        check_loader(loader, caller)
        check_loss_fn(loss_fn, caller)
        options["device"] = check_collect_options(options["max_batches"], options["mode"],
                                                   options["device"], options["progress"], caller)
        return options

    def prepare(self, model: nn.Module, layers: list, options: dict) -> dict:
        caller = "prune"
        stats = options["stats"]
        if stats is None:
            stats = collect(model, list(layers), options["loader"], options["loss_fn"],
                             (self.statistic,), options["max_batches"], options["mode"],
                             options["device"], options["progress"], caller)
            collected_here = True
        else:
            collected_here = False
        table = stats[self.statistic] if isinstance(stats, GradientStats) else stats
        resolved = {}
        for t in layers:
            name, module = t.name, t.module
            weight = effective_tensor(module, t.tensor)
            if name not in table:
                have = sorted(table) if len(table) <= 20 else f"{len(table)} layers"
                raise argument_error(ValueError, "stats", caller, f"has no entry for layer {name!r}, which "
                    f"method={self.name!r} prunes (it has {have}). Pass statistics for every "
                    "pruned layer, e.g. prunekit.collect_gradient_stats(model, loader, "
                    "loss_fn) on this model, or exclude the layer."
                )
            t = table[name]
            if isinstance(stats, GradientStats):
                what = f"stats.{self.statistic}[{name!r}]"
            else:
                what = f"stats[{name!r}]"
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise argument_error(TypeError, "stats", caller, f"must hold floating-point tensors. "
                    f"Got {describe(t)} for layer {name!r} ({what}) instead."
                )
            if t.shape != weight.shape:
                raise argument_error(ValueError, "stats", caller, f"has a tensor of shape {tuple(t.shape)} "
                    f"for layer {name!r} ({what}), whose weight has shape {tuple(weight.shape)}."
                )
            finite = torch.isfinite(t)
            if not bool(finite.all()):
                raise argument_error(ValueError, "stats", caller, f"must contain only finite values. Got "
                    f"{int((~finite).sum())} NaN or infinite entries for layer {name!r} ({what})."
                )
            if self.name == "fisher" and bool((t < 0).any()):
                raise argument_error(ValueError, "stats", caller, f"must hold sums of squared gradients "
                    f"(non-negative) for method='fisher'. Got negative entries for layer "
                    f"{name!r} ({what}); pass GradientStats or {{layer: stats.sq_grad[layer]}}."
                )
            resolved[name] = t
        if isinstance(stats, GradientStats) and not collected_here:
            self._warn_if_stale(stats, layers)
        return {**options, "_table": resolved}

    @staticmethod
    def _warn_if_stale(stats: GradientStats, layers) -> None:
        stale = []
        for t in layers:
            name = t.name
            now = effective_tensor(t.module, t.tensor)
            then = stats.weight.get(name)
            if then is None or then.shape != now.shape:
                continue
            then = then.to(device=now.device, dtype=now.dtype)
            keep = current_keep(t.module, t.tensor)
            if keep is not None:
                now, then = now[keep], then[keep]
            if not torch.equal(now, then):
                stale.append(name)
        if stale:
            warnings.warn(
                f"The weights of layers {stale} changed since these gradient statistics were "
                "collected (e.g. by training), so the statistics describe another model. "
                "Collect them again for the current weights.",
                stacklevel=4,
            )

    def scores(self, name: str, module: nn.Module, weight: torch.Tensor,
               options: dict) -> torch.Tensor:
        stat = options["_table"][name].to(weight.device)
        return statistic_scores(self.name, weight, stat)

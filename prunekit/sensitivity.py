"""Sensitivity analysis: prune one layer at a time and watch the metric; turn it into a plan."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import nn

from ._table import Table, TableRepr
from ._validation import argument_error, check_callable, check_model, check_sparsity, invalid
from .methods import get_method
from .pruning import prunable_layers, prune
from .reparam import copy_model

__all__ = ["sensitivity_scan", "SensitivityScan"]


@dataclass(frozen=True, repr=False)
class SensitivityScan(TableRepr):
    """The result of :func:`prunekit.sensitivity_scan`. ``print`` it for a table.

    Attributes:
        results: ``{layer_name: {sparsity: metric}}``, layers in model order.
        dense: the metric of the unpruned model.
        sparsities: the sparsities scanned, ascending.
        method: the pruning method used.
        higher_is_better: ``True`` for accuracy-like metrics, ``False`` for losses.
    """

    results: dict
    dense: float
    sparsities: tuple
    method: str
    higher_is_better: bool = True

    def plan(self, tolerance: float, *, relative: bool = False) -> dict:
        """Per-layer sparsities whose metric stays within ``tolerance`` of the dense metric.

        For each layer: the largest scanned sparsity such that it, and every smaller
        scanned sparsity, stays within tolerance (so one lucky point after a drop does not
        count). Layers that fail even at the smallest sparsity get ``0.0``.

        Args:
            tolerance: allowed drop of the metric (a rise, for ``higher_is_better=False``),
                at least 0: absolute (``0.01`` = one accuracy point), or a fraction of the
                dense metric with ``relative=True``.
            relative: interpret ``tolerance`` as a fraction of ``abs(dense)``.

        Returns:
            ``{layer_name: sparsity}``, usable as ``pk.prune(model, plan, method=...)``.

        Examples:
            >>> from prunekit import SensitivityScan
            >>> scan = SensitivityScan(
            ...     {"a": {0.5: 0.9, 0.9: 0.5}, "b": {0.5: 0.3, 0.9: 0.2}},
            ...     dense=0.92, sparsities=(0.5, 0.9), method="channel")
            >>> scan.plan(0.05)
            {'a': 0.5, 'b': 0.0}
        """
        if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or not (
                math.isfinite(tolerance) and tolerance >= 0):
            raise invalid(ValueError, "tolerance", "SensitivityScan.plan", "a finite number >= 0",
                          repr(tolerance))
        allowed = tolerance * abs(self.dense) if relative else tolerance
        plan = {}
        for layer, curve in self.results.items():
            best = 0.0
            for s in sorted(curve):
                drop = (self.dense - curve[s]) if self.higher_is_better else (curve[s] - self.dense)
                if not drop <= allowed:  # NaN counts as a failure
                    break
                best = s
            plan[layer] = best
        return plan

    def as_dicts(self) -> list[dict]:
        """Tidy rows ``{"layer", "sparsity", "metric"}`` (e.g. for ``pandas`` or plotting)."""
        return [{"layer": layer, "sparsity": s, "metric": m}
                for layer, curve in self.results.items() for s, m in curve.items()]

    def _table(self) -> Table:
        header = ("layer", *(f"{s:g}" for s in self.sparsities))
        rows = tuple((layer, *(f"{curve.get(s, math.nan):.4g}" for s in self.sparsities))
                     for layer, curve in self.results.items())
        title = f"sensitivity ({self.method}), dense metric {self.dense:.4g}; columns: sparsity"
        return Table(header, rows, frozenset(range(1, len(header))), total=False, title=title)


def sensitivity_scan(model: nn.Module, evaluate_fn: Callable, sparsities: Iterable, *,
                     method: str = "channel", layers=None, exclude=(),
                     higher_is_better: bool = True, **method_options) -> SensitivityScan:
    """Prune each layer alone at each sparsity and evaluate: which layers are fragile?

    For every layer and sparsity, a fresh copy of ``model`` has only that layer pruned
    (``pk.prune(copy, {layer: s}, method=method)``) and ``evaluate_fn(copy)`` scores it.
    The dense model is scored once as well. ``model`` itself is never modified (same
    ``state_dict``, same masks, same train/eval mode), even if ``evaluate_fn`` trains
    or switches modes: it only ever sees copies. No retraining happens unless
    ``evaluate_fn`` does it.

    Args:
        model: the model to analyse (dense or already pruned; existing masks are kept in
            every copy and sparsities are absolute, as in :func:`prunekit.prune`).
        evaluate_fn: ``evaluate_fn(model) -> float``, e.g. ``lambda m:
            pk.training.evaluate(m, test_loader)``.
        sparsities: the sparsities to scan, each in [0, 1].
        method: a :func:`prunekit.prune` method, ``"channel"`` by default.
        layers: names of the layers to scan (as in ``model.named_modules()``); default:
            every layer ``method`` prunes, minus ``exclude``.
        exclude: modules or names to leave out when ``layers`` is not given.
        higher_is_better: ``True`` for accuracy, ``False`` for a loss; used by
            :meth:`prunekit.SensitivityScan.plan`.
        **method_options: passed to :func:`prunekit.prune` (e.g. ``p=2``).

    Returns:
        A :class:`prunekit.SensitivityScan`: ``scan.results[layer][sparsity]`` is the metric,
        ``scan.dense`` the dense metric, ``scan.plan(tolerance)`` a pruning plan.

    Raises:
        TypeError, ValueError: for a bad argument, before anything is evaluated.

    Examples:
        >>> import torch, prunekit as pk
        >>> _ = torch.manual_seed(0)
        >>> model = pk.models.MLP(8, (16,), 4)
        >>> x = torch.randn(32, 8)
        >>> target = model(x).detach()
        >>> # minus the mean squared change of the outputs: 0 = unchanged
        >>> fidelity = lambda m: -(m(x) - target).pow(2).mean().item()
        >>> scan = pk.sensitivity_scan(model, fidelity, [0.0, 0.5], exclude=["fc2"])
        >>> scan.results["fc1"][0.0] == 0, scan.results["fc1"][0.5] < 0
        (True, True)
        >>> pk.prune(model, scan.plan(0.0), method="channel") is model
        True
    """
    caller = "sensitivity_scan"
    check_model(model, caller)
    check_callable(evaluate_fn, caller, "evaluate_fn", "callable (model -> float)")
    if isinstance(sparsities, (str, bytes)) or not isinstance(sparsities, Iterable):
        raise invalid(TypeError, "sparsities", caller, "an iterable of numbers in [0, 1]",
                      repr(sparsities))
    grid = sorted({check_sparsity(s, caller, "sparsities") for s in sparsities})
    if not grid:
        raise argument_error(ValueError, "sparsities", caller, "must not be empty.")
    get_method(method, caller).check_options(method_options, caller)
    available = [name for name, _ in prunable_layers(model, method, exclude)]
    if layers is None:
        names = available
    else:
        if isinstance(layers, str):
            layers = [layers]
        names = list(layers)
        unknown = [n for n in names if n not in available]
        if unknown:
            raise argument_error(ValueError, "layers", caller, f"names {unknown}, which "
                                 f"method={method!r} cannot prune here. Prunable layers: "
                                 f"{available}.")
    if not names:
        raise ValueError(f"{caller} found no layers to scan with method={method!r}.")

    def score(copy) -> float:
        value = evaluate_fn(copy)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise argument_error(TypeError, "evaluate_fn", caller, "must return a number. "
                                 f"Got {type(value).__name__} instead.") from None

    dense = score(copy_model(model))
    results = {}
    for name in names:
        curve = {}
        for s in grid:
            copy = copy_model(model)
            prune(copy, {name: s}, method=method, **method_options)
            curve[s] = score(copy)
            del copy
        results[name] = curve
    return SensitivityScan(results=results, dense=dense, sparsities=tuple(grid), method=method,
                           higher_is_better=bool(higher_is_better))

"""Achieved sparsity: per layer and for the model, read from the masked weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._table import format_table
from .._validation import check_model
from ..reparam import effective_tensor, is_masked
from ..targets import weight_layers

__all__ = ["sparsity", "sparsity_report", "SparsityReport", "LayerSparsity"]


def sparsity(model_or_tensor) -> float:
    """Achieved fraction of zeros.

    For a tensor: zeros / entries. For a model: zeros / entries over the ``weight`` of
    every ``nn.Linear`` and ``nn.Conv*`` layer (pruned or not; biases and BatchNorm are not
    counted), read from ``weight_orig * weight_mask`` so the value is current even right
    after an optimizer step.

    Examples:
        >>> import torch, prunekit as pk
        >>> pk.sparsity(torch.tensor([0.0, 1.0, 0.0, 2.0]))
        0.5
    """
    if isinstance(model_or_tensor, torch.Tensor):
        t = model_or_tensor
        if t.numel() == 0:
            raise ValueError(
                "The 'model_or_tensor' parameter of sparsity must be a non-empty tensor or "
                f"a model. Got a tensor of shape {tuple(t.shape)} instead."
            )
        return 1.0 - int(torch.count_nonzero(t)) / t.numel()
    if isinstance(model_or_tensor, nn.Module):
        report = sparsity_report(model_or_tensor)
        return report.total.sparsity
    raise TypeError(
        "The 'model_or_tensor' parameter of sparsity must be a torch.Tensor or a "
        f"torch.nn.Module. Got {type(model_or_tensor).__name__} instead."
    )


@dataclass(frozen=True)
class LayerSparsity:
    """One row of a :class:`SparsityReport`."""

    layer: str
    kind: str
    shape: tuple
    params: int
    zeros: int
    masked: bool

    @property
    def sparsity(self) -> float:
        """Achieved fraction of zeros, ``zeros / params``."""
        return self.zeros / self.params if self.params else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer achieved sparsity and the model total. ``print`` it for a table.

    Attributes:
        rows: one :class:`LayerSparsity` per ``Linear``/``Conv`` layer, in model order.
        total: the sum over ``rows`` (layer ``"total"``).
    """

    rows: tuple

    @property
    def total(self) -> LayerSparsity:
        return LayerSparsity(
            "total", "", (), sum(r.params for r in self.rows), sum(r.zeros for r in self.rows),
            any(r.masked for r in self.rows),
        )

    def as_dicts(self) -> list[dict]:
        """Rows as dictionaries (e.g. for ``pandas.DataFrame``), total last."""
        return [
            {"layer": r.layer, "type": r.kind, "shape": r.shape, "params": r.params,
             "zeros": r.zeros, "sparsity": r.sparsity, "masked": r.masked}
            for r in (*self.rows, self.total)
        ]

    def __str__(self) -> str:
        header = ("layer", "type", "shape", "params", "zeros", "sparsity", "masked")
        lines = [
            (r.layer, r.kind, "x".join(map(str, r.shape)), f"{r.params:,}", f"{r.zeros:,}",
             f"{r.sparsity:.2%}", "yes" if r.masked else "no")
            for r in (*self.rows, self.total)
        ]
        return format_table(header, lines, right={3, 4, 5})

    __repr__ = __str__


def sparsity_report(model: nn.Module) -> SparsityReport:
    """Per-layer table: layer, type, shape, parameters, zeros, achieved sparsity, masked.

    Examples:
        >>> import torch, prunekit as pk
        >>> model = pk.prune(torch.nn.Sequential(torch.nn.Linear(10, 10)), 0.3)
        >>> print(pk.sparsity_report(model))
        layer  type    shape  params  zeros  sparsity  masked
        -----------------------------------------------------
        0      Linear  10x10     100     30    30.00%  yes
        -----------------------------------------------------
        total                    100     30    30.00%  yes
    """
    check_model(model, "sparsity_report")
    layers = weight_layers(model)
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear or nn.Conv* layers to report on."
        )
    rows = []
    for name, module in layers:
        w = effective_tensor(module, "weight")
        rows.append(LayerSparsity(
            name or "(model)", type(module).__name__, tuple(w.shape), w.numel(),
            w.numel() - int(torch.count_nonzero(w)), is_masked(module, "weight"),
        ))
    return SparsityReport(tuple(rows))

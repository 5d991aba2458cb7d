"""Achieved sparsity: per layer and for the model, read from the masked weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._table import Table, TableRepr
from .._validation import check_model, invalid
from ..reparam import base_class, effective_tensor, is_masked, pruned_tensor_names
from ..targets import Layout, Target, target_name, targets

__all__ = ["sparsity", "sparsity_report", "SparsityReport", "LayerSparsity"]


def sparsity(model_or_tensor) -> float:
    """Achieved fraction of zeros.

    For a tensor: zeros / entries. For a model: zeros / entries over the tensors
    :func:`sparsity_report` lists (every weight that multiplies activations: Linear, Conv,
    MultiheadAttention projections, RNN weights, Hugging Face Conv1D; and any other tensor
    that is masked), each parameter once, read as ``orig * mask`` so the value is current
    even right after an optimizer step. Biases, normalisation and unmasked embeddings are not
    counted; the report says how many parameters that leaves out.

    Examples:
        >>> import torch, prunekit as pk
        >>> pk.sparsity(torch.tensor([0.0, 1.0, 0.0, 2.0]))
        0.5
    """
    if isinstance(model_or_tensor, torch.Tensor):
        t = model_or_tensor
        if t.numel() == 0:
            raise invalid(ValueError, "model_or_tensor", "sparsity",
                          "a non-empty tensor or a model", f"a tensor of shape {tuple(t.shape)}")
        return 1.0 - int(torch.count_nonzero(t)) / t.numel()
    if isinstance(model_or_tensor, nn.Module):
        report = sparsity_report(model_or_tensor)
        return report.total.sparsity
    raise invalid(TypeError, "model_or_tensor", "sparsity", "a torch.Tensor or a torch.nn.Module",
                  type(model_or_tensor).__name__)


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


@dataclass(frozen=True, repr=False)
class SparsityReport(TableRepr):
    """Per-layer achieved sparsity and the model total. ``print`` it for a table (in Jupyter it
    shows as an HTML table).

    Attributes:
        rows: one :class:`LayerSparsity` per prunable tensor, in model order, each
            parameter once (a tied parameter at its first holder).
        total: the sum over ``rows`` (layer ``"total"``).
        left_out: ``(what, parameters, names)`` for the parameters not counted
            (``"embeddings"``, ``"biases"``, ``"normalisation"``, ``"other"``).
    """

    rows: tuple
    left_out: tuple = ()

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

    def _table(self) -> Table:
        header = ("layer", "type", "shape", "params", "zeros", "sparsity", "masked")
        lines = tuple(
            (r.layer, r.kind, "x".join(map(str, r.shape)), f"{r.params:,}", f"{r.zeros:,}",
             f"{r.sparsity:.2%}", "yes" if r.masked else "no")
            for r in (*self.rows, self.total)
        )
        notes = ()
        if self.left_out:
            parts = [f"{what} {n:,}" + (f" ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
                                       if what in ("embeddings", "other") else "")
                     for what, n, names in self.left_out]
            notes = ("not counted (dense): " + "; ".join(parts),)
        return Table(header, lines, frozenset({3, 4, 5}), notes=notes)


def _kind(module: nn.Module) -> str:
    """The layer's class name as users know it: torch's MultiheadAttention.out_proj is an
    internal ``NonDynamicallyQuantizableLinear``, reported as the ``Linear`` it is."""
    for cls in base_class(module).__mro__:
        if not cls.__name__.startswith("NonDynamicallyQuantizable"):
            return cls.__name__
    return type(module).__name__


def sparsity_report(model: nn.Module) -> SparsityReport:
    """Per-tensor table: layer, type, shape, parameters, zeros, achieved sparsity, masked.

    The last line says which parameters the table leaves out (dense embeddings, biases,
    normalisation), so that a total of 50 % can be read for what it is.

    Examples:
        >>> import torch, prunekit as pk
        >>> model = pk.prune(torch.nn.Sequential(torch.nn.Linear(10, 10)), 0.3)
        >>> print(pk.sparsity_report(model))
        layer  type    shape  params  zeros  sparsity  masked
        -----------------------------------------------------
        0      Linear  10x10     100     30    30.00%  yes
        -----------------------------------------------------
        total                    100     30    30.00%  yes
        not counted (dense): biases 10
    """
    check_model(model, "sparsity_report")
    counted = report_targets(model)
    if not counted:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear or nn.Conv* layers to report on."
        )
    rows, seen = [], set()
    for t in counted:
        w = effective_tensor(t.module, t.tensor)
        seen.add(id(t.module._parameters.get(t.tensor + "_orig", t.module._parameters.get(t.tensor))))
        rows.append(LayerSparsity(
            t.name or "(model)", _kind(t.module), tuple(w.shape), w.numel(),
            w.numel() - int(torch.count_nonzero(w)), is_masked(t.module, t.tensor),
        ))
    return SparsityReport(tuple(rows), _left_out(model, seen))


def report_targets(model: nn.Module) -> list:
    """The tensors sparsity counts: every default target, plus any other masked weight."""
    out = targets(model)
    have = {id(_param(t)) for t in out}
    for path, module in model.named_modules():
        if isinstance(module, _NORMS):
            continue
        for name in pruned_tensor_names(module):
            if name == "bias" or id(_param_of(module, name)) in have:
                continue
            have.add(id(_param_of(module, name)))
            out.append(Target(target_name(path, name), module, name, Layout(tensors=(name,), channels=False)))
    return out


_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def _param_of(module, name):
    return module._parameters.get(name + "_orig", module._parameters.get(name))


def _param(t):
    return _param_of(t.module, t.tensor)


def _left_out(model: nn.Module, counted: set) -> tuple:
    groups: dict = {}
    seen = set(counted)
    for path, module in model.named_modules():
        for key, p in module._parameters.items():
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            name = key[: -len("_orig")] if key.endswith("_orig") else key
            if isinstance(module, nn.Embedding):
                what = "embeddings"
            elif name == "bias" or name.endswith("_bias") or name.startswith("bias_"):
                what = "biases"
            elif isinstance(module, _NORMS) or "norm" in type(module).__name__.lower():
                what = "normalisation"
            else:
                what = "other"
            n, names = groups.get(what, (0, []))
            groups[what] = (n + p.numel(), names + [target_name(path, name)])
    order = ("embeddings", "biases", "normalisation", "other")
    return tuple((w, *groups[w]) for w in order if w in groups)

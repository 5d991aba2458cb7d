"""``Method``: how a pruning method chooses units; the planner that applies it in either scope."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .._select import Units, keep_lowest_pruned, n_to_prune
from .._validation import check_options
from ..oneshot import nm_mask
from ..reparam import current_keep, effective_tensor
from ..structured.graph import following_batchnorms
from ..targets import is_prunable, layout_of

__all__ = ["Method", "Group", "plan_masks", "NEEDS"]

#: what a method may need besides the model: nothing, gradient statistics, calibration batches
NEEDS = (None, "gradients", "calibration")


@dataclass(frozen=True)
class Group:
    """The units one selection ranks together: one layer (``scope="layer"``) or all (``"global"``).

    Attributes:
        name: the layer's name (``scope="layer"``), or ``"global"``.
        scope: ``"layer"`` or ``"global"``.
        sparsity: the requested fraction of the group's units.
        n_units: units in the group, pruned or not.
        n_already: units already pruned (they count toward the target and stay pruned).
        n_target: ``round(sparsity * n_units)``, at least ``n_already``.
    """

    name: str
    scope: str
    sparsity: float
    n_units: int
    n_already: int
    n_target: int


class Method:
    """A way of choosing what to prune. Subclass it and :func:`prunekit.register_method` it.

    A score-based method implements only :meth:`scores` (higher = more important, one
    score per unit). The planner then handles both scopes, exact counts, ties, nesting
    with earlier masks, and (for channels) biases and BatchNorm. A method that does not
    prune the lowest scores one by one (k-means prunes whole clusters) also overrides
    :meth:`select`, the one hook that turns a group's scores into a keep-mask.

    Attributes:
        name: the ``method=`` string.
        granularity: ``"weight"``, ``"channel"`` (the weight's output dimension) or ``"kernel"``.
        options: keyword options ``prune`` accepts for this method, with defaults.
        needs: ``None``, ``"gradients"`` (gradient statistics, option ``stats``) or
            ``"calibration"`` (batches of inputs, option ``calibration``).
        statistic: for ``needs="gradients"``: the statistic it ranks by
            (``"grad"``, ``"abs_grad"`` or ``"sq_grad"``).
        exact: whether :meth:`select` prunes exactly the target count.
    """

    name: str = ""
    granularity: str = "weight"
    options: dict = {}
    needs: str | None = None
    statistic: str | None = None
    exact: bool = True

    def applies_to(self, module: nn.Module) -> bool:
        """Which layers the method prunes by default."""
        layout = layout_of(module)
        if self.granularity == "channel":
            return layout is not None and layout.channels
        return is_prunable(module)

    def applies_to_target(self, target) -> bool:
        """Whether the method can prune one tensor (:class:`prunekit.targets.Target`)."""
        if self.granularity == "channel" and not (target.layout.channels and target.tensor == "weight"):
            return False
        if self.granularity == "kernel" and target.tensor != "weight":
            return False
        return True

    def describe_targets(self) -> str:
        """What the method prunes by default, for messages."""
        if self.granularity == "channel":
            return "nn.Linear and non-transposed nn.Conv* weights"
        return "nn.Linear and nn.Conv* weights"

    def check_options(self, options: dict, caller: str) -> dict:
        """Refuse unknown options (``TypeError`` listing the valid ones); fill in defaults."""
        return check_options(options, self.options, caller, f"method={self.name!r}")

    def prepare(self, model: nn.Module, layers: list[tuple[str, nn.Module]], options: dict) -> dict:
        """Validate options against the model, compute shared inputs (e.g. gradients)."""
        return options

    def scores(self, name: str, module: nn.Module, weight: torch.Tensor, options: dict) -> torch.Tensor:
        """Importance of each unit of ``weight`` (layer ``name``); higher = kept longer.

        Shaped like ``weight`` for ``granularity="weight"``, ``(out,)`` for channels and
        ``(out, in)`` for kernels. Must be finite.
        """
        raise NotImplementedError

    def select(self, scores: torch.Tensor, group: Group, options: dict) -> torch.Tensor:
        """Keep-mask over the group's *unpruned* units (flat ``scores``, model order).

        ``group.n_target - group.n_already`` of them are to be pruned. The default prunes
        exactly that many lowest scores, ties to the lower index.
        """
        return keep_lowest_pruned(scores, group.n_target - group.n_already)

    def finish(self, options: dict) -> None:
        """Called once every mask is computed, before any is attached (e.g. to report)."""

    def followers(self, model: nn.Module) -> dict:
        """BatchNorm that normalises each layer's output (masked with its channels)."""
        return following_batchnorms(model)


def _warn_emptied(layers, unit_keep, sparsity, scope) -> None:
    """Warn, naming them, about layers that lose every unit although less than all was asked."""
    emptied = []
    for (name, _), keep in zip(layers, unit_keep):
        asked = sparsity[name] if isinstance(sparsity, Mapping) else sparsity
        if asked < 1 and keep.numel() and not bool(keep.any()):
            emptied.append(name or "model")
    if emptied:
        hint = (" Pass max_layer_sparsity= (e.g. 0.95) to cap each layer's share, or exclude them."
                if scope == "global" else "")
        warnings.warn(
            f"prune removed every unit of layer(s) {emptied}: their output no longer depends on "
            f"their input.{hint}",
            stacklevel=4,
        )


def _target_count(sparsity: float, n_units: int, n_already: int, where: str) -> int:
    k = n_to_prune(sparsity, n_units)
    if k < n_already:
        warnings.warn(
            f"{where}: {n_already} of {n_units} units are already pruned "
            f"({n_already / n_units:.1%}), more than the requested sparsity {sparsity:g}. "
            "prunekit never revives pruned weights, so the mask stays as it is.",
            stacklevel=4,
        )
        return n_already
    return k


def _capped(scores: list, free: list, caps: list) -> list:
    """Scores with every unit beyond a layer's cap set to +inf (never chosen before the others).

    ``caps[i]`` is how many more units layer ``i`` may lose; its lowest ``caps[i]`` free
    scores stay eligible (ties to the lower index), the rest cannot be pruned.
    """
    out = []
    for s, f, cap in zip(scores, free, caps):
        s = s.reshape(-1)
        eligible = torch.zeros(s.numel(), dtype=torch.bool, device=s.device)
        idx = torch.nonzero(f.reshape(-1)).squeeze(1)
        if cap > 0 and idx.numel():
            chosen = ~keep_lowest_pruned(s[idx], min(cap, idx.numel()))
            eligible[idx[chosen]] = True
        out.append(torch.where(eligible, s, torch.full_like(s, float("inf"))))
    return out


def plan_masks(method: Method, model: nn.Module, layers: list, sparsity, scope: str,
               options: dict, max_layer_sparsity: float | None = None, pattern=None) -> dict:
    """``{(module, tensor_name): keep_mask}`` for every tensor to mask; changes nothing.

    ``sparsity`` is a float, or (``scope="layer"``) a mapping ``{layer_name: float}``.
    ``max_layer_sparsity`` caps the fraction of each layer's units global scope may prune.
    ``pattern=(n, m)``: keep the ``n`` highest scores of every ``m`` along the input dimension.
    """
    g = method.granularity
    weights, current, unit_scores, already = [], [], [], []
    for t in layers:
        w = effective_tensor(t.module, t.tensor)
        cur = current_keep(t.module, t.tensor)
        s = method.scores(t.name, t.module, w, options)
        pruned = (torch.zeros(s.shape, dtype=torch.bool, device=s.device) if cur is None
                  else Units.pruned(cur, g).view(s.shape).to(s.device))
        weights.append(w)
        current.append(cur)
        unit_scores.append(s)
        already.append(pruned)

    if pattern is not None:
        masks = {}
        for t, s, p, cur in zip(layers, unit_scores, already, current):
            rows = s.masked_fill(p, -math.inf).movedim(t.layout.out_dim, 0)
            keep = nm_mask(rows, *pattern).movedim(0, t.layout.out_dim)
            masks[(t.module, t.tensor)] = keep if cur is None else keep & cur.to(keep.device)
        method.finish(options)
        return masks

    if max_layer_sparsity is not None:
        caps = [max(0, int(max_layer_sparsity * s.numel() + 1e-9) - int(p.sum()))
                for s, p in zip(unit_scores, already)]
        ranked = _capped(unit_scores, [~p for p in already], caps)
        n_eligible = sum(int(torch.isfinite(r).sum()) for r in ranked)
    if scope == "layer":
        groups = [([i], layers[i].name,
                   sparsity[layers[i].name] if isinstance(sparsity, Mapping) else sparsity)
                  for i in range(len(layers))]
    else:
        groups = [(list(range(len(layers))), "global", sparsity)]

    unit_keep = [None] * len(layers)
    for members, where, target in groups:
        dtype = unit_scores[members[0]].dtype
        for i in members[1:]:
            dtype = torch.promote_types(dtype, unit_scores[i].dtype)
        device = unit_scores[members[0]].device
        flat_s = torch.cat([unit_scores[i].reshape(-1).to(device=device, dtype=dtype) for i in members])
        flat_p = torch.cat([already[i].reshape(-1).to(device) for i in members])
        n_units, n_already = flat_s.numel(), int(flat_p.sum())
        k = _target_count(target, n_units, n_already,
                          "model" if scope == "global" or not where else where)
        group = Group(where, scope, float(target), n_units, n_already, k)
        keep = torch.zeros(n_units, dtype=torch.bool, device=device)
        free = ~flat_p
        if max_layer_sparsity is not None:
            flat_s = torch.cat([ranked[i].to(device=device, dtype=dtype) for i in members])
            if k - n_already > n_eligible:
                warnings.warn(
                    f"max_layer_sparsity={max_layer_sparsity:g} lets global scope prune at most "
                    f"{n_already + n_eligible} of {n_units} units ({(n_already + n_eligible) / n_units:.1%}), "
                    f"fewer than the requested {target:g}; the model is pruned to that.",
                    stacklevel=3,
                )
                group = Group(where, scope, float(target), n_units, n_already, n_already + n_eligible)
        if n_already < n_units:
            keep[free] = method.select(flat_s[free], group, options).to(device)
        for i, part in zip(members, keep.split([unit_scores[i].numel() for i in members])):
            unit_keep[i] = part.view(unit_scores[i].shape).to(unit_scores[i].device)

    _warn_emptied(layers, unit_keep, sparsity, scope)
    method.finish(options)
    masks = {}
    followers = method.followers(model) if g == "channel" else {}
    for t, w, cur, uk in zip(layers, weights, current, unit_keep):
        module = t.module
        keep = Units.expand(uk, w.shape, g)
        masks[(module, t.tensor)] = keep if cur is None else keep & cur.to(keep.device)
        if g == "channel":
            if getattr(module, "bias", None) is not None:
                masks[(module, "bias")] = uk
            bn = followers.get(module)
            if bn is not None and bn.affine:
                masks[(bn, "weight")] = uk
                masks[(bn, "bias")] = uk
    return masks

"""Gradient-based pruning: gradient statistics over many mini-batches, and methods using them.

The source document prunes weights with a small gradient, measured once on one sample.
A single gradient is noise, and at a trained minimum every gradient is small, so this
module measures gradients over many mini-batches and offers the published criteria
built from them. For every pruned layer, with ``g_b`` the gradient of the loss of batch
``b`` with respect to the layer's weight ``w``, ``collect_gradient_stats`` sums three
*moments* over the batches:

==============  ====================  ==================================================
statistic       value                 meaning
==============  ====================  ==================================================
``"grad"``      ``sum_b g_b``         ``n_batches`` times the mean (full-data) gradient
``"abs_grad"``  ``sum_b |g_b|``       how large the gradient is, signs ignored
``"sq_grad"``   ``sum_b g_b**2``      the empirical Fisher diagonal (batch-level)
==============  ====================  ==================================================

``w`` does not change while they are collected, so every per-weight score follows:
``sum_b g_b*w = w*sum_b g_b``, ``sum_b |g_b*w| = |w|*sum_b |g_b|`` and
``sum_b (g_b*w)**2 = w**2*sum_b g_b**2``. ``prunekit.prune`` offers three of them:

* ``method="gradient"``: ``sum_b |g_b|``, the source document's idea done properly
  (many batches instead of one sample). Kept as the baseline the chapter argues against.
* ``method="taylor"``: ``|w * sum_b g_b| = |sum_b g_b*w|``, the first-order Taylor
  estimate of the change in the (summed) loss when ``w`` is set to zero (Molchanov et al.
  2017, per weight; SNIP's connection sensitivity when computed at initialisation).
* ``method="fisher"``: ``w**2 * sum_b g_b**2 = sum_b (g_b*w)**2``, Optimal Brain Damage's
  saliency ``h_kk*w**2/2`` with the empirical Fisher diagonal for the Hessian (constant
  factors dropped; they do not change the ranking), which is also Molchanov et al. 2019's
  Taylor-FO importance of a single weight accumulated over mini-batches.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn
from tqdm import tqdm

from . import criteria
from ._validation import _describe, check_choice, check_int
from .prune import (
    PRUNABLE_TYPES,
    Method,
    effective_tensor,
    pruned_tensor_names,
    register_method,
    resolve_modules,
)

__all__ = [
    "GRADIENT_STATISTICS",
    "GRADIENT_SCORES",
    "GradientStats",
    "collect_gradient_stats",
    "GradientMethod",
]

#: The statistics ``collect_gradient_stats`` can accumulate, in their canonical order.
GRADIENT_STATISTICS = ("grad", "abs_grad", "sq_grad")

#: score / prune method -> the statistic it is computed from
_STATISTIC_OF = {"gradient": "abs_grad", "taylor": "grad", "fisher": "sq_grad"}

#: The gradient-based scores (and ``prune`` methods): ``"gradient"``, ``"taylor"``, ``"fisher"``.
GRADIENT_SCORES = tuple(_STATISTIC_OF)

MODES = ("eval", "train")

_BATCH_HINT = (
    " Each batch must be an (inputs, targets) pair, as a torch DataLoader over a "
    "TensorDataset yields; to use a single batch, pass [(inputs, targets)]."
)


def _score(criterion: str, weight: torch.Tensor, stat: torch.Tensor) -> torch.Tensor:
    """Per-weight score of ``criterion`` from the statistic it reads (see the module docs)."""
    if criterion == "fisher":
        w = weight.detach()
        return w * w * stat.detach()
    # "gradient": |stat| (= stat for sum_b |g_b|); "taylor": |w * stat|, as gradient_mask
    return criteria.gradient_scores(weight, stat, criterion)


# --------------------------------------------------------------------------------------
# The statistics
# --------------------------------------------------------------------------------------


class GradientStats:
    """Gradient statistics of a model's layers, accumulated over mini-batches.

    Built by :func:`collect_gradient_stats`; pass it to
    ``prunekit.prune(model, sparsity, method=..., stats=stats)`` or read the tensors.
    ``stats["sq_grad"]["fc1"]`` (or ``stats.sq_grad["fc1"]``) is the sum over batches of
    the squared gradient of layer ``fc1``'s weight, a tensor shaped like that weight.

    Args:
        statistics: ``{statistic: {layer_name: tensor}}`` for statistics in
            ``GRADIENT_STATISTICS``.
        weight: ``{layer_name: tensor}``, the effective weights the gradients were taken at.
        n_batches: how many batches were summed.
        loss: the mean of the batch losses.
        mode: ``"eval"`` or ``"train"``, the mode the model was run in.

    Attributes:
        weight: ``{layer_name: tensor}``, a copy of each layer's effective weight
            (``weight_orig * weight_mask`` for a pruned layer) when the statistics were
            collected. ``scores`` uses it; ``prune`` uses the model's current weights.
        n_batches: the number of batches summed. Divide a statistic by it for a mean.
        loss: the mean of the batch losses (a float), a check that the data and the loss
            are what you meant.
        mode: ``"eval"`` or ``"train"``, the mode the model was run in.
    """

    def __init__(self, statistics: dict, weight: dict, n_batches: int, loss: float,
                 mode: str = "eval"):
        unknown = sorted(set(statistics) - set(GRADIENT_STATISTICS))
        if unknown:
            raise ValueError(
                f"The 'statistics' parameter of GradientStats must have keys among "
                f"{GRADIENT_STATISTICS}. Got {unknown} instead."
            )
        self._stats = {k: dict(statistics[k]) for k in GRADIENT_STATISTICS if k in statistics}
        self.weight = dict(weight)
        self.n_batches = int(n_batches)
        self.loss = float(loss)
        self.mode = mode

    @property
    def statistics(self) -> tuple:
        """The statistics held, a tuple in the order of ``GRADIENT_STATISTICS``."""
        return tuple(self._stats)

    @property
    def layers(self) -> list:
        """Names of the layers, as in ``model.named_modules()``, in model order."""
        return list(self.weight)

    def __getitem__(self, statistic: str) -> dict:
        if statistic not in GRADIENT_STATISTICS:
            raise KeyError(
                f"{statistic!r} is not a gradient statistic; they are {GRADIENT_STATISTICS}."
            )
        if statistic not in self._stats:
            raise KeyError(
                f"These statistics were collected without {statistic!r} (they hold "
                f"{self.statistics}); collect again with statistics=(..., {statistic!r})."
            )
        return self._stats[statistic]

    @property
    def grad(self) -> dict:
        """``{layer: sum_b g_b}``, the summed gradient (``n_batches`` times the mean one)."""
        return self["grad"]

    @property
    def abs_grad(self) -> dict:
        """``{layer: sum_b |g_b|}``, the summed absolute gradient."""
        return self["abs_grad"]

    @property
    def sq_grad(self) -> dict:
        """``{layer: sum_b g_b**2}``, the summed squared gradient (empirical Fisher diagonal)."""
        return self["sq_grad"]

    def scores(self, criterion: str = "taylor") -> dict:
        """Per-weight importance scores, computed at the stored weights.

        Args:
            criterion: ``"gradient"`` (``sum_b |g_b|``), ``"taylor"``
                (``|w * sum_b g_b|``) or ``"fisher"`` (``w**2 * sum_b g_b**2``). These
                are the scores of ``prune(..., method=criterion, stats=self)`` when the
                model's weights are still those the statistics were collected at.

        Returns:
            ``{layer_name: scores}``, each shaped like the layer's weight; higher = more
            important.

        Raises:
            ValueError: for an unknown criterion.
            KeyError: if the statistic the criterion needs was not collected.

        Examples:
            >>> import torch, prunekit as pk
            >>> stats = pk.GradientStats({"grad": {"fc": torch.tensor([0.5, -2.0])}},
            ...                          weight={"fc": torch.tensor([4.0, 0.5])},
            ...                          n_batches=1, loss=0.0)
            >>> stats.scores("taylor")["fc"]
            tensor([2., 1.])
        """
        check_choice(criterion, GRADIENT_SCORES, "GradientStats.scores", "criterion")
        table = self[_STATISTIC_OF[criterion]]
        return {name: _score(criterion, self.weight[name], t) for name, t in table.items()}

    def to(self, device) -> GradientStats:
        """A copy with every tensor on ``device`` (e.g. ``"cpu"`` for plotting).

        Returns:
            A new :class:`GradientStats`; this one is unchanged.
        """
        return GradientStats(
            {k: {n: t.to(device) for n, t in v.items()} for k, v in self._stats.items()},
            {n: t.to(device) for n, t in self.weight.items()},
            self.n_batches, self.loss, self.mode,
        )

    def __repr__(self) -> str:
        return (
            f"GradientStats(statistics={self.statistics}, layers={self.layers}, "
            f"n_batches={self.n_batches}, loss={self.loss:.4g}, mode={self.mode!r})"
        )


# --------------------------------------------------------------------------------------
# Argument checks shared by collect_gradient_stats and prune
# --------------------------------------------------------------------------------------


def _check_loader(loader, caller: str) -> None:
    if isinstance(loader, (torch.Tensor, str, bytes, Mapping)) or not isinstance(loader, Iterable):
        raise TypeError(
            f"The 'loader' parameter of {caller} must be an iterable of (inputs, targets) "
            f"batches, such as a torch DataLoader. Got {_describe_value(loader)} instead."
        )


def _check_loss_fn(loss_fn, caller: str) -> None:
    if not callable(loss_fn):
        raise TypeError(
            f"The 'loss_fn' parameter of {caller} must be a callable loss_fn(outputs, "
            f"targets) -> scalar tensor, such as torch.nn.CrossEntropyLoss(). "
            f"Got {_describe_value(loss_fn)} instead."
        )


def _check_collect_options(max_batches, mode, device, progress, caller: str):
    if max_batches is not None:
        check_int(max_batches, caller, "max_batches", minimum=1)
    check_choice(mode, MODES, caller, "mode")
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise TypeError(
                f"The 'device' parameter of {caller} must be None, a torch.device or a device "
                f"string such as 'cuda'. Got {device!r} instead."
            ) from None
    if not isinstance(progress, bool):
        raise TypeError(
            f"The 'progress' parameter of {caller} must be a bool. Got {progress!r} instead."
        )
    return device


def _check_statistics(statistics, caller: str) -> tuple:
    if isinstance(statistics, str):
        statistics = (statistics,)
    if not isinstance(statistics, Iterable):
        raise TypeError(
            f"The 'statistics' parameter of {caller} must be a statistic name or an iterable "
            f"of them, from {GRADIENT_STATISTICS}. Got {statistics!r} instead."
        )
    chosen = [check_choice(s, GRADIENT_STATISTICS, caller, "statistics") for s in statistics]
    if not chosen:
        raise ValueError(
            f"The 'statistics' parameter of {caller} must name at least one of "
            f"{GRADIENT_STATISTICS}. Got {statistics!r} instead."
        )
    return tuple(s for s in GRADIENT_STATISTICS if s in chosen)


def _describe_value(value) -> str:
    if isinstance(value, torch.Tensor):
        return _describe(value)
    text = repr(value)
    return text if len(text) <= 80 else f"a {type(value).__name__}"


def _resolve_layers(model: nn.Module, layers, caller: str) -> list[tuple[str, nn.Module]]:
    named = list(model.named_modules())
    if layers is None:
        chosen = [(n, m) for n, m in named if isinstance(m, PRUNABLE_TYPES)]
        if not chosen:
            raise ValueError(
                f"The 'model' parameter of {caller} must contain at least one nn.Linear or "
                f"nn.Conv* layer (or name the layers with layers=...). Got a "
                f"{type(model).__name__} without any instead."
            )
        return chosen
    out = resolve_modules(model, layers, caller, "layers")
    if not out:
        raise ValueError(
            f"The 'layers' parameter of {caller} must name at least one layer. "
            f"Got {layers!r} instead."
        )
    return out


def _leaf(name: str, module: nn.Module, caller: str) -> tuple[nn.Parameter, bool]:
    """The parameter behind ``module.weight`` and whether the weight is masked."""
    if "weight" in pruned_tensor_names(module):
        return module.weight_orig, True
    weight = module._parameters.get("weight")
    if not isinstance(weight, nn.Parameter) or not weight.is_floating_point():
        raise ValueError(
            f"Layer {name!r} ({type(module).__name__}) has no floating-point 'weight' parameter "
            f"that {caller} can take gradients of (a weight computed on access, as with "
            "torch.nn.utils.parametrize, is not supported)."
        )
    return weight, False


def _to_device(obj, device: torch.device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_to_device(o, device) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------------------


def _collect(model: nn.Module, layers: list[tuple[str, nn.Module]], loader, loss_fn: Callable,
             statistics: tuple, max_batches, mode: str, device, progress: bool,
             caller: str) -> GradientStats:
    """Accumulate ``statistics`` for ``layers``; the model is restored whatever happens.

    Gradients come from ``torch.autograd.grad``, which returns them without accumulating
    into any ``.grad``: the model's ``.grad`` attributes are never touched.
    """
    leaves = [_leaf(name, module, caller) for name, module in layers]
    weights = {name: effective_tensor(module, "weight").clone() for name, module in layers}
    if device is None:
        device = next(iter(weights.values())).device
    acc = {}
    for stat in statistics:
        acc[stat] = {}
        for name, w in weights.items():
            dtype = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype
            acc[stat][name] = torch.zeros(w.shape, dtype=dtype, device=w.device)

    # What has to be put back: requires_grad, each module's mode, buffers that a forward
    # pass in train mode updates (BatchNorm statistics), and the ``weight`` attribute that
    # torch's pruning pre-hook recomputes on every forward.
    requires = [(p, p.requires_grad) for p, _ in leaves]
    training = [(m, m.training) for m in model.modules()]
    masks = {id(getattr(m, n + "_mask")) for m in model.modules() for n in pruned_tensor_names(m)}
    buffers = []
    if mode == "train":
        buffers = [(b, b.detach().clone()) for b in model.buffers() if id(b) not in masks]
    attributes = [(m, n, m.__dict__[n]) for m in model.modules() for n in pruned_tensor_names(m)
                  if n in m.__dict__]

    captured = {name: [] for name, _ in layers}
    handles = []
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    n_batches = 0
    bar = None
    try:
        for (name, module), (param, pruned) in zip(layers, leaves):
            param.requires_grad_(True)
            if pruned:  # registered after torch's pruning hook, so it sees weight_orig * mask
                handles.append(module.register_forward_pre_hook(
                    lambda mod, args, _name=name: captured[_name].append(mod.weight)))
        model.train(mode == "train")

        total = None
        try:
            total = len(loader)
        except TypeError:
            pass
        if max_batches is not None:
            total = max_batches if total is None else min(total, max_batches)
        bar = tqdm(total=total, desc="gradient statistics", unit="batch", disable=not progress,
                   file=sys.stdout, leave=True, dynamic_ncols=False, ncols=90)
        with torch.enable_grad():
            for batch in loader:
                if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                    raise TypeError(
                        f"The 'loader' parameter of {caller} yielded a batch that is not an "
                        f"(inputs, targets) pair: {_describe_batch(batch)}.{_BATCH_HINT}"
                    )
                inputs, targets = _to_device(batch[0], device), _to_device(batch[1], device)
                for lst in captured.values():
                    lst.clear()
                loss = _check_loss(loss_fn(model(inputs), targets), caller)
                inputs_of = []  # per layer: the tensors whose gradient is the layer's g_b
                for (name, _), (param, pruned) in zip(layers, leaves):
                    inputs_of.append(list(captured[name]) if pruned else [param])
                flat, index = [], {}
                for ts in inputs_of:
                    for t in ts:
                        if id(t) not in index:
                            index[id(t)] = len(flat)
                            flat.append(t)
                grads = torch.autograd.grad(loss, flat, allow_unused=True) if flat else ()
                for (name, _), ts in zip(layers, inputs_of):
                    parts = [grads[index[id(t)]] for t in ts]
                    parts = [g for g in parts if g is not None]
                    if not parts:  # the forward pass did not use this layer: g_b = 0
                        continue
                    g = parts[0] if len(parts) == 1 else torch.stack(parts).sum(0)
                    g = g.detach().to(acc[statistics[0]][name].dtype)
                    if "grad" in acc:
                        acc["grad"][name].add_(g)
                    if "abs_grad" in acc:
                        acc["abs_grad"][name].add_(g.abs())
                    if "sq_grad" in acc:
                        acc["sq_grad"][name].addcmul_(g, g)
                loss_sum += loss.detach().float().to(device)
                n_batches += 1
                bar.update(1)
                del loss, grads, flat, inputs_of
                if max_batches is not None and n_batches >= max_batches:
                    break  # before fetching another batch from the loader
    finally:
        if bar is not None:
            bar.close()
        for h in handles:
            h.remove()
        for lst in captured.values():
            lst.clear()
        for p, flag in requires:
            p.requires_grad_(flag)
        model.train(training[0][1])  # lets custom train() overrides run, then the exact flags
        for m, flag in training:
            m.training = flag
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for m, n, value in attributes:
            m.__dict__[n] = value

    if n_batches == 0:
        raise ValueError(
            f"The 'loader' parameter of {caller} must yield at least one (inputs, targets) "
            f"batch. Got {_describe_value(loader)}, which yielded none, instead."
        )
    mean_loss = float(loss_sum) / n_batches
    bad = [name for name in weights
           if not all(bool(torch.isfinite(acc[s][name]).all()) for s in statistics)]
    if bad or mean_loss != mean_loss or mean_loss in (float("inf"), float("-inf")):
        raise ValueError(
            f"The 'loss_fn' parameter of {caller} gave a non-finite loss or gradients (mean "
            f"batch loss {mean_loss:g}; layers with NaN or infinite statistics: {bad}). "
            "Check the data, the loss function and the model's weights."
        )
    return GradientStats(acc, weights, n_batches, mean_loss, mode)


def _describe_batch(batch) -> str:
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of length {len(batch)}"
    if isinstance(batch, torch.Tensor):
        return _describe(batch)
    return f"a {type(batch).__name__}"


def _check_loss(loss, caller: str) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or not loss.is_floating_point() or loss.numel() != 1:
        raise TypeError(
            f"The 'loss_fn' parameter of {caller} must return a scalar floating-point loss "
            f"tensor (use reduction='mean'). Got {_describe_value(loss)} instead."
        )
    if not loss.requires_grad:
        raise ValueError(
            f"The 'loss_fn' parameter of {caller} returned a loss that does not depend on the "
            "model's weights (it has no gradient). Was it computed under torch.no_grad(), or "
            "from detached outputs?"
        )
    return loss.reshape(())


def collect_gradient_stats(model: nn.Module, loader, loss_fn: Callable, *,
                           statistics=GRADIENT_STATISTICS, layers=None, max_batches=None,
                           mode: str = "eval", device=None,
                           progress: bool = False) -> GradientStats:
    """Sum gradient statistics of every prunable weight over many mini-batches.

    For each batch ``b`` of ``loader`` the model computes ``loss_fn(model(inputs),
    targets)``; ``g_b`` is the gradient of that loss with respect to a layer's weight.
    With ``reduction="mean"`` (the default of torch's losses) it is the gradient of the
    *mean* loss over the batch, so every batch counts equally, a smaller last batch too.
    The statistics (per weight, summed over the batches ``b = 1 .. n_batches``):

    * ``"grad"``: ``sum_b g_b``. Divided by ``n_batches`` it is the full-data gradient
      (exactly so with equal batch sizes). ``|w * sum_b g_b| = |sum_b g_b*w|`` is the
      first-order Taylor score (``prune(method="taylor")``).
    * ``"abs_grad"``: ``sum_b |g_b|``, the source document's "small gradient" idea over many
      batches instead of one sample (``prune(method="gradient")``).
    * ``"sq_grad"``: ``sum_b g_b**2``, the diagonal of the empirical Fisher information
      computed from batch gradients (with batches of one sample it is the per-sample
      empirical Fisher; larger batches average noise out first). ``w**2 * sum_b g_b**2`` is
      Optimal Brain Damage's saliency with that Fisher diagonal as the Hessian
      (``prune(method="fisher")``).

    The gradient is the one with respect to the weight the layer computes with. For a layer
    already pruned with prunekit (or ``torch.nn.utils.prune``) that is ``weight_orig *
    weight_mask``: kept entries get the same gradient as ``weight_orig``, and masked
    entries get the gradient they would have if they were switched back on, where
    ``weight_orig.grad`` would be zero. ``prune`` keeps masked entries pruned whatever
    their score.

    The model is left exactly as it was: parameter values, ``.grad`` (never touched: the
    gradients come from ``torch.autograd.grad``), ``requires_grad`` (frozen weights get
    gradients too), every module's train/eval mode and, with ``mode="train"``, the
    buffers (BatchNorm running statistics) that the forward passes update. This holds when
    an exception interrupts the collection too.

    Args:
        model: the model, on any device; it is not moved.
        loader: an iterable of ``(inputs, targets)`` pairs (tuples or lists), such as a
            ``torch.utils.data.DataLoader``; iterated once. Tensors in ``inputs`` and
            ``targets`` (also inside tuples, lists and dicts) are moved to ``device``; the
            model is called as ``model(inputs)``.
        loss_fn: ``loss_fn(outputs, targets)`` returning a scalar tensor, e.g.
            ``torch.nn.CrossEntropyLoss()``.
        statistics: which of ``"grad"``, ``"abs_grad"``, ``"sq_grad"`` to collect (one name
            or several; default all three). Each costs one tensor per weight.
        layers: the layers whose weight gradients to collect: module names as in
            ``model.named_modules()`` or the modules. Default: every ``nn.Linear`` and
            ``nn.Conv*`` layer, as ``prune`` does.
        max_batches: stop after this many batches (default: the whole loader).
        mode: ``"eval"`` (default) or ``"train"``, the mode the model runs in while
            collecting. ``"eval"`` takes the gradient of the function the model computes at
            inference (BatchNorm uses its running statistics, dropout is off), so the result
            is deterministic and does not depend on how batches are composed. Use
            ``"train"`` to prune at initialisation (SNIP) a network with BatchNorm, whose
            running statistics are not yet meaningful; BatchNorm then normalises with batch
            statistics, and dropout draws from torch's global random number generator.
        device: where batches are moved; default the device of the first layer's weight.
        progress: show a tqdm progress bar.

    Returns:
        A :class:`GradientStats` with the requested statistics for every layer, each a
        tensor shaped like the weight on the weight's device (``float32`` for half-precision
        weights), plus a copy of the weights, ``n_batches`` and the mean batch ``loss``.

    Raises:
        TypeError, ValueError: for a bad argument, naming it: a ``loader`` that yields
            nothing or something other than ``(inputs, targets)`` pairs, a ``loss_fn`` that is
            not callable or does not return a scalar loss with a gradient, non-finite
            gradients, an unknown statistic or mode. The model is left as it was.

    Examples:
        >>> import torch, prunekit as pk
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(
        ...     torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(5)]
        >>> stats = pk.collect_gradient_stats(model, data, torch.nn.CrossEntropyLoss())
        >>> stats.layers, stats.n_batches
        (['0', '2'], 5)
        >>> stats.sq_grad["0"].shape
        torch.Size([3, 4])
        >>> _ = pk.prune(model, 0.5, method="fisher", stats=stats)
        >>> pk.sparsity(model)
        0.5
    """
    caller = "collect_gradient_stats"
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"The 'model' parameter of {caller} must be a torch.nn.Module. "
            f"Got {type(model).__name__} instead."
        )
    _check_loader(loader, caller)
    _check_loss_fn(loss_fn, caller)
    statistics = _check_statistics(statistics, caller)
    device = _check_collect_options(max_batches, mode, device, progress, caller)
    resolved = _resolve_layers(model, layers, caller)
    return _collect(model, resolved, loader, loss_fn, statistics, max_batches, mode, device,
                    progress, caller)


# --------------------------------------------------------------------------------------
# prune(method="gradient" | "taylor" | "fisher")
# --------------------------------------------------------------------------------------


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
    options = {"stats": None, "loader": None, "loss_fn": None, "max_batches": None,
               "mode": "eval", "device": None, "progress": False}
    _COLLECTION = ("loader", "loss_fn", "max_batches", "mode", "device", "progress")

    def __init__(self, name: str):
        if name not in _STATISTIC_OF:
            raise ValueError(
                f"GradientMethod name must be one of {GRADIENT_SCORES}. Got {name!r} instead."
            )
        self.name = name
        self.statistic = _STATISTIC_OF[name]

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
                    raise ValueError(
                        f"The 'stats' parameter of {caller} must hold the {self.statistic!r} "
                        f"statistic, which method={self.name!r} ranks by. Got GradientStats "
                        f"with {stats.statistics} instead; collect it with "
                        f"statistics=(..., {self.statistic!r})."
                    )
            elif not isinstance(stats, Mapping):
                raise TypeError(
                    f"The 'stats' parameter of {caller} must be a prunekit.GradientStats or a "
                    f"mapping {{layer_name: tensor}}. Got {_describe_value(stats)} instead."
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
        _check_loader(loader, caller)
        _check_loss_fn(loss_fn, caller)
        options["device"] = _check_collect_options(options["max_batches"], options["mode"],
                                                   options["device"], options["progress"], caller)
        return options

    def prepare(self, model: nn.Module, layers: list, options: dict) -> dict:
        caller = "prune"
        stats = options["stats"]
        if stats is None:
            stats = _collect(model, list(layers), options["loader"], options["loss_fn"],
                             (self.statistic,), options["max_batches"], options["mode"],
                             options["device"], options["progress"], caller)
            collected_here = True
        else:
            collected_here = False
        table = stats[self.statistic] if isinstance(stats, GradientStats) else stats
        resolved = {}
        for name, module in layers:
            weight = effective_tensor(module, "weight")
            if name not in table:
                have = sorted(table) if len(table) <= 20 else f"{len(table)} layers"
                raise ValueError(
                    f"The 'stats' parameter of {caller} has no entry for layer {name!r}, which "
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
                raise TypeError(
                    f"The 'stats' parameter of {caller} must hold floating-point tensors. "
                    f"Got {_describe_value(t)} for layer {name!r} ({what}) instead."
                )
            if t.shape != weight.shape:
                raise ValueError(
                    f"The 'stats' parameter of {caller} has a tensor of shape {tuple(t.shape)} "
                    f"for layer {name!r} ({what}), whose weight has shape {tuple(weight.shape)}."
                )
            finite = torch.isfinite(t)
            if not bool(finite.all()):
                raise ValueError(
                    f"The 'stats' parameter of {caller} must contain only finite values. Got "
                    f"{int((~finite).sum())} NaN or infinite entries for layer {name!r} ({what})."
                )
            if self.name == "fisher" and bool((t < 0).any()):
                raise ValueError(
                    f"The 'stats' parameter of {caller} must hold sums of squared gradients "
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
        for name, module in layers:
            then = stats.weight.get(name)
            if then is None or then.shape != effective_tensor(module, "weight").shape:
                continue
            now = effective_tensor(module, "weight")
            then = then.to(device=now.device, dtype=now.dtype)
            if "weight" in pruned_tensor_names(module):
                keep = module.weight_mask != 0
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
        return _score(self.name, weight, stat)


for _name in GRADIENT_SCORES:
    register_method(GradientMethod(_name))
del _name

"""Gradient statistics over many mini-batches: sums of ``g``, ``|g|`` and ``g**2`` per weight."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from ._modules import WIDE, resolve_modules
from ._progress import progress_bar
from ._validation import (
    argument_error,
    check_bool,
    check_choice,
    check_int,
    check_loader,
    check_loss_fn,
    check_model,
    describe,
    invalid,
)
from .reparam import capture_effective, computed_on_access, effective_tensor, is_masked, pruned_tensor_names
from .scores import GRADIENT_SCORES, STATISTIC_OF, statistic_scores
from .targets import Layout, Target, targets

__all__ = [
    "GRADIENT_STATISTICS",
    "GRADIENT_SCORES",
    "GradientStats",
    "collect_gradient_stats",
]

#: The statistics ``collect_gradient_stats`` can accumulate, in their canonical order.
GRADIENT_STATISTICS = ("grad", "abs_grad", "sq_grad")

MODES = ("eval", "train")

_BATCH_HINT = (
    " Each batch must be an (inputs, targets) pair, as a torch DataLoader over a "
    "TensorDataset yields; to use a single batch, pass [(inputs, targets)]."
)


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
            raise argument_error(ValueError, "statistics", "GradientStats", "must have keys "
                                 f"among {GRADIENT_STATISTICS}. Got {unknown} instead.")
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
        table = self[STATISTIC_OF[criterion]]
        return {name: statistic_scores(criterion, self.weight[name], t) for name, t in table.items()}

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


def check_collect_options(max_batches, mode, device, progress, caller: str):
    if max_batches is not None:
        check_int(max_batches, caller, "max_batches", minimum=1)
    check_choice(mode, MODES, caller, "mode")
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise invalid(TypeError, "device", caller, "None, a torch.device or a device string "
                          "such as 'cuda'", repr(device)) from None
    check_bool(progress, caller, "progress")
    return device


def _check_statistics(statistics, caller: str) -> tuple:
    if isinstance(statistics, str):
        statistics = (statistics,)
    if not isinstance(statistics, Iterable):
        raise invalid(TypeError, "statistics", caller, "a statistic name or an iterable of them, "
                      f"from {GRADIENT_STATISTICS}", repr(statistics))
    chosen = [check_choice(s, GRADIENT_STATISTICS, caller, "statistics") for s in statistics]
    if not chosen:
        raise argument_error(ValueError, "statistics", caller, "must name at least one of "
                             f"{GRADIENT_STATISTICS}. Got {statistics!r} instead.")
    return tuple(s for s in GRADIENT_STATISTICS if s in chosen)


def _resolve_layers(model: nn.Module, layers, caller: str) -> list[Target]:
    if layers is None:
        chosen = targets(model)
        if not chosen:
            raise argument_error(ValueError, "model", caller, "must contain at least one "
                                 "nn.Linear or nn.Conv* layer (or name the layers with "
                                 f"layers=...). Got a {type(model).__name__} without any instead.")
        return chosen
    by_name = {t.name: t for t in targets(model)}
    items = [layers] if isinstance(layers, (str, nn.Module)) else layers
    tensor_names = [x for x in items if isinstance(x, str) and x in by_name and "." in x
                    and x not in dict(model.named_modules())] if isinstance(items, Iterable) else []
    rest = [x for x in items if x not in tensor_names] if isinstance(items, Iterable) else items
    out = [by_name[x] for x in tensor_names]
    for name, module in (resolve_modules(model, rest, caller, "layers") if rest != [] else []):
        found = targets(model, [(name, module)])
        out += found or [Target(name, module, "weight", Layout(channels=False))]
    if not out:
        raise argument_error(ValueError, "layers", caller, "must name at least one layer. "
                             f"Got {layers!r} instead.")
    return out


def _leaf(t: Target, caller: str) -> tuple[nn.Parameter, bool]:
    """The parameter behind ``module.<tensor>`` and whether the tensor is masked."""
    if is_masked(t.module, t.tensor):
        return t.module._parameters[t.tensor + "_orig"], True
    weight = t.module._parameters.get(t.tensor)
    if not isinstance(weight, nn.Parameter) or not weight.is_floating_point():
        raise ValueError(
            f"Layer {t.name!r} ({type(t.module).__name__}) has no floating-point {t.tensor!r} "
            f"parameter that {caller} can take gradients of (a weight computed on access, as "
            "with torch.nn.utils.parametrize, is not supported)."
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


def collect(model: nn.Module, layers: list[tuple[str, nn.Module]], loader, loss_fn: Callable,
             statistics: tuple, max_batches, mode: str, device, progress: bool,
             caller: str) -> GradientStats:
    """Accumulate ``statistics`` for ``layers``; the model is restored whatever happens.

    Gradients come from ``torch.autograd.grad``, which returns them without accumulating
    into any ``.grad``: the model's ``.grad`` attributes are never touched.
    """
    leaves = [_leaf(t, caller) for t in layers]
    weights = {t.name: effective_tensor(t.module, t.tensor).clone() for t in layers}
    if device is None:
        device = next(iter(weights.values())).device
    acc = {}
    for stat in statistics:
        acc[stat] = {}
        for name, w in weights.items():
            dtype = torch.float32 if w.dtype in WIDE else w.dtype
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

    captured = {t.name: [] for t in layers}
    handles = []
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    n_batches = 0
    bar = None
    try:
        for t, (param, pruned) in zip(layers, leaves):
            param.requires_grad_(True)
            if pruned and not computed_on_access(t.module, t.tensor):
                # masked by torch.nn.utils.prune's hook: registered after it, sees orig * mask
                handles.append(t.module.register_forward_pre_hook(
                    lambda mod, args, _name=t.name, _tensor=t.tensor:
                    captured[_name].append(getattr(mod, _tensor))))
        model.train(mode == "train")

        total = None
        try:
            total = len(loader)
        except TypeError:
            pass
        if max_batches is not None:
            total = max_batches if total is None else min(total, max_batches)
        bar = progress_bar(total=total, desc="gradient statistics", unit="batch",
                           enabled=progress)
        with torch.enable_grad():
            for batch in loader:
                if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                    raise argument_error(
                        TypeError, "loader", caller, "yielded a batch that is not an (inputs, "
                        f"targets) pair: {_describe_batch(batch)}.{_BATCH_HINT}")
                inputs, targets = _to_device(batch[0], device), _to_device(batch[1], device)
                for lst in captured.values():
                    lst.clear()
                with capture_effective() as log:  # prunekit's masks: every orig * mask computed
                    loss = _check_loss(loss_fn(model(inputs), targets), caller)
                for t, (_, pruned) in zip(layers, leaves):
                    if pruned and computed_on_access(t.module, t.tensor):
                        captured[t.name] = [v for m, n, v in log if m is t.module and n == t.tensor]
                del log
                inputs_of = []  # per layer: the tensors whose gradient is the layer's g_b
                for t, (param, pruned) in zip(layers, leaves):
                    inputs_of.append(list(captured[t.name]) if pruned else [param])
                flat, index = [], {}
                for ts in inputs_of:
                    for t in ts:
                        if id(t) not in index:
                            index[id(t)] = len(flat)
                            flat.append(t)
                grads = torch.autograd.grad(loss, flat, allow_unused=True) if flat else ()
                for (name, _), ts in zip(layers, inputs_of):  # a Target unpacks as (name, module)
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
        raise argument_error(ValueError, "loader", caller, "must yield at least one (inputs, "
                             f"targets) batch. Got {describe(loader)}, which yielded none, "
                             "instead.")
    mean_loss = float(loss_sum) / n_batches
    bad = [name for name in weights
           if not all(bool(torch.isfinite(acc[s][name]).all()) for s in statistics)]
    if bad or mean_loss != mean_loss or mean_loss in (float("inf"), float("-inf")):
        raise argument_error(
            ValueError, "loss_fn", caller, "gave a non-finite loss or gradients (mean batch "
            f"loss {mean_loss:g}; layers with NaN or infinite statistics: {bad}). Check the "
            "data, the loss function and the model's weights.")
    return GradientStats(acc, weights, n_batches, mean_loss, mode)


def _describe_batch(batch) -> str:
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of length {len(batch)}"
    if isinstance(batch, torch.Tensor):
        return describe(batch)
    return f"a {type(batch).__name__}"


def _check_loss(loss, caller: str) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or not loss.is_floating_point() or loss.numel() != 1:
        raise argument_error(TypeError, "loss_fn", caller, "must return a scalar floating-point "
                             f"loss tensor (use reduction='mean'). Got {describe(loss)} instead.")
    if not loss.requires_grad:
        raise argument_error(
            ValueError, "loss_fn", caller, "returned a loss that does not depend on the model's "
            "weights (it has no gradient). Was it computed under torch.no_grad(), or from "
            "detached outputs?")
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
        >>> data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))
        ...         for _ in range(5)]
        >>> loss_fn = torch.nn.CrossEntropyLoss()
        >>> stats = pk.collect_gradient_stats(model, data, loss_fn)
        >>> stats.layers, stats.n_batches
        (['0', '2'], 5)
        >>> stats.sq_grad["0"].shape
        torch.Size([3, 4])
        >>> _ = pk.prune(model, 0.5, method="fisher", stats=stats)
        >>> pk.sparsity(model)
        0.5
    """
    caller = "collect_gradient_stats"
    check_model(model, caller)
    check_loader(loader, caller)
    check_loss_fn(loss_fn, caller)
    statistics = _check_statistics(statistics, caller)
    device = check_collect_options(max_batches, mode, device, progress, caller)
    resolved = _resolve_layers(model, layers, caller)
    return collect(model, resolved, loader, loss_fn, statistics, max_batches, mode, device,
                   progress, caller)

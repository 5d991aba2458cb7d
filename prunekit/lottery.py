"""Lottery tickets: iterative magnitude pruning with rewinding, and its two controls.

Frankle and Carbin (2019) train a network, prune the smallest-magnitude weights, *rewind*
the survivors to their initial values and train again, round after round; the sparse
network that results (a "winning ticket") trains to the dense accuracy, where the same
structure with fresh random weights does not. Frankle et al. (2020) rewind to an early
training step instead of the initialisation, which keeps the method working on larger
networks.

:func:`prunekit.lottery_tickets` runs the loop. The rewind point is the model you pass in: a freshly
initialised model rewinds to initialisation; a model already trained for ``k`` steps (and
a ``train_fn`` that trains the remaining steps) rewinds to step ``k``. The result gives
every round's mask, the ticket itself (:meth:`prunekit.LotteryTickets.ticket`) and the
two controls (:meth:`prunekit.LotteryTickets.reinitialised`,
:meth:`prunekit.LotteryTickets.random_mask`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ._table import Table, TableRepr
from ._validation import check_choice, check_int, check_model, describe, invalid
from .measure import sparsity as _sparsity
from .pruning import SCOPES, prune
from .reparam import attach_mask, copy_model, current_keep, pruned_tensor_names, strip_masks

__all__ = ["lottery_tickets", "LotteryTickets", "LotteryRound", "imp_sparsity"]


def imp_sparsity(rate: float, round_: int) -> float:
    """The sparsity after ``round_`` rounds that each prune ``rate`` of the remaining weights.

    ``1 - (1 - rate) ** round_``: 20 % per round leaves 80 %, 64 %, 51.2 %, ... of the weights.

    Examples:
        >>> from prunekit.lottery import imp_sparsity
        >>> [round(imp_sparsity(0.2, r), 3) for r in range(4)]
        [0.0, 0.2, 0.36, 0.488]
    """
    rate = _check_rate(rate, "imp_sparsity")
    round_ = check_int(round_, "imp_sparsity", "round_", minimum=0)
    return 1.0 - (1.0 - rate) ** round_


def _check_rate(rate, caller: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise invalid(TypeError, "rate", caller, "a real number in the open interval (0, 1)",
                      describe(rate))
    if not (math.isfinite(rate) and 0.0 < rate < 1.0):
        raise invalid(ValueError, "rate", caller, "a real number in the open interval (0, 1)",
                      repr(rate))
    return float(rate)


def _masks(model: nn.Module) -> dict:
    """``{(module path, tensor name): keep}`` of every mask on ``model`` (cloned)."""
    return {(path, name): current_keep(m, name).clone()
            for path, m in model.named_modules() for name in pruned_tensor_names(m)}


def _apply(model: nn.Module, masks: dict) -> nn.Module:
    modules = dict(model.named_modules())
    for (path, name), keep in masks.items():
        module = modules[path]
        if name not in pruned_tensor_names(module):  # a tied holder masked already counts
            attach_mask(module, name, keep, model)
    return model


@dataclass(frozen=True)
class LotteryRound:
    """One round of :func:`lottery_tickets`.

    Attributes:
        round: 0 for the dense training, then 1, 2, ...
        sparsity: the requested sparsity, ``1 - (1 - rate) ** round``.
        achieved: the fraction of prunable weights that are zero (:func:`prunekit.sparsity`).
        masks: ``{(module path, tensor name): keep-mask}`` this round trained with (empty
            for round 0).
        metric: ``evaluate_fn(model)`` after this round's training, or ``None``.
        model: the trained model of this round (``None`` with ``keep_models=False``).
    """

    round: int
    sparsity: float
    achieved: float
    masks: dict = field(repr=False)
    metric: float | None
    model: nn.Module | None = field(default=None, repr=False)


@dataclass(frozen=True, repr=False)
class LotteryTickets(TableRepr):
    """The result of :func:`lottery_tickets`.

    Attributes:
        rounds: one :class:`LotteryRound` per round, round 0 (dense) first.
        rate: the fraction of the remaining weights pruned per round.
        scope: ``"layer"`` or ``"global"``.
    """

    rounds: list
    rate: float
    scope: str
    _start: nn.Module = field(repr=False)

    def _round(self, round_, caller: str) -> LotteryRound:
        last = len(self.rounds) - 1
        if isinstance(round_, bool) or not isinstance(round_, numbers.Integral) or not (
                1 <= round_ <= last):
            raise invalid(ValueError if isinstance(round_, numbers.Integral) else TypeError,
                          "round_", caller, f"an integer in [1, {last}]", repr(round_))
        return self.rounds[round_]

    @property
    def rewind_state(self) -> dict:
        """A copy of the ``state_dict`` every round rewinds to (the model as passed in)."""
        return {k: v.clone() for k, v in self._start.state_dict().items()}

    def ticket(self, round_: int) -> nn.Module:
        """A new, untrained model: the rewind weights with round ``round_``'s mask."""
        r = self._round(round_, "LotteryTickets.ticket")
        return _apply(copy_model(self._start), r.masks)

    def reinitialised(self, round_: int, *, seed: int = 0,
                      init: Callable[[nn.Module], None] | None = None) -> nn.Module:
        """Control 1: round ``round_``'s mask on freshly drawn weights (same structure).

        The copy's parameters are redrawn by ``init(model)``, by default every submodule's
        own ``reset_parameters()`` (the distribution a fresh model is drawn from), with
        torch's generator seeded by ``seed`` (the global generator's state is restored
        afterwards). Only the weights differ from :meth:`ticket`.
        """
        caller = "LotteryTickets.reinitialised"
        r = self._round(round_, caller)
        seed = check_int(seed, caller, "seed")
        if init is not None and not callable(init):
            raise invalid(TypeError, "init", caller, "None or a callable init(model)",
                          describe(init))
        model = copy_model(self._start)
        strip_masks(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if init is not None:
                init(model)
            else:
                for m in model.modules():
                    if hasattr(m, "reset_parameters") and m._parameters:
                        m.reset_parameters()
        return _apply(model, r.masks)

    def random_mask(self, round_: int, *, seed: int = 0) -> nn.Module:
        """Control 2: the rewind weights with a random mask of the same sparsity per tensor.

        Every tensor keeps exactly as many weights as in round ``round_``'s mask, chosen
        uniformly at random (seeded). Only the mask differs from :meth:`ticket`.
        """
        caller = "LotteryTickets.random_mask"
        r = self._round(round_, caller)
        seed = check_int(seed, caller, "seed")
        generator = torch.Generator().manual_seed(seed)
        masks = {}
        for key, keep in r.masks.items():
            order = torch.randperm(keep.numel(), generator=generator).to(keep.device)
            random_keep = torch.zeros(keep.numel(), dtype=torch.bool, device=keep.device)
            random_keep[order[:int(keep.sum())]] = True
            masks[key] = random_keep.view_as(keep)
        return _apply(copy_model(self._start), masks)

    def as_dicts(self) -> list[dict]:
        """Tidy rows ``{"round", "sparsity", "achieved", "metric"}``."""
        return [{"round": r.round, "sparsity": r.sparsity, "achieved": r.achieved,
                 "metric": r.metric} for r in self.rounds]

    def _table(self) -> Table:
        rows = tuple((str(r.round), f"{r.sparsity:.2%}", f"{r.achieved:.2%}",
                      "" if r.metric is None else f"{r.metric:.4g}") for r in self.rounds)
        title = f"lottery tickets: {len(self.rounds) - 1} rounds of {self.rate:.0%} ({self.scope} scope)"
        return Table(("round", "requested", "achieved", "metric"), rows, frozenset({0, 1, 2, 3}),
                     total=False, title=title)


def lottery_tickets(model: nn.Module, train_fn: Callable[[nn.Module], object], *, rounds: int,
                    rate: float = 0.2, scope: str = "layer", exclude=(),
                    evaluate_fn: Callable[[nn.Module], float] | None = None,
                    keep_models: bool = True) -> LotteryTickets:
    """Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020).

    Round 0 trains a copy of ``model`` with ``train_fn``. Each round ``r = 1 ... rounds``
    then prunes, by magnitude, ``rate`` of the weights that survived round ``r - 1`` (so
    ``round(s_r * n)`` of each layer's ``n`` weights are pruned, ``s_r = 1 - (1 - rate) **
    r``, over all layers together with ``scope="global"``), *rewinds* the survivors to
    their values in ``model`` and trains again with the mask in force. Masks nest: a weight
    pruned in one round stays pruned.

    ``model`` is the rewind point and is never modified: pass a freshly initialised model
    to rewind to initialisation (Frankle & Carbin), or a model trained for ``k`` steps,
    with a ``train_fn`` that trains the remaining steps, to rewind to step ``k`` (Frankle
    et al. 2020).

    Args:
        model: the model at the rewind point (dense, or pruned: existing masks are kept).
        train_fn: ``train_fn(model)`` trains the model it is given in place, the same way in
            every round (seed inside it for reproducible rounds), e.g. ``lambda m:
            pk.training.train(m, loader, epochs=5, progress=False)``.
        rounds: number of pruning rounds, at least 1.
        rate: fraction of the remaining weights pruned per round, in (0, 1); Frankle and
            Carbin use 0.2 for LeNet's fully connected layers.
        scope: ``"layer"`` (each layer loses ``rate`` of its survivors) or ``"global"``.
        exclude: layers to leave dense, as in :func:`prunekit.prune`.
        evaluate_fn: ``evaluate_fn(model) -> float`` after each round's training, recorded
            as :attr:`LotteryRound.metric` (measure on validation data).
        keep_models: keep each round's trained model in the result.

    Returns:
        A :class:`LotteryTickets`: the rounds, and the ticket and its two controls for any
        round.

    Raises:
        TypeError, ValueError: for a bad argument, before any training.

    Examples:
        >>> import torch, prunekit as pk
        >>> train, _ = pk.data.loaders("digits")
        >>> _ = torch.manual_seed(0)
        >>> result = pk.lottery_tickets(
        ...     pk.models.MLP(),
        ...     lambda m: pk.training.train(m, train, progress=False),
        ...     rounds=2, rate=0.5)
        >>> [round(r.achieved, 2) for r in result.rounds]
        [0.0, 0.5, 0.75]
    """
    caller = "lottery_tickets"
    check_model(model, caller)
    if not callable(train_fn):
        raise invalid(TypeError, "train_fn", caller, "a callable train_fn(model)",
                      describe(train_fn))
    rounds = check_int(rounds, caller, "rounds", minimum=1)
    rate = _check_rate(rate, caller)
    check_choice(scope, SCOPES, caller, "scope")
    if evaluate_fn is not None and not callable(evaluate_fn):
        raise invalid(TypeError, "evaluate_fn", caller, "None or a callable evaluate_fn(model)",
                      describe(evaluate_fn))
    if not isinstance(keep_models, bool):
        raise invalid(TypeError, "keep_models", caller, "True or False", describe(keep_models))
    start = copy_model(model)
    # refuse a bad `exclude` (or a model with nothing to prune) before any training
    prune(copy_model(start), 0.0, method="l1", scope=scope, exclude=exclude)

    def finish(round_, current, masks):
        train_fn(current)
        metric = None if evaluate_fn is None else float(evaluate_fn(current))
        return LotteryRound(round_, imp_sparsity(rate, round_), _sparsity(current), masks,
                            metric, current if keep_models else None)

    current = copy_model(start)
    history = [finish(0, current, {})]
    for r in range(1, rounds + 1):
        trained = copy_model(current)  # the round's trained model stays as it was
        prune(trained, imp_sparsity(rate, r), method="l1", scope=scope, exclude=exclude)
        masks = _masks(trained)
        current = _apply(copy_model(start), masks)  # rewind the survivors
        history.append(finish(r, current, masks))
    return LotteryTickets(history, rate, scope, start)

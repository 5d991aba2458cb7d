"""Gradual pruning schedules (Zhu and Gupta's cubic schedule) and a training callback."""

from __future__ import annotations

import numbers

from ._validation import check_choice, check_int, check_sparsity, invalid
from .pruning import prune

__all__ = ["cubic_sparsity", "schedule", "GradualPruning"]

KINDS = ("cubic", "linear", "one-shot")


def cubic_sparsity(step: float, final_sparsity: float, *, start: float, end: float,
                   initial_sparsity: float = 0.0) -> float:
    """Zhu & Gupta's cubic schedule: the sparsity to reach at ``step``.

    ``initial_sparsity`` before ``start``, ``final_sparsity`` from ``end`` on, and the
    cubic ramp in between.

    Examples:
        >>> from prunekit.schedules import cubic_sparsity
        >>> [round(cubic_sparsity(t, 0.9, start=0, end=4), 4) for t in range(5)]
        [0.0, 0.5203, 0.7875, 0.8859, 0.9]
    """
    caller = "cubic_sparsity"
    final_sparsity = check_sparsity(final_sparsity, caller, "final_sparsity")
    initial_sparsity = check_sparsity(initial_sparsity, caller, "initial_sparsity")
    for name, value in (("step", step), ("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise invalid(TypeError, name, caller, "a real number", repr(value))
    if end <= start:
        raise invalid(ValueError, "end", caller, f"greater than 'start' ({start!r})", repr(end))
    if step <= start:
        return initial_sparsity
    if step >= end:
        return final_sparsity
    frac = (step - start) / (end - start)
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - frac) ** 3


def schedule(final_sparsity: float, n_steps: int, *, kind: str = "cubic",
             initial_sparsity: float = 0.0) -> list[float]:
    """The sparsity after each of ``n_steps`` pruning steps (the last one is ``final_sparsity``).

    Args:
        final_sparsity: target reached at the last step.
        n_steps: number of pruning steps (>= 1).
        kind: ``"cubic"`` (Zhu & Gupta), ``"linear"``, or ``"one-shot"`` (everything at
            the last step, for comparison).
        initial_sparsity: sparsity before the first step.

    Examples:
        >>> from prunekit.schedules import schedule
        >>> [round(s, 3) for s in schedule(0.9, 3, kind="linear")]
        [0.3, 0.6, 0.9]
    """
    caller = "schedule"
    final_sparsity = check_sparsity(final_sparsity, caller, "final_sparsity")
    initial_sparsity = check_sparsity(initial_sparsity, caller, "initial_sparsity")
    n_steps = check_int(n_steps, caller, "n_steps", minimum=1)
    check_choice(kind, KINDS, caller, "kind")
    if kind == "one-shot":
        return [initial_sparsity] * (n_steps - 1) + [final_sparsity]
    if kind == "linear":
        return [initial_sparsity + (final_sparsity - initial_sparsity) * (i / n_steps)
                for i in range(1, n_steps + 1)]
    return [cubic_sparsity(i, final_sparsity, start=0, end=n_steps, initial_sparsity=initial_sparsity)
            for i in range(1, n_steps + 1)]


class GradualPruning:
    """A :func:`prunekit.training.train` callback that prunes on a schedule.

    After each epoch in ``[start_epoch, end_epoch]`` the model is pruned to the scheduled
    sparsity (masks are nested, so each step only adds to the pruned set), then training
    continues with the masks in force.

    Args:
        final_sparsity: sparsity reached after ``end_epoch``.
        start_epoch, end_epoch: first and last epoch (counting from 1) after which to prune.
        kind: ``"cubic"`` or ``"linear"`` (see :func:`schedule`).
        **prune_kwargs: passed to :func:`prunekit.prune` (``method``, ``scope``, ``exclude``...).

    Attributes:
        history: ``(epoch, sparsity)`` of every pruning step taken.

    Examples:
        >>> import prunekit as pk
        >>> train, test = pk.data.loaders("digits")
        >>> model = pk.models.MLP()
        >>> gradual = pk.schedules.GradualPruning(0.8, start_epoch=1, end_epoch=3)
        >>> _ = pk.training.train(model, train, epochs=4, callback=gradual,
        ...                       progress=False)
        >>> [round(s, 3) for _, s in gradual.history]
        [0.563, 0.77, 0.8]
    """

    def __init__(self, final_sparsity: float, *, start_epoch: int, end_epoch: int,
                 kind: str = "cubic", **prune_kwargs):
        caller = "GradualPruning"
        self.final_sparsity = check_sparsity(final_sparsity, caller, "final_sparsity")
        self.start_epoch = check_int(start_epoch, caller, "start_epoch", minimum=1)
        self.end_epoch = check_int(end_epoch, caller, "end_epoch", minimum=self.start_epoch)
        self.kind = check_choice(kind, ("cubic", "linear"), caller, "kind")
        self.prune_kwargs = prune_kwargs
        self.steps = schedule(self.final_sparsity, self.end_epoch - self.start_epoch + 1, kind=kind)
        self.history: list[tuple[int, float]] = []

    def sparsity_at(self, epoch: int) -> float | None:
        """Scheduled sparsity after ``epoch``, or ``None`` if no pruning happens then."""
        if self.start_epoch <= epoch <= self.end_epoch:
            return self.steps[epoch - self.start_epoch]
        return None

    def __call__(self, epoch: int, model) -> None:
        target = self.sparsity_at(epoch)
        if target is not None:
            prune(model, target, **self.prune_kwargs)
            self.history.append((epoch, target))

"""Latency: timing forward passes, alone or alternately, and a before/after comparison table."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .._modules import eval_mode
from .._table import Table, TableRepr
from .._validation import argument_error, check_example_input, check_int, check_model, invalid
from .counts import count_macs, count_parameters, model_size_bytes

__all__ = ["measure_latency", "time_calls", "Latency", "compare_models", "ModelComparison"]


@dataclass(frozen=True)
class Latency:
    """Forward-pass latency of a model on one input: what :func:`prunekit.measure_latency` returns.

    Attributes:
        median_ms: median over the timed repeats, in milliseconds (the number to report).
        p10_ms: 10th percentile (the fast end; less affected by other processes).
        p90_ms: 90th percentile (the slow end).
        mean_ms: mean over the repeats.
        batch_size: size of the input's first dimension.
        threads: ``torch.get_num_threads()`` during the measurement (CPU).
        repeats: number of timed forward passes.
        device: the input's device, e.g. ``"cpu"``.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    batch_size: int
    threads: int
    repeats: int
    device: str

    def __str__(self) -> str:
        return (f"{self.median_ms:.3f} ms median (p10 {self.p10_ms:.3f}, p90 {self.p90_ms:.3f}) "
                f"at batch {self.batch_size}, {self.threads} thread(s), {self.device}, "
                f"{self.repeats} repeats")


def _quantile(sorted_values, q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def time_calls(models, inputs: tuple, *, warmup: int, repeats: int, threads=None) -> tuple:
    """Milliseconds of ``repeats`` forward calls of each model, the models timed alternately.

    Each model runs in eval mode under ``torch.inference_mode()`` (modes restored), after
    ``warmup`` untimed calls each; CUDA calls are synchronised. Alternating the models makes
    drift in the machine's speed hit them alike. Returns ``(times per model, threads used)``.
    """
    device = inputs[0].device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    previous = torch.get_num_threads()
    times = [[] for _ in models]
    try:
        if threads is not None and threads != previous:
            torch.set_num_threads(threads)
        used = torch.get_num_threads()
        with contextlib.ExitStack() as stack:
            for m in models:
                stack.enter_context(eval_mode(m))
            stack.enter_context(torch.inference_mode())
            for _ in range(warmup):
                for m in models:
                    m(*inputs)
            sync()
            for _ in range(repeats):
                for m, bucket in zip(models, times):
                    start = time.perf_counter()
                    m(*inputs)
                    sync()
                    bucket.append((time.perf_counter() - start) * 1e3)
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
    return times, used


def measure_latency(model: nn.Module, example_input, *, warmup: int = 10, repeats: int = 50,
                    threads: int | None = None) -> Latency:
    """Time the forward pass: median (and 10th/90th percentile) over repeated calls.

    The model runs in eval mode under ``torch.inference_mode()`` (every module's mode is
    restored afterwards), ``warmup`` untimed calls first (allocations, caches, lazy
    initialisation), then ``repeats`` timed calls; on CUDA each call is synchronised.

    The numbers depend on the machine, the thread count (``threads``), the batch size,
    the memory layout and on whatever else runs at the same time. Compare models in the
    same process, one after the other, with the same settings, and report the median
    with those settings. A masked (not shrunk) model is exactly as slow as the dense one.

    Args:
        model: the model.
        example_input: a tensor (or tuple of tensors) on the model's device; its first
            dimension is reported as the batch size.
        warmup: untimed calls before timing, at least 0.
        repeats: timed calls, at least 1.
        threads: if given, ``torch.set_num_threads(threads)`` for the measurement; the
            previous setting is restored afterwards.

    Returns:
        A :class:`prunekit.Latency` (print it, or read ``median_ms``).

    Raises:
        TypeError, ValueError: for a bad argument; nothing is run then.

    Examples:
        >>> import torch, prunekit as pk
        >>> lat = pk.measure_latency(torch.nn.Linear(64, 64), torch.randn(8, 64),
        ...                          warmup=2, repeats=5, threads=1)
        >>> lat.median_ms > 0, lat.batch_size, lat.threads
        (True, 8, 1)
    """
    caller = "measure_latency"
    check_model(model, caller)
    inputs = check_example_input(example_input, caller)
    check_int(warmup, caller, "warmup", minimum=0)
    check_int(repeats, caller, "repeats", minimum=1)
    if threads is not None:
        check_int(threads, caller, "threads", minimum=1)
    device = inputs[0].device
    (times,), used_threads = time_calls([model], inputs, warmup=warmup, repeats=repeats,
                                        threads=threads)
    ordered = sorted(times)
    batch = inputs[0].shape[0] if inputs[0].dim() else 1
    return Latency(
        median_ms=statistics.median(ordered), p10_ms=_quantile(ordered, 0.1),
        p90_ms=_quantile(ordered, 0.9), mean_ms=statistics.fmean(ordered),
        batch_size=int(batch), threads=used_threads, repeats=repeats, device=str(device),
    )


@dataclass(frozen=True, repr=False)
class ModelComparison(TableRepr):
    """Before/after numbers of two models, from :func:`prunekit.compare_models`. ``print`` it.

    Attributes:
        names: the two column titles.
        params: parameter counts ``(before, after)``.
        nonzero_params: non-zero parameter counts.
        macs: MACs per sample (dense count).
        effective_macs: MACs per sample by non-zero weights only.
        size_bytes: ``state_dict`` bytes on disk (masks applied, see
            :func:`prunekit.model_size_bytes` with ``strip_masks=True``).
        latency: ``{batch_size: (Latency before, Latency after)}``.
    """

    names: tuple
    params: tuple
    nonzero_params: tuple
    macs: tuple
    effective_macs: tuple
    size_bytes: tuple
    latency: dict

    @property
    def mac_ratio(self) -> float:
        """The theoretical speed-up of the dense computation, MACs before / MACs after."""
        return self.macs[0] / self.macs[1] if self.macs[1] else math.inf

    def speedup(self, batch_size: int) -> float:
        """Measured speed-up at ``batch_size``: median latency before / after."""
        before, after = self.latency[batch_size]
        return before.median_ms / after.median_ms

    def as_dicts(self) -> list[dict]:
        """One dictionary per row (e.g. for ``pandas.DataFrame``)."""
        rows = [
            ("parameters", *self.params), ("non-zero parameters", *self.nonzero_params),
            ("MACs per sample", *self.macs), ("MACs by non-zero weights", *self.effective_macs),
            ("bytes on disk", *self.size_bytes),
        ]
        for b, (x, y) in self.latency.items():
            rows.append((f"latency at batch {b} (ms)", x.median_ms, y.median_ms))
        return [{"metric": m, self.names[0]: a, self.names[1]: b,
                 "ratio": (a / b if b else math.inf)} for m, a, b in rows]

    def _table(self) -> Table:
        def fmt(v):
            return f"{v:,.3f}" if isinstance(v, float) else f"{v:,}"

        rows = tuple((r["metric"], fmt(r[self.names[0]]), fmt(r[self.names[1]]), f"{r['ratio']:.2f}x")
                     for r in self.as_dicts())
        header = ("", *self.names, f"{self.names[0]}/{self.names[1]}")
        notes = [f"theoretical speed-up (MAC ratio): {self.mac_ratio:.2f}x"]
        for b, (x, _) in self.latency.items():
            sp = self.speedup(b)
            notes.append(f"measured speed-up at batch {b}: {sp:.2f}x "
                         f"({sp / self.mac_ratio:.0%} of theoretical; {x.threads} thread(s), {x.device})")
        return Table(header, rows, frozenset({1, 2, 3}), total=False, notes=tuple(notes))


def compare_models(before: nn.Module, after: nn.Module, example_inputs, *, warmup: int = 5,
                   repeats: int = 20, threads: int | None = None,
                   names: tuple = ("before", "after")) -> ModelComparison:
    """A printable before/after table: parameters, MACs, bytes on disk, latency, speed-ups.

    Typical use: ``before`` is the masked model, ``after`` is ``pk.shrink(before, x)``.
    MACs are per sample (counted on the smallest batch given, divided by its size).
    Latencies are measured one model after the other at each batch size, in this
    process; they depend on the machine and the thread count (see
    :func:`prunekit.measure_latency`).

    Args:
        before: the reference model.
        after: the model to compare with it.
        example_inputs: a tensor, or a mapping ``{batch_size: tensor}`` to measure
            latency at several batch sizes, e.g. ``{1: x[:1], 32: x}``.
        warmup: untimed calls per measurement.
        repeats: timed calls per measurement.
        threads: thread count for the latency measurements (restored afterwards).
        names: the two column titles.

    Returns:
        A :class:`prunekit.ModelComparison`; ``print`` it, or read ``mac_ratio`` and
        ``speedup(batch_size)``.

    Raises:
        TypeError, ValueError: for a bad argument.

    Examples:
        >>> import torch, prunekit as pk
        >>> big, small = torch.nn.Linear(64, 64), torch.nn.Linear(64, 16)
        >>> inputs = {1: torch.randn(1, 64)}  # {batch_size: example input}
        >>> table = pk.compare_models(big, small, inputs, repeats=3)
        >>> table.params, table.mac_ratio
        ((4160, 1040), 4.0)
    """
    caller = "compare_models"
    check_model(before, caller, "before")
    check_model(after, caller, "after")
    if isinstance(example_inputs, Mapping):
        batches = dict(example_inputs)
        if not batches:
            raise argument_error(ValueError, "example_inputs", caller, "must not be empty.")
        for key, value in batches.items():
            check_example_input(value, caller, f"example_inputs[{key!r}]")
    else:
        x = check_example_input(example_inputs, caller, "example_inputs")[0]
        batches = {int(x.shape[0]) if x.dim() else 1: example_inputs}
    if not (isinstance(names, tuple) and len(names) == 2 and all(isinstance(n, str) for n in names)):
        raise invalid(TypeError, "names", caller, "a tuple of two strings", repr(names))
    smallest = min(batches)
    x_small = batches[smallest]
    per = check_example_input(x_small, caller)[0].shape[0] if check_example_input(x_small, caller)[0].dim() else 1
    models = (before, after)
    macs = tuple(count_macs(m, x_small) // per for m in models)
    eff = tuple(count_macs(m, x_small, nonzero_only=True) // per for m in models)
    latency = {}
    for b, xb in batches.items():
        latency[b] = tuple(measure_latency(m, xb, warmup=warmup, repeats=repeats, threads=threads)
                           for m in models)
    return ModelComparison(
        names=names,
        params=tuple(count_parameters(m) for m in models),
        nonzero_params=tuple(count_parameters(m, nonzero_only=True) for m in models),
        macs=macs, effective_macs=eff,
        size_bytes=tuple(model_size_bytes(m, strip_masks=True) for m in models),
        latency=latency,
    )

"""What pruning buys: parameters, multiply-accumulates, bytes on disk, storage bits, latency.

Blalock et al. (2020) ask for three separate numbers, and this module measures each:

* **Sparsity and compression**: :func:`prunekit.count_parameters` (all, or only the non-zero ones),
  :func:`prunekit.model_size_bytes` (the real size of the saved ``state_dict``) and
  :func:`prunekit.sparse_storage_bits` (what a sparse format with indices would need, at the
  granularity of single weights, kernels or channels).
* **Theoretical speed-up**: :func:`prunekit.count_macs`, the multiply-accumulates of the conv and
  linear layers for one forward pass; with ``nonzero_only=True`` only non-zero weights
  count (ShrinkBench's "effective" FLOPs, a speed-up only sparse kernels could realise).
* **Measured speed-up**: :func:`prunekit.measure_latency` times the forward pass;
  :func:`prunekit.compare_models` puts everything side by side for a model before and after.

Latency depends on the machine, on the thread count, on the batch size and on what else
the machine is doing; report it with those, and compare models only within one run.
"""

from __future__ import annotations

import io
import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ._validation import check_choice, check_example_input, check_int
from .prune import PRUNABLE_TYPES, effective_tensor, pruned_tensor_names

__all__ = [
    "count_parameters",
    "count_macs",
    "model_size_bytes",
    "sparse_storage_bits",
    "measure_latency",
    "compare_models",
    "Latency",
    "ModelComparison",
    "STORAGE_GRANULARITIES",
]

#: the ``granularity`` values :func:`prunekit.sparse_storage_bits` accepts
STORAGE_GRANULARITIES = ("dense", "fine", "kernel", "channel")


def _check_model(model, caller: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter of {caller} must be a torch.nn.Module. "
                        f"Got {type(model).__name__} instead.")
    return model


def _effective_parameters(model: nn.Module):
    """``(module, name, tensor)`` for every parameter, pruned ones as ``orig * mask``."""
    seen = set()
    for module in model.modules():
        pruned = set(pruned_tensor_names(module))
        for key, param in module._parameters.items():
            if param is None or id(param) in seen:
                continue
            seen.add(id(param))
            name = key[: -len("_orig")] if key.endswith("_orig") and key[: -len("_orig")] in pruned else key
            yield module, name, effective_tensor(module, name) if name in pruned else param.detach()


def count_parameters(model: nn.Module, nonzero_only: bool = False) -> int:
    """Number of parameters (weights, biases, BatchNorm affine parameters), or non-zero ones.

    A pruned layer counts once (``weight_orig`` and the ``weight_mask`` buffer are one
    weight), read as ``weight_orig * weight_mask``. Buffers such as BatchNorm running
    statistics are not parameters and are not counted; shared parameters count once.

    Args:
        model: any ``nn.Module``.
        nonzero_only: count only entries that are not zero (what pruning changes).

    Returns:
        The count, an ``int``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Examples:
        >>> import torch, prunekit as pk
        >>> model = torch.nn.Linear(10, 4)                       # 40 weights + 4 biases
        >>> pk.count_parameters(model)
        44
        >>> _ = pk.prune(model, 0.5)                             # 20 weights masked
        >>> pk.count_parameters(model), pk.count_parameters(model, nonzero_only=True)
        (44, 24)
    """
    _check_model(model, "count_parameters")
    total = 0
    for _, _, tensor in _effective_parameters(model):
        total += int(torch.count_nonzero(tensor)) if nonzero_only else tensor.numel()
    return total


class _EvalMode:
    """Put a model in eval mode and restore every module's own flag afterwards."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode
        # Re-run torch's pruning hooks with autograd on: a forward under no_grad or
        # inference_mode leaves ``module.weight`` without a graph until the next forward.
        for m, _ in self.modes:
            for hook in m._forward_pre_hooks.values():
                if isinstance(hook, torch_prune.BasePruningMethod):
                    hook(m, None)
        return False


def count_macs(model: nn.Module, example_input, *, nonzero_only: bool = False) -> int:
    """Multiply-accumulates of the conv and linear layers for one forward pass.

    Runs ``model`` once on ``example_input`` (in eval mode, without gradients; the mode
    of every module is restored) and counts, per ``nn.Conv*`` and ``nn.Linear`` call:

    * convolution: (output elements / output channels) x (weights in the kernel tensor),
      i.e. every output element costs ``in_channels / groups * kH * kW`` MACs (zero
      padding included, as everybody counts); transposed convolutions by input elements;
    * linear: (input elements / ``in_features``) x ``in_features * out_features``.

    Biases, BatchNorm, activations and pooling are not counted. One MAC is two FLOPs:
    ``torch.utils.flop_counter.FlopCounterMode`` reports twice these numbers.

    Args:
        model: the model.
        example_input: a tensor (or tuple of tensors) on the model's device. The count is
            for that whole batch: use a batch of one for MACs per sample.
        nonzero_only: count only multiplications by non-zero weights (ShrinkBench's
            theoretical speed-up of a sparse model: dense MACs times the layer's
            density). Masked weights still cost time in a dense kernel, so this is
            a bound a sparse implementation might reach, not a measurement.

    Returns:
        The number of MACs, an ``int``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``example_input`` is not a tensor.

    Examples:
        >>> import torch, prunekit as pk
        >>> conv = torch.nn.Conv2d(3, 8, 3, padding=1)            # 8*3*3*3 = 216 weights
        >>> pk.count_macs(conv, torch.randn(1, 3, 4, 4))          # 16 positions x 216
        3456
    """
    caller = "count_macs"
    _check_model(model, caller)
    inputs = check_example_input(example_input, caller)
    total = [0]

    def hook(module, args, output):
        w = effective_tensor(module, "weight")
        n_weights = int(torch.count_nonzero(w)) if nonzero_only else w.numel()
        if isinstance(module, nn.Linear):
            positions = args[0].numel() // module.in_features
        elif module.transposed:
            positions = args[0].numel() // module.in_channels
        else:
            positions = output.numel() // module.out_channels
        total[0] += positions * n_weights

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, PRUNABLE_TYPES)]
    try:
        with _EvalMode(model), torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def model_size_bytes(model: nn.Module, *, strip_masks: bool = False) -> int:
    """Bytes of the model's ``state_dict`` saved with ``torch.save``: the real size on disk.

    Masked weights are stored as zeros, so masking never makes this smaller; a pruned
    model even stores ``weight_orig`` *and* ``weight_mask``. Only a physically smaller
    model (:func:`prunekit.shrink`) or a sparse format (:func:`prunekit.sparse_storage_bits`)
    is smaller.

    Args:
        model: the model; not modified.
        strip_masks: measure the ``state_dict`` that :func:`prunekit.remove` would
            leave (``weight = weight_orig * weight_mask``, no mask buffers) instead of
            the one the pruned model has now.

    Returns:
        Size in bytes, an ``int`` (includes ``torch.save``'s small archive overhead).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Examples:
        >>> import torch, prunekit as pk
        >>> model = torch.nn.Linear(100, 100)
        >>> dense = pk.model_size_bytes(model)
        >>> _ = pk.prune(model, 0.9)
        >>> masked = pk.model_size_bytes(model)                  # weight_orig + weight_mask
        >>> stripped = pk.model_size_bytes(model, strip_masks=True)
        >>> masked > 1.9 * dense, abs(stripped - dense) < 100    # zeros cost as much as weights
        (True, True)
    """
    _check_model(model, "model_size_bytes")
    state = model.state_dict()
    if strip_masks:
        stripped = type(state)()
        if hasattr(state, "_metadata"):
            stripped._metadata = state._metadata
        prefix_names = {}
        for path, module in model.named_modules():
            for name in pruned_tensor_names(module):
                prefix_names[f"{path}.{name}" if path else name] = (module, name)
        for key, value in state.items():
            base = key[: -len("_orig")] if key.endswith("_orig") else key[: -len("_mask")]
            if key.endswith(("_orig", "_mask")) and base in prefix_names:
                if key.endswith("_orig"):
                    module, name = prefix_names[base]
                    stripped[base] = effective_tensor(module, name)
                continue
            stripped[key] = value
        state = stripped
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes


def sparse_storage_bits(weight_or_model, granularity: str = "fine", *, value_bits: int = 32,
                        index_bits: int | None = None) -> int:
    """Bits to store weights in a sparse format, at the granularity of the sparsity.

    Mao et al. (2017) argue that coarse sparsity saves index storage: a fine-grained
    sparse weight needs one index per non-zero weight, a kernel-sparse conv weight one
    index per kept ``k x k`` kernel. This function counts, for the ``out x in x k x k``
    weight(s):

    * ``"dense"``: every entry, ``numel * value_bits``, no index;
    * ``"fine"``: every non-zero entry, ``value_bits + index``;
    * ``"kernel"``: every kernel (``weight[o, i]``) with a non-zero entry, stored whole:
      ``k*k*value_bits + index`` (zeros inside a kept kernel are stored);
    * ``"channel"``: every output channel with a non-zero entry, stored whole, plus one
      index each.

    Indices are absolute by default (``ceil(log2(units))`` bits each). With
    ``index_bits=b`` they are relative, as in Deep Compression (Han et al. 2016): each
    stored unit records its distance to the previous one in ``b`` bits, and a gap larger
    than ``2**b`` costs extra filler entries (a stored zero unit with its own index).

    Args:
        weight_or_model: a weight tensor, or a model (then the ``weight`` of every
            ``nn.Linear``/``nn.Conv*`` layer, read as ``weight_orig * weight_mask``;
            biases are not counted). For 2-D weights a "kernel" is one entry.
        granularity: one of ``"dense"``, ``"fine"``, ``"kernel"``, ``"channel"``.
        value_bits: bits per stored value (32 for float32, 8 for an 8-bit codebook).
        index_bits: bits per relative index; ``None`` for absolute indices.

    Returns:
        The number of bits, an ``int`` (divide by 8 for bytes).

    Raises:
        TypeError, ValueError: for a bad argument (unknown granularity, empty tensor, a
            model without ``Linear``/``Conv`` layers, ...).

    Examples:
        >>> import torch, prunekit as pk
        >>> w = torch.ones(4, 4, 3, 3)
        >>> w[:, :2] = 0                      # kernel pruning: half of the 16 kernels
        >>> [pk.sparse_storage_bits(w, g) for g in ("dense", "fine", "kernel")]
        [4608, 2880, 2336]
    """
    caller = "sparse_storage_bits"
    check_choice(granularity, STORAGE_GRANULARITIES, caller, "granularity")
    check_int(value_bits, caller, "value_bits", minimum=1)
    if index_bits is not None:
        check_int(index_bits, caller, "index_bits", minimum=1)
    if isinstance(weight_or_model, nn.Module):
        weights = [effective_tensor(m, "weight") for m in weight_or_model.modules()
                   if isinstance(m, PRUNABLE_TYPES)]
        if not weights:
            raise ValueError(f"The 'weight_or_model' parameter of {caller} has no nn.Linear "
                             "or nn.Conv* layers.")
    elif isinstance(weight_or_model, torch.Tensor):
        if weight_or_model.numel() == 0:
            raise ValueError(f"The 'weight_or_model' parameter of {caller} must be a non-empty "
                             f"tensor. Got shape {tuple(weight_or_model.shape)} instead.")
        weights = [weight_or_model]
    else:
        raise TypeError(f"The 'weight_or_model' parameter of {caller} must be a torch.Tensor or "
                        f"a torch.nn.Module. Got {type(weight_or_model).__name__} instead.")
    return sum(_storage_bits(w.detach(), granularity, value_bits, index_bits) for w in weights)


def _storage_bits(w: torch.Tensor, granularity: str, value_bits: int, index_bits) -> int:
    if granularity == "dense":
        return w.numel() * value_bits
    if granularity == "fine" or w.dim() < 2:
        units = w.reshape(-1, 1)
    elif granularity == "kernel":
        units = w.reshape(w.shape[0] * w.shape[1], -1) if w.dim() > 2 else w.reshape(-1, 1)
    else:
        units = w.reshape(w.shape[0], -1)
    n_units, unit_size = units.shape
    kept = torch.nonzero((units != 0).any(dim=1)).squeeze(1)
    n_kept = kept.numel()
    if index_bits is None:
        index = max(1, math.ceil(math.log2(n_units))) if n_units > 1 else 1
        return n_kept * (unit_size * value_bits + index)
    gaps = torch.diff(kept, prepend=kept.new_tensor([-1]))
    fillers = int((torch.div(gaps - 1, 2 ** index_bits, rounding_mode="floor")).sum()) if n_kept else 0
    return (n_kept + fillers) * (unit_size * value_bits + index_bits)


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
    _check_model(model, caller)
    inputs = check_example_input(example_input, caller)
    check_int(warmup, caller, "warmup", minimum=0)
    check_int(repeats, caller, "repeats", minimum=1)
    if threads is not None:
        check_int(threads, caller, "threads", minimum=1)
    device = inputs[0].device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    previous = torch.get_num_threads()
    times = []
    try:
        if threads is not None and threads != previous:
            torch.set_num_threads(threads)
        used_threads = torch.get_num_threads()
        with _EvalMode(model), torch.inference_mode():
            for _ in range(warmup):
                model(*inputs)
            sync()
            for _ in range(repeats):
                start = time.perf_counter()
                model(*inputs)
                sync()
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
    ordered = sorted(times)
    batch = inputs[0].shape[0] if inputs[0].dim() else 1
    return Latency(
        median_ms=statistics.median(ordered), p10_ms=_quantile(ordered, 0.1),
        p90_ms=_quantile(ordered, 0.9), mean_ms=statistics.fmean(ordered),
        batch_size=int(batch), threads=used_threads, repeats=repeats, device=str(device),
    )


@dataclass(frozen=True)
class ModelComparison:
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

    def __str__(self) -> str:
        def fmt(v):
            return f"{v:,.3f}" if isinstance(v, float) else f"{v:,}"

        rows = [(r["metric"], fmt(r[self.names[0]]), fmt(r[self.names[1]]), f"{r['ratio']:.2f}x")
                for r in self.as_dicts()]
        header = ("", *self.names, f"{self.names[0]}/{self.names[1]}")
        widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(4)]
        line = lambda cells: "  ".join(  # noqa: E731
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        out = [line(header), "-" * len(line(header)), *(line(r) for r in rows)]
        out.append("-" * len(line(header)))
        out.append(f"theoretical speed-up (MAC ratio): {self.mac_ratio:.2f}x")
        for b, (x, _) in self.latency.items():
            sp = self.speedup(b)
            out.append(f"measured speed-up at batch {b}: {sp:.2f}x "
                       f"({sp / self.mac_ratio:.0%} of theoretical; {x.threads} thread(s), {x.device})")
        return "\n".join(out)

    __repr__ = __str__


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
        >>> table = pk.compare_models(big, small, {1: torch.randn(1, 64)}, repeats=3)
        >>> table.params, table.mac_ratio
        ((4160, 1040), 4.0)
    """
    caller = "compare_models"
    _check_model(before, caller)
    _check_model(after, caller)
    if isinstance(example_inputs, Mapping):
        batches = dict(example_inputs)
        if not batches:
            raise ValueError(f"The 'example_inputs' parameter of {caller} must not be empty.")
        for key, value in batches.items():
            check_example_input(value, caller, f"example_inputs[{key!r}]")
    else:
        x = check_example_input(example_inputs, caller, "example_inputs")[0]
        batches = {int(x.shape[0]) if x.dim() else 1: example_inputs}
    if not (isinstance(names, tuple) and len(names) == 2 and all(isinstance(n, str) for n in names)):
        raise TypeError(f"The 'names' parameter of {caller} must be a tuple of two strings. "
                        f"Got {names!r} instead.")
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

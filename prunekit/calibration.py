"""Calibration: run batches through a model and collect each layer's input statistics.

One-shot methods (Wanda, SparseGPT) score a layer by the inputs it sees. This module runs
calibration batches through the model with hooks on the layers to prune and accumulates,
per layer, what the method needs (column norms or the ``X Xᵀ`` Gram matrix), never the
activations themselves. With ``sequential=True`` layers are pruned stage by stage in the
order the model calls them, and every stage's statistics come from inputs that passed
through the already-pruned earlier layers, as both papers do; a stage is a run of layers
fed the same tensor (a transformer's Q, K and V projections), so they are pruned together.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._modules import eval_mode, model_device
from ._validation import describe, invalid
from .reparam import current_keep, effective_tensor
from .targets import Target

__all__ = ["InputStats", "check_calibration", "calibration_support", "prune_calibrated", "Calibrated"]


# --------------------------------------------------------------------------------------
# Calibration statistics
# --------------------------------------------------------------------------------------


class InputStats:
    """Running statistics of one layer's inputs, for Wanda and SparseGPT.

    Every ``update`` adds a batch of inputs ``(..., in)``: all leading dims are rows (tokens).
    Kept per input column: the sum of squares (Wanda's ``||X_j||^2``) and, with
    ``hessian=True``, the Gram matrix ``sum x x^T`` (SparseGPT's ``H = 2/n sum x x^T``).
    Stored in ``dtype`` on the first batch's device. For a conv layer pass its unfolded
    input, ``F.unfold(x, ...).transpose(1, 2)``.

    Args:
        hessian: also accumulate the ``(in, in)`` Gram matrix (one matmul per batch).
        dtype: accumulation dtype, float32 (default) or float64.

    Attributes:
        n_rows: rows (tokens) seen so far.
        sum_sq: ``(in,)`` sum of squares per column, or None before the first batch.
        gram: ``(in, in)`` sum of ``x x^T``, or None.

    Examples:
        >>> import torch
        >>> from prunekit.oneshot import InputStats
        >>> layer = torch.nn.Linear(3, 2)
        >>> stats = InputStats(hessian=True)
        >>> handle = layer.register_forward_pre_hook(
        ...     lambda mod, args: stats.update(args[0]))
        >>> _ = layer(torch.tensor([[1., 0., 2.], [3., 0., 4.]]))
        >>> handle.remove()
        >>> stats.n_rows, stats.norms()
        (2, tensor([3.1623, 0.0000, 4.4721]))
        >>> stats.hessian()
        tensor([[10.,  0., 14.],
                [ 0.,  0.,  0.],
                [14.,  0., 20.]])
    """

    def __init__(self, *, hessian: bool = False, dtype: torch.dtype = torch.float32):
        if not isinstance(hessian, bool):
            raise invalid(TypeError, "hessian", "InputStats", "True or False", repr(hessian))
        if dtype not in (torch.float32, torch.float64):
            raise invalid(TypeError, "dtype", "InputStats", "torch.float32 or torch.float64", repr(dtype))
        self.with_hessian = hessian
        self.dtype = dtype
        self.n_rows = 0
        self.sum_sq: torch.Tensor | None = None
        self.gram: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        """Add a batch of layer inputs ``(..., in)``. Bad input leaves the state as it was.

        Returns None, so it can be a forward pre-hook as it is (a hook's non-None return
        value would replace the layer's input).
        """
        caller = "InputStats.update"
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() == 0:
            raise invalid(TypeError, "x", caller, "a floating-point tensor shaped (..., in)", describe(x))
        if self.sum_sq is not None and x.shape[-1] != self.sum_sq.numel():
            raise invalid(ValueError, "x", caller, f"shaped (..., {self.sum_sq.numel()}) like the earlier "
                          "batches", describe(x))
        device = x.device if self.sum_sq is None else self.sum_sq.device
        with torch.no_grad():
            rows = x.detach().reshape(-1, x.shape[-1]).to(device=device, dtype=self.dtype)
            sq = rows.square().sum(0)
            if not bool(torch.isfinite(sq).all()):  # catches NaN/inf inputs without a separate pass
                raise invalid(ValueError, "x", caller, "finite (its squares too)", describe(x))
            if self.sum_sq is None:
                self.sum_sq = sq
                self.gram = rows.T @ rows if self.with_hessian else None
            else:
                self.sum_sq += sq
                if self.gram is not None:
                    self.gram.addmm_(rows.T, rows)  # in place: no second (in, in) matrix per batch
        self.n_rows += rows.shape[0]

    def _need(self, what: str) -> None:
        if self.n_rows == 0:
            raise RuntimeError(f"InputStats.{what}() needs at least one update() with a non-empty batch first.")

    def norms(self) -> torch.Tensor:
        """``||X_j||_2`` per input column over all rows seen (Wanda's ``input_norms``)."""
        self._need("norms")
        return self.sum_sq.sqrt()

    def hessian(self) -> torch.Tensor:
        """SparseGPT's layer Hessian ``H = 2/n sum x x^T`` (a new tensor; needs ``hessian=True``)."""
        self._need_gram("hessian")
        return self.gram * (2.0 / self.n_rows)

    def _need_gram(self, what: str) -> None:
        self._need(what)
        if self.gram is None:
            raise RuntimeError(f"InputStats.{what}() needs InputStats(hessian=True): the Gram matrix "
                               "was not accumulated.")

    def _take_hessian(self) -> torch.Tensor:
        """:meth:`hessian` without a copy: the Gram matrix is scaled in place and handed over.

        For :func:`prunekit.prune`, which owns these statistics and needs them only once: it
        saves an ``(in, in)`` matrix per layer. The statistics hold no Gram matrix afterwards.
        """
        self._need_gram("hessian")
        h = self.gram.mul_(2.0 / self.n_rows)
        self.gram, self.with_hessian = None, False
        return h



def check_calibration(calibration, caller: str) -> list:
    """The batches as a list (a generator is read once); each a tensor, tuple/list or mapping.

    A tensor is passed as ``model(batch)``, a tuple or list (what a DataLoader yields) as
    ``model(batch[0])``, a mapping (a tokenizer's output) as ``model(**batch)``.
    """
    if calibration is None:
        raise invalid(ValueError, "calibration", caller,
                      "an iterable of input batches for a calibration-based method (e.g. a DataLoader "
                      "or a list of token-id tensors)", "None")
    if isinstance(calibration, (torch.Tensor, str, bytes)) or not isinstance(calibration, Iterable):
        raise invalid(TypeError, "calibration", caller,
                      "an iterable of batches (a list of tensors, a DataLoader)", describe(calibration))
    batches = list(calibration)
    if not batches:
        raise invalid(ValueError, "calibration", caller, "a non-empty iterable of batches", "no batches")
    for i, b in enumerate(batches):
        if isinstance(b, (tuple, list)):
            b = b[0] if b else None
        if isinstance(b, Mapping):
            continue
        if not isinstance(b, torch.Tensor):
            raise invalid(TypeError, f"calibration[{i}]", caller,
                          "a tensor, a tuple/list whose first element is the model input, or a mapping "
                          "of keyword inputs", describe(b))
    return batches


def _call(model: nn.Module, batch, device) -> None:
    def to(x):
        return x.to(device) if isinstance(x, torch.Tensor) else x

    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if isinstance(batch, Mapping):
        model(**{k: to(v) for k, v in batch.items()})
    else:
        model(to(batch))


# --------------------------------------------------------------------------------------
# Which inputs a tensor multiplies, and how to read them
# --------------------------------------------------------------------------------------


def _rows_dim(t: Target) -> int:
    return t.layout.out_dim


def calibration_support(t: Target) -> str | None:
    """``None`` if the input statistics of ``t`` can be collected, else why not (for messages)."""
    m = t.module
    if isinstance(m, nn.RNNBase):
        return "RNN weights see hidden states that only exist inside the recurrence"
    if isinstance(m, nn.MultiheadAttention):
        return None
    if isinstance(m, nn.modules.conv._ConvNd):
        if m.transposed:
            return "transposed convolutions are not supported"
        if m.groups != 1:
            return f"grouped convolutions (groups={m.groups}) are not supported"
        if m.padding_mode != "zeros" or isinstance(m.padding, str) or len(m.kernel_size) != 2:
            return "only 2-D convolutions with numeric zero padding are supported"
        return None
    if t.tensor != "weight" or t.layout.tensors != ("weight",):
        return f"{type(m).__name__}.{t.tensor} has no input statistics prunekit can collect"
    if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D":
        return None
    return f"{type(m).__name__} is not a linear layer prunekit can collect inputs for"


def _mha_inputs(module: nn.MultiheadAttention, args, kwargs):
    query = args[0] if args else kwargs["query"]
    key = args[1] if len(args) > 1 else kwargs.get("key", query)
    value = args[2] if len(args) > 2 else kwargs.get("value", key)
    return query, key, value


class _IdentityProjection(nn.Linear):
    """Stands in for an MHA's ``out_proj`` so that the attention returns its pre-projection values."""

    def __init__(self, like: nn.Linear):
        super().__init__(like.in_features, like.out_features, bias=True,
                         device=like.weight.device, dtype=like.weight.dtype)
        with torch.no_grad():
            self.weight.copy_(torch.eye(like.in_features, dtype=like.weight.dtype))
            self.bias.zero_()


def _attention_values(mha: nn.MultiheadAttention, args, kwargs) -> torch.Tensor:
    """What ``mha`` multiplies by ``out_proj.weight``: its output with an identity projection."""
    saved = mha.out_proj
    mha._modules["out_proj"] = _IdentityProjection(saved)
    try:
        kw = {**kwargs, "need_weights": False}
        return mha.forward(*args, **kw)[0]
    finally:
        mha._modules["out_proj"] = saved


@dataclass
class _Slot:
    """Statistics of one target (or one row block of it: an MHA's Q, K or V rows)."""

    target: Target
    rows: slice | None
    stats: InputStats


class _Recorder:
    """Forward hooks on the targets: feed the ``collect`` targets' inputs into their statistics.

    ``stop_after``: names of a stage; a pass ends (``_Stop``) as soon as every stage target
    has read its input, so neither those layers nor the rest of the model are computed (no
    logits, the largest activation of a language model).
    """

    def __init__(self, watched: list[Target], hessian: bool, owners: dict, collect=None,
                 stop_after=None, record_order: bool = False):
        self.watched, self.hessian, self.owners = watched, hessian, owners
        self.collect = collect          # names whose statistics are kept (None: all)
        self.stop_after = stop_after
        self.record_order = record_order
        self.slots: dict = {}
        self.order: list = []           # [(target, same input as the target before it)]
        self.calls: dict = {}           # name -> calls in the pass
        self.fired: set = set()
        self._last_input = None         # held so that its id cannot be reused meanwhile

    def feed(self, t: Target, x: torch.Tensor, part=None, rows=None, source=None) -> None:
        """Add ``x`` (``(..., features)``) to ``t``'s statistics; ``source``: the tensor the layer
        was called with, if ``x`` was derived from it (a conv's unfolded patches)."""
        source = x if source is None else source
        if self.collect is None or t.name in self.collect:
            key = (t.name, part)
            if key not in self.slots:
                self.slots[key] = _Slot(t, rows, InputStats(hessian=self.hessian))
            self.slots[key].stats.update(x)
        if self.record_order and part in (None, 0) and t.name not in self.calls:
            self.order.append((t, source is self._last_input))
        if part in (None, 0):
            self._last_input = source

    def fire(self, name: str) -> None:
        self.fired.add(name)
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.stop_after is not None and self.stop_after <= self.fired:
            raise _Stop  # the stage has read its inputs: nothing after it is computed

    def new_batch(self) -> None:
        self.fired = set()
        self._last_input = None

    @contextlib.contextmanager
    def hooks(self):
        handles = []
        try:
            for t in self.watched:
                handles += self._hook(t)
            yield self
        finally:
            for h in handles:
                h.remove()
            self._last_input = None

    def _hook(self, t: Target) -> list:
        m = t.module
        owner = self.owners.get(id(m))
        if owner is not None:  # an MHA's out_proj: MHA uses its weight without calling it
            def post(mod, args, kwargs, output, t=t):
                if self.collect is None or t.name in self.collect or self.record_order:
                    self.feed(t, _attention_values(mod, args, kwargs))
                self.fire(t.name)

            return [owner.register_forward_hook(post, with_kwargs=True)]
        if isinstance(m, nn.MultiheadAttention):
            def pre_mha(mod, args, kwargs, t=t):
                q, k, v = _mha_inputs(mod, args, kwargs)
                e = mod.embed_dim
                if not mod._qkv_same_embed_dim:
                    self.feed(t, {"q_proj_weight": q, "k_proj_weight": k, "v_proj_weight": v}[t.tensor])
                elif q is k and k is v:
                    self.feed(t, q)
                else:  # cross-attention: the Q, K and V rows see different inputs
                    for i, x in enumerate((q, k, v)):
                        self.feed(t, x, part=i, rows=slice(i * e, (i + 1) * e))
                self.fire(t.name)

            return [m.register_forward_pre_hook(pre_mha, with_kwargs=True)]
        if isinstance(m, nn.modules.conv._ConvNd):
            def pre_conv(mod, args, t=t):
                x = args[0] if args[0].dim() == 4 else args[0].unsqueeze(0)
                cols = F.unfold(x, mod.kernel_size, mod.dilation, mod.padding, mod.stride)
                self.feed(t, cols.transpose(1, 2), source=args[0])
                self.fire(t.name)

            return [m.register_forward_pre_hook(pre_conv)]

        def pre_linear(mod, args, t=t):
            self.feed(t, args[0])
            self.fire(t.name)

        return [m.register_forward_pre_hook(pre_linear)]


class _Stop(Exception):
    """Raised by a hook to end a calibration forward pass early."""


def _owners(model: nn.Module) -> dict:
    """``id(out_proj) -> its MultiheadAttention`` for every MHA in ``model``."""
    return {id(m.out_proj): m for m in model.modules() if isinstance(m, nn.MultiheadAttention)}


def _run(model: nn.Module, rec: _Recorder, batches: list, device, caller: str, first: bool = False) -> None:
    with rec.hooks():
        for i, b in enumerate(batches):
            rec.new_batch()
            try:
                _call(model, b, device)
            except _Stop:
                continue
            except Exception as err:  # noqa: BLE001 - re-raised with the argument named
                if not first:
                    raise
                shown = b[0] if isinstance(b, (tuple, list)) and b else b
                raise invalid(ValueError, "calibration", caller, "batches the model can run",
                              f"batch {i} ({describe(shown)}), on which the model raised "
                              f"{type(err).__name__}: {err}") from err


@dataclass
class Calibrated:
    """What a calibration-based method gets for one target: its statistics, per row block.

    ``parts`` is ``[(rows, InputStats)]``: ``rows`` is ``None`` (every row sees the same
    inputs) or a ``slice`` of the rows-first tensor (an MHA's Q, K or V rows in
    cross-attention).
    """

    target: Target
    parts: list


def _stages(order: list) -> list[list[Target]]:
    """Consecutive targets fed the same input tensor form one stage (Q, K, V; gate and up)."""
    stages = []
    for t, same_as_previous in order:
        if stages and same_as_previous:
            stages[-1].append(t)
        else:
            stages.append([t])
    return stages


@contextlib.contextmanager
def _modules_called():
    """Turn off torch's fused Transformer fast path, which skips the modules' forward (and hooks)."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def prune_calibrated(model: nn.Module, layers: list[Target], batches: list, apply, *, hessian: bool,
                     sequential: bool, caller: str = "prune") -> None:
    """Collect statistics and call ``apply(Calibrated)`` for every target, stage by stage.

    ``apply`` computes and attaches the target's mask (and any weight update). The first pass
    runs every batch through the unchanged model: it checks that the batches run, finds the
    call order and, with ``sequential=False``, collects every target's statistics at once.
    A target the batches never reach raises before anything changes. With
    ``sequential=True`` each stage then gets its own pass, which ends as soon as the stage's
    last target has read its input (unless a target runs twice per forward pass).
    """
    device = model_device(model)
    owners = _owners(model)
    with eval_mode(model), torch.no_grad(), _modules_called():
        first = _Recorder(layers, hessian, owners, collect=None if not sequential else set(),
                          record_order=True)
        _run(model, first, batches, device, caller, first=True)
        reached = {t.name for t, _ in first.order}
        missing = [t.name for t in layers if t.name not in reached]
        if missing:
            raise invalid(ValueError, "calibration", caller,
                          "batches whose forward pass reaches every layer to prune",
                          f"batches that never reach {missing}")
        stages = _stages(first.order)
        if not sequential:
            for stage in stages:
                for t in stage:
                    apply(_calibrated(first, t))
            return
        repeated = any(c > len(batches) for c in first.calls.values())
        for stage in stages:
            names = {t.name for t in stage}
            rec = _Recorder(layers, hessian, owners, collect=names,
                            stop_after=None if repeated else names)
            _run(model, rec, batches, device, caller)
            for t in stage:
                apply(_calibrated(rec, t))


def _calibrated(rec: _Recorder, t: Target) -> Calibrated:
    parts = [(s.rows, s.stats) for (name, _), s in rec.slots.items() if name == t.name]
    parts.sort(key=lambda p: -1 if p[0] is None else p[0].start)
    return Calibrated(t, parts)


def rows_of(t: Target, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` with output channels first: ``(out, in, ...)`` (HF Conv1D is stored ``(in, out)``)."""
    return tensor.movedim(_rows_dim(t), 0)


def from_rows(t: Target, rows: torch.Tensor) -> torch.Tensor:
    return rows.movedim(0, _rows_dim(t))


def effective_rows(t: Target) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The tensor's current (masked) values and keep-mask, rows first."""
    w = effective_tensor(t.module, t.tensor)
    keep = current_keep(t.module, t.tensor)
    return rows_of(t, w), (None if keep is None else rows_of(t, keep.to(torch.bool)))

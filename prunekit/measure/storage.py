"""Storage: bits of sparse formats (absolute or relative indices) and Deep Compression's accounting."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from .._table import Table, TableRepr
from .._validation import argument_error, check_choice, check_int, check_model
from ..reparam import effective_tensor
from ..sharing import shared_weights_of
from ..targets import targets, weight_layers

__all__ = [
    "sparse_storage_bits",
    "fillers",
    "default_index_bits",
    "STORAGE_GRANULARITIES",
    "compression_report",
    "CompressionReport",
    "LayerCompression",
]

#: the ``granularity`` values :func:`prunekit.sparse_storage_bits` accepts
STORAGE_GRANULARITIES = ("dense", "fine", "kernel", "channel")


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
        >>> w[:, :2] = 0  # kernel pruning: half of the 16 kernels
        >>> [pk.sparse_storage_bits(w, g) for g in ("dense", "fine", "kernel")]
        [4608, 2880, 2336]
    """
    caller = "sparse_storage_bits"
    check_choice(granularity, STORAGE_GRANULARITIES, caller, "granularity")
    check_int(value_bits, caller, "value_bits", minimum=1)
    if index_bits is not None:
        check_int(index_bits, caller, "index_bits", minimum=1)
    if isinstance(weight_or_model, nn.Module):
        weights = [effective_tensor(t.module, t.tensor) for t in targets(weight_or_model)]
        if not weights:
            raise argument_error(ValueError, "weight_or_model", caller, "has no nn.Linear "
                             "or nn.Conv* layers.")
    elif isinstance(weight_or_model, torch.Tensor):
        if weight_or_model.numel() == 0:
            raise argument_error(ValueError, "weight_or_model", caller, f"must be a non-empty "
                             f"tensor. Got shape {tuple(weight_or_model.shape)} instead.")
        weights = [weight_or_model]
    else:
        raise argument_error(TypeError, "weight_or_model", caller, f"must be a torch.Tensor or "
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
    return (n_kept + fillers(kept, index_bits)) * (unit_size * value_bits + index_bits)


def fillers(positions: torch.Tensor, index_bits: int) -> int:
    """Filler entries relative indices need: one per ``2**index_bits`` skipped units in a row.

    ``positions`` are the ascending flat positions of the stored units. A ``b``-bit relative
    index records the number of units skipped since the previous stored one (at most
    ``2**b - 1``); a longer gap costs a stored zero unit with its own index for every
    ``2**b`` skipped (Deep Compression, figure 2).
    """
    if positions.numel() == 0:
        return 0
    gaps = torch.diff(positions, prepend=positions.new_tensor([-1])) - 1  # units skipped
    return int(torch.sum(gaps >> index_bits))


def default_index_bits(module: nn.Module) -> int:
    """The book's storage convention: bits of one *relative* index for ``module``'s weight.

    Deep Compression's (Han et al. 2016) choice, used by :func:`prunekit.compression_report`
    (chapter 3) and :func:`prunekit.compare` (chapter 5): 5 bits for a fully connected
    layer, 8 bits for a convolution (and any other weight). See :ref:`storage-convention`.
    """
    return 5 if isinstance(module, nn.Linear) else 8


@dataclass(frozen=True)
class LayerCompression:
    """One row of a :class:`~prunekit.CompressionReport`: how one layer's weight is stored.

    Attributes:
        layer: the layer's name in ``model.named_modules()``.
        kind: the layer's class name.
        params: number of weights.
        nonzeros: number of non-zero weights.
        codebook_size: number of shared values (0 if the layer does not share weights).
        value_bits: bits per stored weight: ``ceil(log2(codebook_size))`` for a shared
            layer, 32 (a float32) otherwise.
        index_bits: bits of a relative index (sparse format).
        fillers: filler zeros the relative indices need (gaps longer than the index
            range).
        format: ``"sparse"`` or ``"dense"``, whichever is smaller.
        dense_bits: the float32 baseline, ``32 * params``.
        compressed_bits: the bits in the chosen format, codebook included.
    """

    layer: str
    kind: str
    params: int
    nonzeros: int
    codebook_size: int
    value_bits: int
    index_bits: int
    fillers: int
    format: str
    dense_bits: int
    compressed_bits: int

    @property
    def ratio(self) -> float:
        """The compression ratio, float32 size divided by compressed size."""
        return self.dense_bits / self.compressed_bits if self.compressed_bits else math.inf


@dataclass(frozen=True, repr=False)
class CompressionReport(TableRepr):
    """Per-layer storage and the model total, Deep Compression's way. ``print`` it.

    Attributes:
        rows: one :class:`~prunekit.LayerCompression` per ``Linear``/``Conv`` layer, in model order.
        other_params: the model's remaining parameters (biases, BatchNorm, ...), counted
            as dense float32 in both sizes.
    """

    rows: tuple
    other_params: int

    @property
    def dense_bytes(self) -> float:
        """Size of all parameters as dense float32, in bytes."""
        return (sum(r.dense_bits for r in self.rows) + 32 * self.other_params) / 8

    @property
    def compressed_bytes(self) -> float:
        """Compressed size of all parameters, in bytes (the other parameters as float32)."""
        return (sum(r.compressed_bits for r in self.rows) + 32 * self.other_params) / 8

    @property
    def ratio(self) -> float:
        """The compression ratio of the whole model, ``dense_bytes / compressed_bytes``."""
        return self.dense_bytes / self.compressed_bytes

    def as_dicts(self) -> list[dict]:
        """Rows as dictionaries (e.g. for ``pandas.DataFrame``), the total last."""
        out = [
            {"layer": r.layer, "type": r.kind, "params": r.params, "nonzeros": r.nonzeros,
             "codebook": r.codebook_size, "value_bits": r.value_bits, "index_bits": r.index_bits,
             "fillers": r.fillers, "format": r.format, "dense_bytes": r.dense_bits / 8,
             "compressed_bytes": r.compressed_bits / 8, "ratio": r.ratio}
            for r in self.rows
        ]
        n_params = sum(r.params for r in self.rows) + self.other_params
        out.append({"layer": "total", "type": "", "params": n_params,
                    "nonzeros": None, "codebook": None, "value_bits": None, "index_bits": None,
                    "fillers": None, "format": "", "dense_bytes": self.dense_bytes,
                    "compressed_bytes": self.compressed_bytes, "ratio": self.ratio})
        return out

    def _table(self) -> Table:
        header = ("layer", "type", "params", "nonzeros", "codebook", "bits", "index", "format",
                  "dense", "compressed", "ratio")
        lines = [
            (r.layer, r.kind, f"{r.params:,}", f"{r.nonzeros:,}", str(r.codebook_size or "-"),
             str(r.value_bits), str(r.index_bits) if r.format == "sparse" else "-", r.format,
             _fmt_bytes(r.dense_bits / 8), _fmt_bytes(r.compressed_bits / 8), f"{r.ratio:.1f}x")
            for r in self.rows
        ]
        if self.other_params:
            b = _fmt_bytes(4 * self.other_params)
            lines.append(("(other)", "", f"{self.other_params:,}", "", "", "32", "-", "dense", b, b, "1.0x"))
        lines.append(("total", "", f"{sum(r.params for r in self.rows) + self.other_params:,}", "", "",
                      "", "", "", _fmt_bytes(self.dense_bytes), _fmt_bytes(self.compressed_bytes),
                      f"{self.ratio:.1f}x"))
        return Table(header, tuple(lines), frozenset(range(len(header))) - {0, 1, 7})


def _fmt_bytes(b: float) -> str:
    if b >= 1 << 20:
        return f"{b / (1 << 20):.2f} MiB"
    if b >= 1 << 10:
        return f"{b / (1 << 10):.1f} KiB"
    return f"{b:.0f} B"


def _layer_storage(weight: torch.Tensor, codebook_size: int, index_bits: int):
    """``(value_bits, fillers, sparse_bits, dense_bits_in_codes)`` of one weight tensor."""
    flat = weight.detach().reshape(-1)
    n = flat.numel()
    value_bits = max(1, math.ceil(math.log2(codebook_size))) if codebook_size else 32
    codebook_bits = 32 * codebook_size
    pos = torch.nonzero(flat).squeeze(1)
    n_fill = fillers(pos, index_bits)
    sparse = (pos.numel() + n_fill) * (index_bits + value_bits) + codebook_bits
    dense = n * value_bits + codebook_bits
    return value_bits, n_fill, sparse, dense


def compression_report(model: nn.Module, *, index_bits: int | None = None) -> CompressionReport:
    """Storage of a pruned and/or weight-shared model, counted as in Deep Compression.

    For each ``nn.Linear`` and ``nn.Conv*`` layer the weight is stored either

    * **sparse**: one entry per non-zero weight, each a ``value_bits`` code plus an
      ``index_bits`` *relative* index (the number of zeros skipped since the previous
      entry, flattened row-major); a run of zeros longer than the index can express
      (``2**index_bits - 1``) costs a *filler* entry (a stored zero) per ``2**index_bits``
      zeros, as in the paper's figure 2; or
    * **dense**: a code for every weight, no indices,

    whichever is smaller, plus the codebook (32 bits per shared value). ``value_bits`` is
    ``ceil(log2(codebook size))`` for a layer with :func:`~prunekit.share_weights`, 32 (float32)
    otherwise. Everything else (biases, BatchNorm) counts as dense float32. Huffman coding,
    Deep Compression's third stage, is not applied. For ``n`` weights shared by ``k``
    values without pruning this gives the paper's ratio
    ``r = 32 n / (n log2(k) + 32 k)``.

    Args:
        model: any ``nn.Module`` (pruned, shared, both or neither). Not modified.
        index_bits: bits per relative index. Default: the paper's, 8 for conv layers and
            5 for fully connected ones.

    Returns:
        A :class:`~prunekit.CompressionReport`: ``print`` it, or read ``.ratio``,
        ``.compressed_bytes``, ``.rows``.

    Raises:
        TypeError, ValueError: for a bad argument.

    Examples:
        >>> import torch, prunekit as pk
        >>> layer = torch.nn.Linear(4, 4, bias=False)
        >>> _ = pk.share_weights(layer, bits=2)  # 16 weights, 4 shared values
        >>> report = pk.compression_report(layer)
        >>> # 16 * 2 index bits + 4 * 32 codebook bits
        >>> report.rows[0].compressed_bits
        160
        >>> round(report.ratio, 2)  # the paper's example: 3.2
        3.2
    """
    caller = "compression_report"
    check_model(model, caller)
    if index_bits is not None:
        check_int(index_bits, caller, "index_bits", minimum=1)
    rows, counted = [], set()
    for name, module in weight_layers(model):
        w = effective_tensor(module, "weight")
        shared = shared_weights_of(module)
        k = shared.codebook.numel() if shared is not None else 0
        ib = index_bits if index_bits is not None else default_index_bits(module)
        value_bits, n_fill, sparse, dense = _layer_storage(w, k, ib)
        fmt = "sparse" if sparse < dense else "dense"
        nnz = int(torch.count_nonzero(w))
        kind = type(module).__name__
        if parametrize.is_parametrized(module):  # torch renames the class "Parametrized..."
            kind = type(module).__bases__[0].__name__
        rows.append(LayerCompression(
            name or "(model)", kind, w.numel(), nnz, k, value_bits, ib,
            n_fill if fmt == "sparse" else 0, fmt, 32 * w.numel(), min(sparse, dense),
        ))
        if shared is not None:
            counted.add(id(shared.codebook))
            counted.add(id(module.parametrizations.weight.original))
        for pname in ("weight", "weight_orig"):
            p = module._parameters.get(pname)
            if p is not None:
                counted.add(id(p))
    if not rows:
        raise ValueError(f"{type(model).__name__} has no nn.Linear or nn.Conv* layers to report on.")
    other = sum(p.numel() for p in model.parameters() if id(p) not in counted)
    return CompressionReport(tuple(rows), int(other))

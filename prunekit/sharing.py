"""Weight sharing (Deep Compression): each layer computes with a small codebook of values."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from ._modules import module_ids
from ._validation import check_choice, check_int, check_model, check_weight, invalid
from .cluster.solver import Sorted as _Sorted
from .cluster.solver import cluster_values as _cluster_values
from .cluster.solver import nearest as _labels
from .cluster.solver import work_values as _work
from .reparam import effective_tensor, is_masked, unmask
from .targets import weight_layers

__all__ = ["share_weights", "SharedWeights", "SHARING_INITS", "shared_weights_of"]


#: centroid initialisations of :func:`~prunekit.share_weights` (Han et al. 2016, section 3.2,
#: plus "kmeans")
SHARING_INITS = ("linear", "density", "random", "kmeans")


class SharedWeights(nn.Module):
    """Parametrization ``weight = codebook[indices] * mask`` (weight sharing).

    :func:`~prunekit.share_weights` registers one on the ``weight`` of each layer with
    ``torch.nn.utils.parametrize``. The layer then computes with the shared values, and
    training updates the ``codebook`` (an ``nn.Parameter``): autograd sums the gradients
    of all weights that share a centroid, which is Deep Compression's centroid update
    ``dL/dC_k = sum_ij dL/dW_ij * 1(I_ij = k)``. Pruned weights (``mask`` false) are
    exactly zero and get no gradient. The full-precision weight from before sharing stays
    in ``parametrizations.weight.original``; it is not used and receives no gradient.

    Attributes:
        codebook: ``nn.Parameter`` of the shared values, ascending when created.
        indices: buffer of centroid indices, shaped like the weight (uint8 for up to 256
            centroids, int16 or int32 beyond).
        mask: ``torch.bool`` buffer, ``False`` where the weight is pruned (exactly zero).
    """

    def __init__(self, codebook: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor):
        super().__init__()
        self.codebook = nn.Parameter(codebook.detach().clone())
        self.register_buffer("indices", indices.to(_index_dtype(codebook.numel())))
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        del weight  # replaced by the shared values
        return self.codebook[self.indices.int()] * self.mask

    def extra_repr(self) -> str:
        return f"n_centroids={self.codebook.numel()}, shape={tuple(self.indices.shape)}"


def _index_dtype(k: int) -> torch.dtype:
    if k <= 256:
        return torch.uint8
    if k <= 1 << 15:
        return torch.int16
    return torch.int32


def shared_weights_of(module: nn.Module) -> SharedWeights | None:
    if parametrize.is_parametrized(module, "weight"):
        for p in module.parametrizations.weight:
            if isinstance(p, SharedWeights):
                return p
    return None


def _codebook(values: torch.Tensor, k: int, init: str, seed: int) -> torch.Tensor:
    """k centroids (ascending, values' dtype and device) for non-empty 1-D ``values``."""
    flat = _work(values)
    if init == "kmeans":
        srt = _Sorted(flat)
        kk = min(k, srt.n_distinct())
        c, _ = _cluster_values(flat, kk, "share_weights", "the weights")
        if kk < k:  # fewer distinct values than centroids: the unused entries repeat the last
            c = torch.cat([c, c[-1:].expand(k - kk)])
        return c.to(values.dtype)
    srt = _Sorted(flat)
    lo, hi = srt.quantile_values(torch.tensor([0.0, 1.0], dtype=torch.float64)).tolist()
    if init == "linear":  # evenly spaced between the smallest and the largest weight
        c0 = torch.linspace(lo, hi, k, dtype=torch.float64)
    elif init == "density":  # evenly spaced on the y-axis of the CDF (quantiles)
        c0 = srt.quantile_values((torch.arange(k, dtype=torch.float64) + 0.5) / k).cpu()
    else:  # "random" (Forgy): k of the weights, drawn with a seeded generator
        g = torch.Generator().manual_seed(seed)
        n = srt.n
        pick = torch.randperm(n, generator=g)[:k] if n >= k else torch.randint(0, n, (k,), generator=g)
        c0 = torch.sort(srt.quantile_values(pick.double() / max(n - 1, 1)).cpu()).values
    c0 = srt.from_values(c0)
    c = srt.lloyd(srt.assign(c0), c0)
    return srt.centers(c).to(values.dtype)


def share_weights(model: nn.Module, *, bits: int | None = None, n_clusters: int | None = None,
                  init: str = "linear", exclude=(), seed: int = 0) -> nn.Module:
    """Deep Compression's weight sharing: each layer computes with a small codebook.

    For every ``nn.Linear`` and ``nn.Conv*`` layer (except ``exclude``) the non-zero
    weights are clustered with 1-D k-means (Lloyd's algorithm from ``init``, run until
    the assignment stops changing), each weight is replaced by its centroid, and the
    layer's ``weight`` becomes ``codebook[indices] * mask`` through a
    :class:`~prunekit.SharedWeights` parametrization (``torch.nn.utils.parametrize``). Zero is not a
    cluster: weights that are exactly zero (pruned, or zeros for any other reason) stay
    exactly zero and receive no gradient. Layers never share a codebook (as in the paper).

    Fine-tune afterwards with any optimizer over ``model.parameters()``: the codebooks are
    parameters, and each centroid's gradient is the sum of the gradients of its weights.
    Save and load with ``state_dict`` into a model prepared the same way (pruned, then
    ``share_weights`` with the same settings); ``copy.deepcopy`` works, pickling the whole
    model does not (a limit of torch's parametrizations).

    Masks of ``prunekit.prune`` are folded into the parametrization: the layer loses
    ``weight_orig``/``weight_mask`` (like :func:`prunekit.remove`) and keeps its zeros.
    Prune first, share last: pruning a shared layer again is not supported.
    :func:`~prunekit.compression_report` counts the bits.

    Args:
        model: the model, changed in place.
        bits: codebook size ``2**bits`` (Deep Compression: 8 for conv, 5 for FC layers).
            Give ``bits`` or ``n_clusters``, not both.
        n_clusters: codebook size, if not a power of two.
        init: centroid initialisation: ``"linear"`` (evenly spaced between the smallest
            and largest weight; the paper's choice, best for the large weights),
            ``"density"`` (quantiles: evenly spaced on the CDF), ``"random"`` (Forgy:
            random weights, seeded by ``seed``), or ``"kmeans"`` (start from
            :func:`~prunekit.kmeans_1d`'s near-optimal clustering, which minimises the squared
            error).
        exclude: modules, or their names as in ``model.named_modules()``, to leave as
            they are.
        seed: seed of the ``"random"`` initialisation.

    Returns:
        ``model``.

    Raises:
        TypeError, ValueError: for a bad argument or a layer that already shares weights;
            the model is left untouched.

    Examples:
        >>> import torch, prunekit as pk
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Linear(16, 8))
        >>> _ = pk.prune(model, 0.5)
        >>> _ = pk.share_weights(model, bits=2)
        >>> model[0].weight.unique().numel()   # 4 shared values and zero
        5
        >>> pk.sparsity(model)
        0.5
    """
    caller = "share_weights"
    check_model(model, caller)
    if (bits is None) == (n_clusters is None):
        raise invalid(TypeError, "bits", caller, "given when 'n_clusters' is not (exactly one of "
                      "'bits' and 'n_clusters')", f"bits={bits!r}, n_clusters={n_clusters!r}")
    if bits is not None:
        b = check_int(bits, caller, "bits", minimum=1)
        if b > 16:
            raise invalid(ValueError, "bits", caller, "an integer in the range [1, 16]", repr(bits))
        k = 1 << b
    else:
        k = check_int(n_clusters, caller, "n_clusters", minimum=1)
    check_choice(init, SHARING_INITS, caller, "init")
    check_int(seed, caller, "seed")
    skip = module_ids(model, exclude, caller, "exclude")
    layers = [(n, m) for n, m in weight_layers(model) if id(m) not in skip]
    if not layers:
        raise ValueError(f"{caller} found no nn.Linear or nn.Conv* layers in {type(model).__name__}.")
    plans = []
    for name, module in layers:
        if shared_weights_of(module) is not None:
            raise ValueError(
                f"Layer {name or 'model'!r} already shares weights. Call "
                "torch.nn.utils.parametrize.remove_parametrizations(layer, 'weight') first, "
                "or exclude it."
            )
        if parametrize.is_parametrized(module, "weight"):
            raise ValueError(
                f"Layer {name or 'model'!r} has another parametrization of 'weight'; "
                f"{caller} does not combine with it. Exclude the layer."
            )
        w = check_weight(effective_tensor(module, "weight"), caller, f"{name or 'model'}.weight")
        plans.append((name, module, w))
    prepared = []
    for _name, module, w in plans:  # compute everything before changing anything
        mask = w != 0
        values = w[mask]
        if values.numel():
            codebook = _codebook(values, k, init, seed)
            idx = torch.zeros(w.shape, dtype=torch.long, device=w.device)
            idx[mask] = _labels(_work(values), codebook)
        else:
            codebook = torch.zeros(k, dtype=w.dtype, device=w.device)
            idx = torch.zeros(w.shape, dtype=torch.long, device=w.device)
        prepared.append((module, SharedWeights(codebook, idx, mask)))
    for module, shared in prepared:
        if is_masked(module, "weight"):
            unmask(module, ["weight"])
        parametrize.register_parametrization(module, "weight", shared)
    return model

"""What must change together when a channel goes.

Channel pruning of a model masks a filter, its bias and the affine parameters of the
BatchNorm that normalises that filter's output. This module finds those BatchNorms.
(Physical removal, ``shrink``, builds on the same graph analysis.)
"""

from __future__ import annotations

import warnings

import torch.fx
from torch import nn

__all__ = ["following_batchnorms"]

_BN = nn.modules.batchnorm._BatchNorm


def _out_channels(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    return None


def following_batchnorms(model: nn.Module) -> dict[nn.Module, nn.Module]:
    """Map each Linear/Conv layer to the BatchNorm that directly and only consumes its output.

    The model is traced with ``torch.fx`` (nothing is executed). A layer is paired with a
    BatchNorm only if the BatchNorm is the sole user of the layer's output and has as many
    features as the layer has output channels. Models that ``torch.fx`` cannot trace
    (data-dependent control flow) fall back to registration order: a layer followed
    immediately by a matching BatchNorm in ``model.named_modules()``, with a warning.
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: use the fallback
        warnings.warn(
            f"torch.fx could not trace {type(model).__name__} ({type(exc).__name__}); "
            "pairing layers with BatchNorms by registration order instead.",
            stacklevel=3,
        )
        return _pairs_by_order(model)
    named = dict(model.named_modules())
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        layer = named.get(node.target)
        n_out = _out_channels(layer) if layer is not None else None
        if n_out is None or len(node.users) != 1:
            continue
        (user,) = node.users
        bn = named.get(user.target) if user.op == "call_module" else None
        if isinstance(bn, _BN) and bn.num_features == n_out:
            pairs[layer] = bn
    return pairs


def _pairs_by_order(model: nn.Module) -> dict[nn.Module, nn.Module]:
    leaves = [m for m in model.modules() if not list(m.children())]
    pairs = {}
    for layer, nxt in zip(leaves, leaves[1:]):
        n_out = _out_channels(layer)
        if n_out is not None and isinstance(nxt, _BN) and nxt.num_features == n_out:
            pairs[layer] = nxt
    return pairs

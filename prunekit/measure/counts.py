"""Counting: parameters (all or non-zero), multiply-accumulates, bytes of the saved state_dict."""

from __future__ import annotations

import io

import torch
from torch import nn

from .._modules import eval_mode
from .._validation import check_example_input, check_model
from ..reparam import effective_tensor, pruned_tensor_names, refresh, stripped_state_dict
from ..targets import weight_layers

__all__ = ["count_parameters", "count_macs", "model_size_bytes", "effective_parameters"]


def effective_parameters(model: nn.Module):
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
    check_model(model, "count_parameters")
    total = 0
    for _, _, tensor in effective_parameters(model):
        total += int(torch.count_nonzero(tensor)) if nonzero_only else tensor.numel()
    return total


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
    check_model(model, caller)
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

    handles = [m.register_forward_hook(hook) for _, m in weight_layers(model)]
    try:
        with eval_mode(model), torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        refresh(model)  # a forward under no_grad leaves masked tensors without a graph
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
    check_model(model, "model_size_bytes")
    state = stripped_state_dict(model) if strip_masks else model.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes

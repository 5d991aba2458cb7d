"""Counting: parameters (all or non-zero), multiply-accumulates, bytes of the saved state_dict."""

from __future__ import annotations

import contextlib
import io

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.flop_counter import FlopCounterMode

try:  # torch >= 2.3
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # pragma: no cover - older torch: attention may use a fused kernel
    SDPBackend = sdpa_kernel = None

from .._modules import eval_mode
from .._validation import check_example_input, check_model
from ..reparam import effective_tensor, pruned_tensor_names, refresh, stripped_state_dict
from ..targets import layout_of

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
        >>> model = torch.nn.Linear(10, 4)  # 40 weights + 4 biases
        >>> pk.count_parameters(model)
        44
        >>> _ = pk.prune(model, 0.5)        # 20 weights masked
        >>> pk.count_parameters(model)
        44
        >>> pk.count_parameters(model, nonzero_only=True)
        24
    """
    check_model(model, "count_parameters")
    total = 0
    for _, _, tensor in effective_parameters(model):
        total += int(torch.count_nonzero(tensor)) if nonzero_only else tensor.numel()
    return total


def count_macs(model: nn.Module, example_input, *, nonzero_only: bool = False) -> int:
    """Multiply-accumulates of one forward pass: every matrix product and convolution.

    Runs ``model`` once on ``example_input`` (in eval mode, without gradients; the mode
    of every module is restored) and counts what ``torch.utils.flop_counter.FlopCounterMode``
    counts, halved (one MAC is two FLOPs): linear layers, convolutions (zero padding
    included, as everybody counts), and the products inside attention, ``QK^T`` and ``AV``
    (attention runs with PyTorch's math kernel and ``nn.MultiheadAttention``'s fast path
    off while counting, so that every product is seen). Recurrent layers (``nn.RNN``,
    ``nn.LSTM``, ``nn.GRU``), which ``FlopCounterMode`` does not see, are counted by hand:
    every step multiplies each entry of every ``weight_ih``/``weight_hh`` (and ``weight_hr``)
    once. Biases, normalisation, activations, softmax and pooling are not counted.

    Args:
        model: the model.
        example_input: a tensor (or tuple of tensors, one per forward argument) on the
            model's device. The count is for that whole batch: use a batch of one for MACs
            per sample.
        nonzero_only: count only multiplications by non-zero weights of the layers prunekit
            prunes (ShrinkBench's theoretical speed-up of a sparse model). Masked weights
            still cost time in a dense kernel, so this is a bound a sparse implementation
            might reach, not a measurement.

    Returns:
        The number of MACs, an ``int``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``example_input`` is not a tensor.

    Examples:
        >>> import torch, prunekit as pk
        >>> conv = torch.nn.Conv2d(3, 8, 3, padding=1)    # 8*3*3*3 = 216 weights
        >>> pk.count_macs(conv, torch.randn(1, 3, 4, 4))  # 16 positions x 216
        3456
    """
    caller = "count_macs"
    check_model(model, caller)
    inputs = check_example_input(example_input, caller)
    counter = FlopCounterMode(display=False)
    seen_inside_rnns = [0]  # FLOPs the counter saw inside recurrent layers (counted by hand)
    rnn_macs = [0]
    zero_macs = [0]  # multiplications by masked (zero) weights, for nonzero_only
    opened = {}

    def zeros_hook(module, args, output):
        for tensor, n in layout_of(module).uses(module, args, output).items():
            w = effective_tensor(module, tensor)
            zero_macs[0] += n * (w.numel() - int(torch.count_nonzero(w)))

    def rnn_pre(module, args):
        opened[id(module)] = counter.get_total_flops()

    def rnn_post(module, args, output):
        seen_inside_rnns[0] += counter.get_total_flops() - opened.pop(id(module))
        steps = rnn_steps(module, args[0])
        for name in module._flat_weights_names:
            if name.startswith("weight"):
                w = effective_tensor(module, name)
                rnn_macs[0] += steps * (int(torch.count_nonzero(w)) if nonzero_only else w.numel())

    handles = []
    for _, m in model.named_modules():
        if isinstance(m, nn.RNNBase):
            handles += [m.register_forward_pre_hook(rnn_pre), m.register_forward_hook(rnn_post)]
        elif nonzero_only and getattr(layout_of(m), "uses", None) is not None:
            handles.append(m.register_forward_hook(zeros_hook))
    try:
        with eval_mode(model), torch.no_grad(), every_product_visible(), counter:
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        refresh(model)  # a forward under no_grad leaves masked tensors without a graph
    products = (counter.get_total_flops() - seen_inside_rnns[0]) // 2
    return int(products + rnn_macs[0] - zero_macs[0])


def rnn_steps(module: nn.RNNBase, x) -> int:
    """How many (sample, time step) pairs a recurrent layer processes for input ``x``."""
    if isinstance(x, PackedSequence):
        return int(x.data.shape[0])
    if x.dim() == 2:  # unbatched (T, features)
        return int(x.shape[0])
    return int(x.shape[0] * x.shape[1])


@contextlib.contextmanager
def every_product_visible():
    """Math attention kernel and no MultiheadAttention fast path, so every product is an op."""
    stack = contextlib.ExitStack()
    with stack:
        if sdpa_kernel is not None:
            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        mha = getattr(torch.backends, "mha", None)
        if mha is not None and hasattr(mha, "set_fastpath_enabled"):
            previous = mha.get_fastpath_enabled()
            mha.set_fastpath_enabled(False)
            stack.callback(mha.set_fastpath_enabled, previous)
        yield


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
        >>> masked = pk.model_size_bytes(model)  # weight_orig + weight_mask
        >>> stripped = pk.model_size_bytes(model, strip_masks=True)
        >>> # zeros cost as much as weights
        >>> masked > 1.9 * dense, abs(stripped - dense) < 100
        (True, True)
    """
    check_model(model, "model_size_bytes")
    state = stripped_state_dict(model) if strip_masks else model.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes

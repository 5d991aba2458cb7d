"""The graph walk: what must change together when a channel goes, op by op (a handler table)."""

from __future__ import annotations

import math
import warnings

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .._validation import invalid
from ..reparam import effective_tensor

__all__ = [
    "following_batchnorms",
    "is_layer",
    "walk",
    "register_channel_op",
    "Blocked",
    "State",
    "WalkContext",
    "MODULE_HANDLERS",
    "FUNCTION_HANDLERS",
    "METHOD_HANDLERS",
    "describe_node",
    "all_zero",
]

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


def is_layer(module) -> bool:
    """Layers whose output channels shrink can remove and whose input channels it can cut."""
    if isinstance(module, nn.Linear):
        return True
    return (isinstance(module, nn.modules.conv._ConvNd) and not module.transposed
            and module.groups == 1)


# Elementwise modules without parameters: f is applied to every entry on its own.
_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
    nn.Softsign, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.LogSigmoid, nn.Threshold,
    nn.Identity,
)
# Identity in eval mode; in training mode they zero entries, which keeps zeros zero.
_DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_POOL_MODULES = {
    nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3,
    nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3,
    nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3,
}
_ELEMENTWISE_FUNCTIONS = {
    torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.leaky_relu, F.elu, F.celu, F.selu,
    F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, F.softplus, F.softsign,
    torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.logsigmoid,
}
_ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "contiguous"}
_DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d}
_POOL_FUNCTIONS = {
    F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3,
    F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3,
    F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3,
    F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3,
}
_FLATTEN_FUNCTIONS = {torch.flatten, torch.reshape}
_FLATTEN_METHODS = {"flatten", "view", "reshape"}
_SHAPE_METHODS = {"size", "dim"}
_SHAPE_ATTRS = {"shape", "ndim", "dtype", "device"}


def _is_shape_query(node: torch.fx.Node) -> bool:
    """Users that only read a tensor's shape (``x.size(0)``), not its values."""
    if node.op == "call_method" and node.target in _SHAPE_METHODS:
        return True
    return (node.op == "call_function" and node.target is getattr
            and len(node.args) > 1 and node.args[1] in _SHAPE_ATTRS)


def _value_users(node: torch.fx.Node) -> list[torch.fx.Node]:
    return [u for u in node.users if not _is_shape_query(u)]


def describe_node(node: torch.fx.Node, named: dict) -> str:
    if node.op == "call_module":
        return f"node {node.name!r} (module {node.target!r}, {type(named[node.target]).__name__})"
    if node.op == "call_function":
        target = getattr(node.target, "__name__", str(node.target))
        return f"node {node.name!r} (function {target})"
    if node.op == "call_method":
        return f"node {node.name!r} (method .{node.target}())"
    return f"node {node.name!r} ({node.op})"


def _shape(node) -> tuple | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, torch.fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


class Blocked(Exception):
    """Internal: the walk from a layer met something it cannot follow exactly."""

    def __init__(self, node, reason):
        super().__init__(reason)
        self.node, self.reason = node, reason


class State:
    """What flows from a producer layer: per position along the channel dimension ``dim``,
    which producer channel it comes from, and (for dead channels) the constant value."""

    def __init__(self, dim, pos2ch, value, uniform):
        self.dim, self.pos2ch, self.value, self.uniform = dim, pos2ch, value, uniform

    def take(self, index):
        return State(self.dim, self.pos2ch[index], self.value[index], self.uniform[index])


def _flatten_range(node, ishape, oshape, named):
    """``(start, end)`` of the dims a flatten-like node merges, or ``None`` for a no-op."""
    if ishape is None or oshape is None:
        raise Blocked(node, "its input or output is not a single tensor")
    if ishape == oshape:
        return None
    nd = len(ishape)
    if node.op == "call_module":
        module = named[node.target]
        start, end = module.start_dim % nd, module.end_dim % nd
    elif node.target in ("flatten",) or node.target is torch.flatten:
        args = list(node.args[1:]) + [None, None]
        start = node.kwargs.get("start_dim", args[0] if args[0] is not None else 0)
        end = node.kwargs.get("end_dim", args[1] if args[1] is not None else -1)
        if not isinstance(start, int) or not isinstance(end, int):
            raise Blocked(node, "its start_dim/end_dim are not constants")
        start, end = start % nd, end % nd
    else:  # view / reshape: accept only "merge all trailing dims from some start"
        start = 0
        while start < min(len(oshape), nd) and oshape[start] == ishape[start]:
            start += 1
        end = nd - 1
        if len(oshape) != start + 1:
            raise Blocked(node, f"it reshapes {list(ishape)} to {list(oshape)}, which is not a "
                                 "flatten of trailing dimensions")
    merged = math.prod(ishape[start:end + 1])
    expected = ishape[:start] + (merged,) + ishape[end + 1:]
    if tuple(oshape) != expected:
        raise Blocked(node, f"it reshapes {list(ishape)} to {list(oshape)}, which shrink cannot "
                             "map channel by channel")
    return start, end


def _apply_flatten(state: State, node, ishape, oshape, named) -> State:
    rng = _flatten_range(node, ishape, oshape, named)
    if rng is None:
        return state
    start, end = rng
    d = state.dim
    if d < start:
        return state
    if d > end:
        return State(d - (end - start), state.pos2ch, state.value, state.uniform)
    sizes = ishape[start:end + 1]
    stride = math.prod(ishape[d + 1:end + 1])
    flat = torch.arange(math.prod(sizes), device=state.pos2ch.device)
    coord = torch.div(flat, stride, rounding_mode="floor") % ishape[d]
    return State(start, state.pos2ch[coord], state.value[coord], state.uniform[coord])


def _functional_value(node, values):
    """Apply a call_function/call_method node to the 1-D tensor of constants."""
    extra_args = node.args[1:]
    if any(isinstance(a, torch.fx.Node) for a in (*extra_args, *node.kwargs.values())):
        raise Blocked(node, "it takes a second tensor argument")
    if node.op == "call_method":
        return getattr(values.clone(), node.target)(*extra_args, **node.kwargs)
    return node.target(values.clone(), *extra_args, **node.kwargs)


class WalkContext:
    """What a channel-op handler may read: the node, its input/output shapes, the modules."""

    def __init__(self, node, ishape, oshape, named, call_counts):
        self.node, self.ishape, self.oshape = node, ishape, oshape
        self.nd = len(ishape) if ishape is not None else None
        self.named, self.call_counts = named, call_counts

    def called_once(self, module) -> None:
        if self.call_counts.get(id(module), 0) > 1:
            raise Blocked(self.node, "the module is called more than once")


def _elementwise(state, ctx, module=None):
    if module is not None:
        return State(state.dim, state.pos2ch, module(state.value.clone()), state.uniform)
    return State(state.dim, state.pos2ch, _functional_value(ctx.node, state.value), state.uniform)


def _dropout(state, ctx, module=None):
    if module is None:
        _functional_value(ctx.node, state.value)  # only checks the arguments
    return state


def _flatten(state, ctx, module=None):
    return _apply_flatten(state, ctx.node, ctx.ishape, ctx.oshape, ctx.named)


def _pool(k: int, exact: bool):
    def handler(state, ctx, module=None):
        node = ctx.node
        if module is not None:
            if getattr(module, "return_indices", False):
                raise Blocked(node, "it returns indices")
            ok = exact or ((all_zero(module.padding) or not module.count_include_pad) and not (
                module.ceil_mode or getattr(module, "divisor_override", None)))
        else:
            if any(isinstance(a, torch.fx.Node) for a in (*node.args[1:], *node.kwargs.values())):
                raise Blocked(node, "it takes a second tensor argument")
            ok = exact
        if state.dim >= ctx.nd - k:
            raise Blocked(node, "it pools over the channel dimension")
        return _pooled(state, ok)
    return handler


def _batchnorm(state, ctx, module=None):
    if state.dim != 1:
        raise Blocked(ctx.node, "BatchNorm normalises dimension 1, not the channels")
    ctx.called_once(module)
    ctx.path.append((module, state))
    return State(state.dim, state.pos2ch, _bn_value(module, state), state.uniform)


def _prelu(state, ctx, module=None):
    if module.num_parameters > 1:
        if state.dim != 1:
            raise Blocked(ctx.node, "PReLU's per-channel slopes act on dimension 1")
        ctx.called_once(module)
        ctx.path.append((module, state))
        slope = module.weight.detach()
    else:
        slope = module.weight.detach().reshape(())
    v = state.value
    return State(state.dim, state.pos2ch, torch.where(v >= 0, v, slope * v), state.uniform)


def _upsample(state, ctx, module=None):
    if state.dim >= 2:
        raise Blocked(ctx.node, "it resizes the channel dimension")
    return state


def _grouped_conv(state, ctx, module=None):
    kind = "transposed" if module.transposed else f"grouped (groups={module.groups})"
    raise Blocked(ctx.node, f"it is a {kind} convolution, whose input channels are tied "
                            "to its output channels")


#: module type -> handler(state, ctx, module); looked up along the type's MRO
MODULE_HANDLERS: dict = {
    **{t: _elementwise for t in _ELEMENTWISE_MODULES},
    **{t: _dropout for t in _DROPOUT_MODULES},
    **{t: _pool(k, t not in (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d))
       for t, k in _POOL_MODULES.items()},
    _BN: _batchnorm,
    nn.PReLU: _prelu,
    nn.Flatten: _flatten,
    nn.Upsample: _upsample,
    nn.modules.conv._ConvNd: _grouped_conv,
}
#: function -> handler(state, ctx)
FUNCTION_HANDLERS: dict = {
    **{f: _elementwise for f in _ELEMENTWISE_FUNCTIONS},
    **{f: _dropout for f in _DROPOUT_FUNCTIONS},
    **{f: _pool(k, f not in (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d))
       for f, k in _POOL_FUNCTIONS.items()},
    **{f: _flatten for f in _FLATTEN_FUNCTIONS},
}
#: tensor method name -> handler(state, ctx)
METHOD_HANDLERS: dict = {
    **{m: _elementwise for m in _ELEMENTWISE_METHODS},
    **{m: _flatten for m in _FLATTEN_METHODS},
}


def register_channel_op(target, handler) -> None:
    """Teach :func:`prunekit.shrink` how an operation treats channels.

    Args:
        target: a module type, a function (as ``torch.fx`` records it, e.g. ``torch.relu``)
            or a tensor method name (``"relu"``).
        handler: ``handler(state, ctx, module=None) -> state``: returns what flows out of
            the op given what flows in (``state.value`` holds each position's constant for
            dead channels; return it unchanged for an op that keeps constants constant), or
            raises :class:`Blocked` (``Blocked(ctx.node, reason)``) if it cannot be followed
            exactly.
    """
    if not callable(handler):
        raise invalid(TypeError, "handler", "register_channel_op", "callable", repr(handler))
    if isinstance(target, type) and issubclass(target, nn.Module):
        MODULE_HANDLERS[target] = handler
    elif isinstance(target, str):
        METHOD_HANDLERS[target] = handler
    elif callable(target):
        FUNCTION_HANDLERS[target] = handler
    else:
        raise invalid(TypeError, "target", "register_channel_op",
                      "a module type, a function or a method name", repr(target))


def _module_handler(module):
    for cls in type(module).__mro__:
        if cls in MODULE_HANDLERS:
            return MODULE_HANDLERS[cls]
    return None


def walk(start, layer, dead, named, call_counts) -> tuple:
    """Follow a producer's output to its consumer. Returns ``(consumer_node, path, state)``
    or ``(None, path, state)`` when the output reaches the model output unchanged in width.
    Raises :class:`Blocked` for anything it cannot follow exactly."""
    w = effective_tensor(layer, "weight")
    n_out = w.shape[0]
    bias = effective_tensor(layer, "bias") if layer.bias is not None else None
    value = bias.clone() if bias is not None else torch.zeros(n_out, dtype=w.dtype, device=w.device)
    shape = _shape(start)
    if shape is None:
        raise Blocked(start, "its output is not a single tensor")
    if isinstance(layer, nn.Linear):
        dim = len(shape) - 1
    else:
        dim = len(shape) - (layer.weight.dim() - 2) - 1
    state = State(dim, torch.arange(n_out, device=w.device), value, dead.clone())
    path = []  # (module, state at that module) for per-channel modules with parameters
    node = start
    while True:
        users = _value_users(node)
        if not users:
            return None, path, state
        if len(users) > 1:
            names = ", ".join(repr(u.name) for u in users)
            raise Blocked(node, f"its output has {len(users)} users ({names}): a branch, e.g. "
                                "a residual connection, would need the same channels removed "
                                "in every branch")
        (user,) = users
        if user.op == "output":
            return None, path, state
        if not user.args or user.args[0] is not node:
            raise Blocked(user, "it uses the tensor as something other than its first input "
                                "(e.g. a residual addition or a concatenation)")
        ctx = WalkContext(user, _shape(node), _shape(user), named, call_counts)
        ctx.path = path
        if user.op == "call_module":
            module = named[user.target]
            if is_layer(module):
                ctx.called_once(module)
                if isinstance(module, nn.Linear):
                    if state.dim != ctx.nd - 1:
                        raise Blocked(user, "the channels are not the last dimension of the "
                                            "Linear layer's input")
                elif state.dim != ctx.nd - (module.weight.dim() - 2) - 1:
                    raise Blocked(user, "the channels are not the channel dimension of the "
                                        "convolution's input")
                return user, path, state
            handler = _module_handler(module)
            if handler is None:
                raise Blocked(user, "shrink does not know how this module treats channels")
            state = handler(state, ctx, module)
        elif user.op == "call_function":
            handler = FUNCTION_HANDLERS.get(user.target)
            if handler is None:
                raise Blocked(user, "shrink does not know how this function treats channels "
                                    "(e.g. an addition, a concatenation or a reshape)")
            state = handler(state, ctx)
        elif user.op == "call_method":
            handler = METHOD_HANDLERS.get(user.target)
            if handler is None:
                raise Blocked(user, "shrink does not know how this method treats channels")
            state = handler(state, ctx)
        else:
            raise Blocked(user, "shrink does not know this operation")
        node = user


def all_zero(padding) -> bool:
    if isinstance(padding, str):
        return padding == "valid"
    if isinstance(padding, int):
        return padding == 0
    return all(p == 0 for p in padding)


def _pooled(state: State, exact_for_constants: bool) -> State:
    """Pooling keeps a constant channel constant, except average pooling that counts zero
    padding (border windows average the constant with zeros); zeros always stay zeros."""
    if exact_for_constants:
        return state
    return State(state.dim, state.pos2ch, state.value, state.uniform & (state.value == 0))


def _bn_value(bn, state: State) -> torch.Tensor:
    """A BatchNorm (eval mode) applied to constant channels, position by position."""
    v = state.value
    idx = torch.arange(v.numel(), device=v.device)
    weight = bn.weight.detach()[idx] if bn.weight is not None else 1.0
    bias = bn.bias.detach()[idx] if bn.bias is not None else 0.0
    if bn.running_mean is None:  # batch statistics even in eval: a constant channel -> 0
        return (torch.zeros_like(v) * weight + bias).to(v.dtype)
    mean, var = bn.running_mean[idx], bn.running_var[idx]
    return ((v - mean) / torch.sqrt(var + bn.eps) * weight + bias).to(v.dtype)

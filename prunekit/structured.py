"""What must change together when a channel goes, and physical removal of pruned channels.

Channel pruning of a model masks a filter, its bias and the affine parameters of the
BatchNorm that normalises that filter's output; :func:`following_batchnorms` finds those
BatchNorms. Masked channels still cost memory and time; :func:`prunekit.shrink` builds a
new, physically smaller model without them.

How :func:`prunekit.shrink` decides, in short (the docstring has the details):

* The model is traced with ``torch.fx`` and run once on the example input to learn every
  tensor's shape.
* A channel of a ``Conv``/``Linear`` layer whose weights are all zero (a *dead* channel)
  outputs a constant (its bias, or 0). That constant is followed through the per-channel
  operations up to the next layer that mixes channels (the *consumer*): BatchNorm,
  elementwise activations, pooling, dropout, flatten. A dead channel is removed when it
  reaches the consumer as exact zeros (always the case after ``prune(method="channel")``,
  which masks the bias and the BatchNorm too), or as a known constant that can be added
  to the consumer's bias exactly. A channel the consumer does not read at all (all its
  input weights are zero) is removed as well.
* Anything it cannot follow exactly (a residual addition, a concatenation, a grouped
  convolution, a tensor with several users, an unknown function) makes it refuse with
  :class:`prunekit.UnsupportedGraphError`. Torch-Pruning's dependency graph handles those graphs;
  :func:`prunekit.tp_prune` wraps it.
"""

from __future__ import annotations

import copy
import math
import warnings

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils import prune as torch_prune
from torch.utils._pytree import tree_flatten

from ._validation import check_example_input
from .prune import effective_tensor, pruned_tensor_names

__all__ = ["following_batchnorms", "shrink", "UnsupportedGraphError"]

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


# ======================================================================================
# shrink: physical removal of pruned channels
# ======================================================================================

_TP_HINT = (
    "Torch-Pruning's dependency graph (torch_pruning.DependencyGraph) removes channels "
    "consistently across such structures; prunekit.tp_prune(model, example_input, sparsity) "
    "uses it with prunekit's importance criteria. Alternatively, leave this layer dense "
    "(prune(..., exclude=[...]))."
)


class UnsupportedGraphError(ValueError):
    """:func:`prunekit.shrink` cannot rebuild this model exactly (a ``ValueError`` subclass).

    The message names the layer whose pruned channels cannot be removed, the graph node
    that stops it and why, and points to Torch-Pruning's dependency graph
    (:func:`prunekit.tp_prune`), which handles residual additions, concatenations and
    grouped convolutions.
    """


def _copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works for models pruned with ``torch.nn.utils.prune``.

    torch stores a pruned tensor as a plain attribute which, after a forward pass with
    gradients, is a non-leaf tensor that ``deepcopy`` refuses (pytorch/pytorch#37322). The
    memo hands ``deepcopy`` a detached copy of those attributes instead.
    """
    memo = {}
    for module in model.modules():
        for name in pruned_tensor_names(module):
            value = module.__dict__.get(name)
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


def _strip_masks(model: nn.Module) -> None:
    """Make every mask permanent (``*_orig * *_mask`` -> plain parameter), keeping order."""
    for module in model.modules():
        names = pruned_tensor_names(module)
        if not names:
            continue
        order = list(module._parameters)
        for name in names:
            torch_prune.remove(module, name)
        renamed = [k[: -len("_orig")] if k[: -len("_orig")] in names and k.endswith("_orig") else k
                   for k in order]
        params = module._parameters
        module._parameters = type(params)((k, params[k]) for k in renamed if k in params)


def _is_layer(module) -> bool:
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


def _describe_node(node: torch.fx.Node, named: dict) -> str:
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


class _Blocked(Exception):
    """Internal: the walk from a layer met something it cannot follow exactly."""

    def __init__(self, node, reason):
        super().__init__(reason)
        self.node, self.reason = node, reason


class _State:
    """What flows from a producer layer: per position along the channel dimension ``dim``,
    which producer channel it comes from, and (for dead channels) the constant value."""

    def __init__(self, dim, pos2ch, value, uniform):
        self.dim, self.pos2ch, self.value, self.uniform = dim, pos2ch, value, uniform

    def take(self, index):
        return _State(self.dim, self.pos2ch[index], self.value[index], self.uniform[index])


def _flatten_range(node, ishape, oshape, named):
    """``(start, end)`` of the dims a flatten-like node merges, or ``None`` for a no-op."""
    if ishape is None or oshape is None:
        raise _Blocked(node, "its input or output is not a single tensor")
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
            raise _Blocked(node, "its start_dim/end_dim are not constants")
        start, end = start % nd, end % nd
    else:  # view / reshape: accept only "merge all trailing dims from some start"
        start = 0
        while start < min(len(oshape), nd) and oshape[start] == ishape[start]:
            start += 1
        end = nd - 1
        if len(oshape) != start + 1:
            raise _Blocked(node, f"it reshapes {list(ishape)} to {list(oshape)}, which is not a "
                                 "flatten of trailing dimensions")
    merged = math.prod(ishape[start:end + 1])
    expected = ishape[:start] + (merged,) + ishape[end + 1:]
    if tuple(oshape) != expected:
        raise _Blocked(node, f"it reshapes {list(ishape)} to {list(oshape)}, which shrink cannot "
                             "map channel by channel")
    return start, end


def _apply_flatten(state: _State, node, ishape, oshape, named) -> _State:
    rng = _flatten_range(node, ishape, oshape, named)
    if rng is None:
        return state
    start, end = rng
    d = state.dim
    if d < start:
        return state
    if d > end:
        return _State(d - (end - start), state.pos2ch, state.value, state.uniform)
    sizes = ishape[start:end + 1]
    stride = math.prod(ishape[d + 1:end + 1])
    flat = torch.arange(math.prod(sizes), device=state.pos2ch.device)
    coord = torch.div(flat, stride, rounding_mode="floor") % ishape[d]
    return _State(start, state.pos2ch[coord], state.value[coord], state.uniform[coord])


def _functional_value(node, values):
    """Apply a call_function/call_method node to the 1-D tensor of constants."""
    extra_args = node.args[1:]
    if any(isinstance(a, torch.fx.Node) for a in (*extra_args, *node.kwargs.values())):
        raise _Blocked(node, "it takes a second tensor argument")
    if node.op == "call_method":
        return getattr(values.clone(), node.target)(*extra_args, **node.kwargs)
    return node.target(values.clone(), *extra_args, **node.kwargs)


class _Plan:
    """The edits to make to the copy, collected before anything is changed."""

    def __init__(self):
        self.keep_out: dict[nn.Module, torch.Tensor] = {}
        self.keep_in: dict[nn.Module, torch.Tensor] = {}
        self.keep_features: dict[nn.Module, torch.Tensor] = {}  # BatchNorm, PReLU
        self.bias_delta: dict[nn.Module, torch.Tensor] = {}


def _walk(start, layer, dead, named, call_counts) -> tuple:
    """Follow a producer's output to its consumer. Returns ``(consumer_node, path, state)``
    or ``(None, path, state)`` when the output reaches the model output unchanged in width.
    Raises :class:`_Blocked` for anything it cannot follow exactly."""
    w = effective_tensor(layer, "weight")
    n_out = w.shape[0]
    bias = effective_tensor(layer, "bias") if layer.bias is not None else None
    value = bias.clone() if bias is not None else torch.zeros(n_out, dtype=w.dtype, device=w.device)
    shape = _shape(start)
    if shape is None:
        raise _Blocked(start, "its output is not a single tensor")
    if isinstance(layer, nn.Linear):
        dim = len(shape) - 1
    else:
        dim = len(shape) - (layer.weight.dim() - 2) - 1
    state = _State(dim, torch.arange(n_out, device=w.device), value, dead.clone())
    path = []  # (module, state at that module) for per-channel modules with parameters
    node = start
    while True:
        users = _value_users(node)
        if not users:
            return None, path, state
        if len(users) > 1:
            names = ", ".join(repr(u.name) for u in users)
            raise _Blocked(node, f"its output has {len(users)} users ({names}): a branch, e.g. "
                                 "a residual connection, would need the same channels removed "
                                 "in every branch")
        (user,) = users
        if user.op == "output":
            return None, path, state
        if not user.args or user.args[0] is not node:
            raise _Blocked(user, "it uses the tensor as something other than its first input "
                                 "(e.g. a residual addition or a concatenation)")
        ishape, oshape = _shape(node), _shape(user)
        nd = len(ishape) if ishape is not None else None
        if user.op == "call_module":
            module = named[user.target]
            if _is_layer(module):
                if call_counts.get(id(module), 0) > 1:
                    raise _Blocked(user, "the module is called more than once")
                if isinstance(module, nn.Linear):
                    if state.dim != nd - 1:
                        raise _Blocked(user, "the channels are not the last dimension of the "
                                             "Linear layer's input")
                elif state.dim != nd - (module.weight.dim() - 2) - 1:
                    raise _Blocked(user, "the channels are not the channel dimension of the "
                                         "convolution's input")
                return user, path, state
            if isinstance(module, nn.modules.conv._ConvNd):
                kind = "transposed" if module.transposed else f"grouped (groups={module.groups})"
                raise _Blocked(user, f"it is a {kind} convolution, whose input channels are tied "
                                     "to its output channels")
            if isinstance(module, _BN):
                if state.dim != 1:
                    raise _Blocked(user, "BatchNorm normalises dimension 1, not the channels")
                if call_counts.get(id(module), 0) > 1:
                    raise _Blocked(user, "the module is called more than once")
                path.append((module, state))
                state = _State(state.dim, state.pos2ch, _bn_value(module, state), state.uniform)
            elif isinstance(module, nn.PReLU):
                if module.num_parameters > 1:
                    if state.dim != 1:
                        raise _Blocked(user, "PReLU's per-channel slopes act on dimension 1")
                    if call_counts.get(id(module), 0) > 1:
                        raise _Blocked(user, "the module is called more than once")
                    path.append((module, state))
                    slope = module.weight.detach()
                else:
                    slope = module.weight.detach().reshape(())
                v = state.value
                state = _State(state.dim, state.pos2ch, torch.where(v >= 0, v, slope * v),
                               state.uniform)
            elif isinstance(module, _ELEMENTWISE_MODULES):
                state = _State(state.dim, state.pos2ch, module(state.value.clone()), state.uniform)
            elif isinstance(module, _DROPOUT_MODULES):
                pass
            elif type(module) in _POOL_MODULES:
                k = _POOL_MODULES[type(module)]
                if getattr(module, "return_indices", False):
                    raise _Blocked(user, "it returns indices")
                if state.dim >= nd - k:
                    raise _Blocked(user, "it pools over the channel dimension")
                exact = not isinstance(module, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)) or (
                    _all_zero(module.padding) or not module.count_include_pad) and not (
                    module.ceil_mode or getattr(module, "divisor_override", None))
                state = _pooled(state, exact)
            elif isinstance(module, nn.Flatten):
                state = _apply_flatten(state, user, ishape, oshape, named)
            elif isinstance(module, nn.Upsample):
                if state.dim >= 2:
                    raise _Blocked(user, "it resizes the channel dimension")
            else:
                raise _Blocked(user, "shrink does not know how this module treats channels")
        elif user.op == "call_function":
            fn = user.target
            if fn in _ELEMENTWISE_FUNCTIONS:
                state = _State(state.dim, state.pos2ch, _functional_value(user, state.value),
                               state.uniform)
            elif fn in _DROPOUT_FUNCTIONS:
                _functional_value(user, state.value)  # only checks the arguments
            elif fn in _POOL_FUNCTIONS:
                k = _POOL_FUNCTIONS[fn]
                if any(isinstance(a, torch.fx.Node) for a in (*user.args[1:], *user.kwargs.values())):
                    raise _Blocked(user, "it takes a second tensor argument")
                if state.dim >= nd - k:
                    raise _Blocked(user, "it pools over the channel dimension")
                exact = fn not in (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)
                state = _pooled(state, exact)
            elif fn in _FLATTEN_FUNCTIONS:
                state = _apply_flatten(state, user, ishape, oshape, named)
            else:
                raise _Blocked(user, "shrink does not know how this function treats channels "
                                     "(e.g. an addition, a concatenation or a reshape)")
        elif user.op == "call_method":
            if user.target in _ELEMENTWISE_METHODS:
                state = _State(state.dim, state.pos2ch, _functional_value(user, state.value),
                               state.uniform)
            elif user.target in _FLATTEN_METHODS:
                state = _apply_flatten(state, user, ishape, oshape, named)
            else:
                raise _Blocked(user, "shrink does not know how this method treats channels")
        else:
            raise _Blocked(user, "shrink does not know this operation")
        node = user


def _all_zero(padding) -> bool:
    if isinstance(padding, str):
        return padding == "valid"
    if isinstance(padding, int):
        return padding == 0
    return all(p == 0 for p in padding)


def _pooled(state: _State, exact_for_constants: bool) -> _State:
    """Pooling keeps a constant channel constant, except average pooling that counts zero
    padding (border windows average the constant with zeros); zeros always stay zeros."""
    if exact_for_constants:
        return state
    return _State(state.dim, state.pos2ch, state.value, state.uniform & (state.value == 0))


def _bn_value(bn, state: _State) -> torch.Tensor:
    """A BatchNorm (eval mode) applied to constant channels, position by position."""
    v = state.value
    idx = torch.arange(v.numel(), device=v.device)
    weight = bn.weight.detach()[idx] if bn.weight is not None else 1.0
    bias = bn.bias.detach()[idx] if bn.bias is not None else 0.0
    if bn.running_mean is None:  # batch statistics even in eval: a constant channel -> 0
        return (torch.zeros_like(v) * weight + bias).to(v.dtype)
    mean, var = bn.running_mean[idx], bn.running_var[idx]
    return ((v - mean) / torch.sqrt(var + bn.eps) * weight + bias).to(v.dtype)


def _refusal(layer_name, layer, n_dead, blocked: _Blocked, named) -> UnsupportedGraphError:
    where = _describe_node(blocked.node, named)
    return UnsupportedGraphError(
        f"shrink cannot remove the {n_dead} pruned output channel(s) of layer {layer_name!r} "
        f"({type(layer).__name__}): their path stops at {where}, because {blocked.reason}. "
        f"{_TP_HINT}"
    )


def _has_layer_downstream(node: torch.fx.Node, named: dict, include_self: bool = True) -> bool:
    """Is there a parameterised operation (a later layer) at or after ``node``?"""
    seen, todo = set(), [node] if include_self else list(node.users)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op == "call_module":
            module = named.get(n.target)
            if module is not None and (any(True for _ in module.parameters())
                                       or any(True for _ in module.buffers())):
                return True
        if n.op in ("call_function", "call_method") and any(
                isinstance(a, torch.fx.Node) and a.op == "get_attr"
                for a in (*n.args, *n.kwargs.values())):
            return True
        todo.extend(n.users)
    return False


def _plan_shrink(gm, named) -> _Plan:
    plan = _Plan()
    nodes = list(gm.graph.nodes)
    call_counts: dict[int, int] = {}
    for node in nodes:
        if node.op == "call_module":
            key = id(named[node.target])
            call_counts[key] = call_counts.get(key, 0) + 1
    attr_owners = set()  # modules whose tensors the forward reads directly (get_attr)
    for node in nodes:
        if node.op == "get_attr":
            owner = node.target.rpartition(".")[0]
            attr_owners.add(id(named.get(owner)))
    name_of = {id(m): n for n, m in named.items()}

    for node in nodes:
        if node.op != "call_module":
            continue
        layer = named[node.target]
        if not isinstance(layer, (nn.Linear, nn.modules.conv._ConvNd)):
            continue
        w = effective_tensor(layer, "weight")
        weight_out = w.transpose(0, 1) if getattr(layer, "transposed", False) else w
        dead = ~(weight_out != 0).reshape(weight_out.shape[0], -1).any(dim=1)
        n_dead = int(dead.sum())
        try:
            if not _is_layer(layer):
                kind = ("transposed" if layer.transposed
                        else f"grouped (groups={layer.groups})")
                raise _Blocked(node, f"it is a {kind} convolution, whose output channels are "
                                     "tied to its input channels")
            if call_counts[id(layer)] > 1:
                raise _Blocked(node, "the module is called more than once")
            consumer, path, state = _walk(node, layer, dead, named, call_counts)
        except _Blocked as blocked:
            if n_dead and _has_layer_downstream(blocked.node, named, blocked.node is not node):
                raise _refusal(node.target, layer, n_dead, blocked, named) from None
            continue
        if consumer is None:  # the model's output: its width must not change
            continue
        cons = named[consumer.target]
        # modules whose tensors shrink would change must not be read elsewhere
        for module in [layer, cons] + [m for m, _ in path]:
            if id(module) in attr_owners:
                raise _refusal(node.target, layer, max(n_dead, 1), _Blocked(
                    node, f"the forward reads the parameters of {name_of[id(module)]!r} directly"
                ), named)
        removable, delta = _decide(layer, cons, state, dead)
        if not bool(removable.any()):
            continue
        keep_ch = ~removable
        if not bool(keep_ch.any()):  # keep one channel so that every shape stays valid
            keep_ch[0] = True
            removable[0] = False
            removable, delta = _decide(layer, cons, state, dead, force_keep=keep_ch)
        plan.keep_out[layer] = torch.nonzero(keep_ch).squeeze(1)
        for module, st in path:
            plan.keep_features[module] = torch.nonzero(keep_ch[st.pos2ch]).squeeze(1)
        plan.keep_in[cons] = torch.nonzero(keep_ch[state.pos2ch]).squeeze(1)
        if delta is not None:
            plan.bias_delta[cons] = delta
    return plan


def _decide(layer, cons, state: _State, dead: torch.Tensor, force_keep=None):
    """Which producer channels go, and the consumer's bias change for folded constants."""
    n_out = dead.numel()
    wc = effective_tensor(cons, "weight")
    per_pos = wc.transpose(0, 1).reshape(wc.shape[1], -1)  # (input positions, rest)
    pos_used = (per_pos != 0).any(dim=1)
    pos2ch = state.pos2ch
    ones = torch.ones(pos2ch.numel(), dtype=torch.long, device=pos2ch.device)

    def all_over_channel(flags):  # per channel: flags true at every one of its positions
        bad = torch.zeros(n_out, dtype=torch.long, device=pos2ch.device)
        bad.index_add_(0, pos2ch, ones - flags.long())
        return bad == 0

    unused = all_over_channel(~pos_used)
    zero = all_over_channel(state.uniform & (state.value == 0))
    foldable = all_over_channel(state.uniform & torch.isfinite(state.value))
    if isinstance(cons, nn.modules.conv._ConvNd) and not (
            _all_zero(cons.padding) or cons.padding_mode != "zeros"):
        foldable = zero  # zero padding: a non-zero constant is not constant at the borders
    removable = unused | (dead & (zero | foldable))
    if force_keep is not None:
        removable &= ~force_keep
    fold_ch = removable & ~unused & ~zero
    if not bool(fold_ch.any()):
        return removable, None
    fold_pos = fold_ch[pos2ch]
    contrib = per_pos.reshape(wc.shape[1], wc.shape[0], -1).sum(dim=2)  # (positions, out)
    v = torch.where(fold_pos, state.value, torch.zeros_like(state.value))
    delta = (contrib[fold_pos].double() * v[fold_pos].double()[:, None]).sum(dim=0)
    return removable, delta


def _set_param(module: nn.Module, name: str, value: torch.Tensor) -> None:
    old = module._parameters[name]
    module._parameters[name] = nn.Parameter(value.detach().clone().contiguous(),
                                            requires_grad=old.requires_grad)


def _apply_plan(plan: _Plan) -> None:
    with torch.no_grad():
        for module, delta in plan.bias_delta.items():
            w = module.weight
            if module.bias is None:
                module.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device),
                                           requires_grad=w.requires_grad)
            module.bias.add_(delta.to(module.bias.dtype))
        for module in set(plan.keep_out) | set(plan.keep_in):
            w = module.weight
            out_idx, in_idx = plan.keep_out.get(module), plan.keep_in.get(module)
            if out_idx is not None:
                w = w.index_select(0, out_idx.to(w.device))
                if module.bias is not None:
                    _set_param(module, "bias", module.bias.index_select(0, out_idx.to(w.device)))
            if in_idx is not None:
                w = w.index_select(1, in_idx.to(w.device))
            _set_param(module, "weight", w)
            if isinstance(module, nn.Linear):
                module.out_features, module.in_features = w.shape[0], w.shape[1]
            else:
                module.out_channels, module.in_channels = w.shape[0], w.shape[1]
        for module, idx in plan.keep_features.items():
            if isinstance(module, nn.PReLU):
                _set_param(module, "weight", module.weight.index_select(0, idx))
                module.num_parameters = idx.numel()
                continue
            for name in ("weight", "bias"):
                if module._parameters.get(name) is not None:
                    _set_param(module, name, module._parameters[name].index_select(0, idx))
            for name in ("running_mean", "running_var"):
                if module._buffers.get(name) is not None:
                    module._buffers[name] = module._buffers[name].index_select(0, idx).clone()
            module.num_features = idx.numel()


def _max_error(ref, new) -> tuple[float, float]:
    ref_leaves, ref_spec = tree_flatten(ref)
    new_leaves, new_spec = tree_flatten(new)
    if ref_spec != new_spec or len(ref_leaves) != len(new_leaves):
        return math.inf, 1.0
    err, scale = 0.0, 1.0
    for a, b in zip(ref_leaves, new_leaves):
        if isinstance(a, torch.Tensor):
            if not isinstance(b, torch.Tensor) or a.shape != b.shape:
                return math.inf, 1.0
            if a.numel():
                err = max(err, float((a.double() - b.double()).abs().max()))
                scale = max(scale, float(a.double().abs().max()))
    return err, scale


def shrink(model: nn.Module, example_input) -> nn.Module:
    """A new, physically smaller copy of ``model`` without its pruned channels.

    Channel pruning (``prune(model, s, method="channel")``) only *masks* channels: the
    model keeps its size and its speed. ``shrink`` removes them: a channel whose weights
    are all zero is cut from its layer (weight rows and bias), from the BatchNorm and
    PReLU that follow it (weight, bias, ``running_mean``, ``running_var``) and from the
    input of the next layer (for a ``Flatten`` into a ``Linear``, the block of
    ``H * W`` input features the channel occupies; the example input gives the shapes).
    In ``eval()`` mode the result computes the same outputs as the masked model, up to
    float rounding; ``shrink`` checks this on ``example_input`` before returning.

    What it handles: chains of ``Conv1d``/``Conv2d``/``Conv3d`` (``groups=1``),
    ``Linear``, BatchNorm, elementwise activations (``ReLU``, ``GELU``, ``Sigmoid``, ...,
    and their functional forms), max/average/adaptive pooling, ``Dropout``, ``Upsample``,
    ``Flatten`` (or ``x.view(x.size(0), -1)``), written as ``nn.Sequential`` (nested or
    not) or as a ``forward`` that ``torch.fx`` traces. Other parts of the model (a
    residual block nobody pruned, a softmax after the last layer) may be anything.

    Exactly which channels go:

    * A *dead* channel (all weights zero) outputs a constant: its bias, or 0. ``shrink``
      follows that constant through BatchNorm (with its running statistics, i.e. eval
      mode), activations and pooling. If it arrives at the next layer as zeros (always
      the case after ``method="channel"``, which masks the bias and the BatchNorm's
      weight and bias too), the channel is removed. If it arrives as a non-zero constant
      (e.g. the conv was masked but the BatchNorm's bias was not), it is removed and
      folded exactly into the next layer's bias (a bias is added if the layer had none);
      where that would not be exact (a next convolution with zero padding sees the
      constant only partly at the borders; average pooling that counts padding), the
      channel is kept.
    * A channel the next layer does not read (all its input weights there are zero, e.g.
      after kernel pruning) is removed too.
    * The output channels of the last layer are never removed: the model's output
      shape does not change. If every channel of a layer could go, one is kept.
    * Weights that are zero but not a whole channel (unstructured or kernel masks) stay
      as zeros in the smaller dense weights. Kernel pruning therefore shrinks nothing
      here: it saves storage in a sparse format (one index per kept kernel, see
      :func:`prunekit.sparse_storage_bits`) and time only with sparse kernels, not in
      a dense convolution.

    Args:
        model: a model, pruned (with ``prunekit`` or ``torch.nn.utils.prune``) or not.
            It is not modified.
        example_input: a tensor (or a tuple of tensors, the forward's arguments) on the
            model's device, e.g. one batch of images; it fixes every tensor's shape.

    Returns:
        A new model of the same class, with plain parameters (no ``weight_orig`` /
        ``weight_mask``; masked entries are stored as zeros), on the same device and with
        the same dtype and the same train/eval mode per module as ``model``. Module names
        are unchanged, so ``exclude=["fc"]`` still names the classifier. Build a new
        optimizer for it: its parameters are new objects.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``example_input`` is not a tensor.
        UnsupportedGraphError: (a ``ValueError``) the model cannot be traced by
            ``torch.fx``, or pruned channels flow into something ``shrink`` cannot rebuild
            exactly: a residual addition, a concatenation, a grouped or depthwise
            convolution, a tensor used by several operations, an operation it does not
            know. The message names the layer and the node; use
            :func:`prunekit.tp_prune` (Torch-Pruning's dependency graph) for such models.

    Examples:
        >>> import torch, prunekit as pk
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(
        ...     torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        ...     torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10)).eval()
        >>> _ = pk.prune(model, 0.5, method="channel", exclude=["4"])
        >>> x = torch.randn(2, 3, 8, 8)
        >>> small = pk.shrink(model, x)
        >>> small[0], small[4]
        (Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1)), Linear(in_features=144, out_features=10, bias=True))
        >>> bool((small(x) - model(x)).abs().max() < 1e-5)
        True
    """
    caller = "shrink"
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter of {caller} must be a torch.nn.Module. "
                        f"Got {type(model).__name__} instead.")
    inputs = check_example_input(example_input, caller)
    work = _copy_model(model)
    _strip_masks(work)
    modes = {name: m.training for name, m in work.named_modules()}
    work.eval()
    try:
        try:
            gm = torch.fx.symbolic_trace(work)
        except Exception as exc:  # noqa: BLE001
            raise UnsupportedGraphError(
                f"shrink could not trace {type(model).__name__} with torch.fx "
                f"({type(exc).__name__}: {exc}). shrink needs a forward without data-dependent "
                "control flow, so that it can see which layer feeds which. Torch-Pruning traces "
                "through autograd instead: see prunekit.tp_prune (torch_pruning.DependencyGraph)."
            ) from exc
        named = dict(gm.named_modules())
        with torch.no_grad():
            try:
                ShapeProp(gm).propagate(*inputs)
            except Exception as exc:  # noqa: BLE001
                raise UnsupportedGraphError(
                    f"shrink could not run {type(model).__name__} on example_input "
                    f"({type(exc).__name__}: {exc}). Pass an input the model accepts, on the "
                    "model's device."
                ) from exc
            reference = work(*inputs)
            plan = _plan_shrink(gm, named)
            _apply_plan(plan)
            try:
                output = work(*inputs)
            except Exception as exc:  # noqa: BLE001
                raise UnsupportedGraphError(
                    f"the shrunk {type(model).__name__} fails on example_input ({type(exc).__name__}: "
                    f"{exc}). Its forward probably hard-codes a channel count or a shape (e.g. "
                    f"x.view(-1, 512) instead of x.flatten(1)). {_TP_HINT}"
                ) from exc
        err, scale = _max_error(reference, output)
        dtype = next((p.dtype for p in work.parameters()), torch.float32)
        tol = (1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-3) * scale
        if not err <= tol:
            raise UnsupportedGraphError(
                f"the shrunk {type(model).__name__} does not compute what the masked model "
                f"computes (max |difference| {err:.3g} on example_input), so shrink refuses it. "
                f"Its forward probably depends on a channel count or a shape. {_TP_HINT}"
            )
    finally:
        for name, m in work.named_modules():
            m.training = modes.get(name, m.training)
    return work

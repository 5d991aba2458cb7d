"""``shrink``: a new, physically smaller model without the pruned channels."""

from __future__ import annotations

import math

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils._pytree import tree_flatten

from .._modules import WIDE, eval_mode
from .._validation import check_example_input, check_model
from ..reparam import copy_model, effective_tensor, strip_masks
from .graph import Blocked, State, all_zero, describe_node, is_layer, walk

__all__ = ["shrink", "UnsupportedGraphError"]


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


class _Plan:
    """The edits to make to the copy, collected before anything is changed."""

    def __init__(self):
        self.keep_out: dict[nn.Module, torch.Tensor] = {}
        self.keep_in: dict[nn.Module, torch.Tensor] = {}
        self.keep_features: dict[nn.Module, torch.Tensor] = {}  # BatchNorm, PReLU
        self.bias_delta: dict[nn.Module, torch.Tensor] = {}


def _refusal(layer_name, layer, n_dead, blocked: Blocked, named) -> UnsupportedGraphError:
    where = describe_node(blocked.node, named)
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


def _dead_channels(layer: nn.Module) -> int:
    w = effective_tensor(layer, "weight")
    weight_out = w.transpose(0, 1) if getattr(layer, "transposed", False) else w
    return int((~(weight_out != 0).reshape(weight_out.shape[0], -1).any(dim=1)).sum())


def _refuse_hidden_dead_channels(nodes, named) -> None:
    """Refuse pruned channels inside a module torch.fx calls as one operation (a leaf).

    torch.fx does not trace into torch's own modules (``nn.TransformerEncoderLayer``,
    ``nn.MultiheadAttention``...), so their inner layers are never planned: their dead
    channels would stay in the shrunk model. Say so instead of returning it.
    """
    for node in nodes:
        if node.op != "call_module":
            continue
        leaf = named[node.target]
        for inner_name, inner in leaf.named_modules():
            if not inner_name or not isinstance(inner, (nn.Linear, nn.modules.conv._ConvNd)):
                continue
            n_dead = _dead_channels(inner)
            if n_dead:
                raise UnsupportedGraphError(
                    f"shrink cannot remove the {n_dead} pruned output channel(s) of layer "
                    f"{node.target + '.' + inner_name!r} ({type(inner).__name__}): it sits inside "
                    f"{node.target!r} ({type(leaf).__name__}), which torch.fx runs as one "
                    "operation, so shrink cannot see where those channels go. Leave the layer "
                    f"dense (prune(..., exclude=[...])) or rebuild the block by hand. {_TP_HINT}"
                )


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
    _refuse_hidden_dead_channels(nodes, named)

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
            if not is_layer(layer):
                kind = ("transposed" if layer.transposed
                        else f"grouped (groups={layer.groups})")
                raise Blocked(node, f"it is a {kind} convolution, whose output channels are "
                                     "tied to its input channels")
            if call_counts[id(layer)] > 1:
                raise Blocked(node, "the module is called more than once")
            consumer, path, state = walk(node, layer, dead, named, call_counts)
        except Blocked as blocked:
            if n_dead and _has_layer_downstream(blocked.node, named, blocked.node is not node):
                raise _refusal(node.target, layer, n_dead, blocked, named) from None
            continue
        if consumer is None:  # the model's output: its width must not change
            continue
        cons = named[consumer.target]
        # modules whose tensors shrink would change must not be read elsewhere
        for module in [layer, cons] + [m for m, _ in path]:
            if id(module) in attr_owners:
                raise _refusal(node.target, layer, max(n_dead, 1), Blocked(
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


def _decide(layer, cons, state: State, dead: torch.Tensor, force_keep=None):
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
            all_zero(cons.padding) or cons.padding_mode != "zeros"):
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
        >>> small[0]
        Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1))
        >>> small[4]
        Linear(in_features=144, out_features=10, bias=True)
        >>> bool((small(x) - model(x)).abs().max() < 1e-5)
        True
    """
    caller = "shrink"
    check_model(model, caller)
    inputs = check_example_input(example_input, caller)
    work = copy_model(model)
    strip_masks(work)
    with eval_mode(work):
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
        tol = (1e-2 if dtype in WIDE else 1e-3) * scale
        if not err <= tol:
            raise UnsupportedGraphError(
                f"the shrunk {type(model).__name__} does not compute what the masked model "
                f"computes (max |difference| {err:.3g} on example_input), so shrink refuses it. "
                f"Its forward probably depends on a channel count or a shape. {_TP_HINT}"
            )
    return work

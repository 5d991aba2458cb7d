"""Channel pruning of residual networks through Torch-Pruning's dependency graph (optional)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import nn

from .. import scores as criteria
from .._modules import eval_mode
from .._validation import argument_error, check_choice, check_example_input, check_model, check_sparsity, invalid
from ..reparam import copy_model, strip_masks
from .rebuild import UnsupportedGraphError

__all__ = ["tp_prune", "PrunekitImportance", "TP_IMPORTANCES"]

#: the ``importance`` names :func:`prunekit.tp_prune` and :class:`prunekit.structured.PrunekitImportance` accept
TP_IMPORTANCES = ("l1", "l2", "taylor")


#: layers whose channels Torch-Pruning 1.x does not remove consistently (they fail inside it)
_UNSUPPORTED = {
    nn.MultiheadAttention: "its packed Q/K/V projection ties the embedding dimension of every "
                           "head (nn.TransformerEncoder/Decoder layers hold one)",
    nn.RNNBase: "its gates tie weight_ih and weight_hh of every layer and direction",
}


def _refuse_unsupported(model: nn.Module, caller: str) -> None:
    for name, module in model.named_modules():
        why = next((w for cls, w in _UNSUPPORTED.items() if isinstance(module, cls)), None)
        heads = getattr(module, "num_attention_heads", getattr(module, "num_heads", None))
        if why is None and isinstance(heads, int) and not isinstance(module, nn.Linear) and any(
                hasattr(module, q) for q in ("query", "q_proj", "q", "c_attn", "in_proj_weight")):
            why = ("its output is split into heads by reshaping, so channels removed without "
                   "the head structure silently change what each head computes")
        if why is not None:
            raise UnsupportedGraphError(
                    f"{caller} cannot prune the channels of {type(model).__name__}: layer "
                    f"{name!r} is a {type(module).__name__}, and {why}. Prune such models unstructured "
                    "(prunekit.prune with method='l1', 'wanda', ...), or prune the heads of a "
                    "Hugging Face model with Torch-Pruning directly (num_heads=...)."
                )


def _import_tp(caller: str):
    try:
        import torch_pruning as tp
    except ImportError as exc:
        raise ImportError(
            f"{caller} needs Torch-Pruning, an optional dependency of prunekit: "
            "pip install torch-pruning  (or: pip install 'prunekit[tp]')."
        ) from exc
    return tp


class PrunekitImportance:
    """A Torch-Pruning importance that scores channels with prunekit's criteria.

    Torch-Pruning calls ``importance(group)`` for each group of coupled layers and
    prunes the channels with the lowest scores. This class scores a channel by the
    layers whose *output* channels the group removes (each ``Conv``/``Linear`` whose
    filters go), with prunekit's criterion, and adds the scores of coupled layers (the
    convolutions feeding one residual addition). For a plain chain the group has one
    such layer, so the choice is exactly that of ``prune(model, s, method="channel")``.

    * ``"l1"`` / ``"l2"``: the Lp norm of each filter (``criteria.channel_scores``);
    * ``"taylor"``: ``sum |w * dL/dw|`` over each filter (Molchanov et al. 2019), from
      the gradients in ``.grad`` (run ``loss.backward()`` on the model first).

    Torch-Pruning's own ``GroupMagnitudeImportance`` differs: it averages squared norms
    over every layer of the group, including the next layer's input weights and the
    BatchNorm, and normalises per group.

    Once Torch-Pruning is imported, instances are also instances of
    ``torch_pruning.importance.Importance`` (registered as a virtual subclass).

    Args:
        criterion: ``"l1"``, ``"l2"`` or ``"taylor"``.

    Examples:
        >>> import prunekit as pk
        >>> pk.structured.PrunekitImportance("l2")
        PrunekitImportance('l2')
    """

    def __init__(self, criterion: str = "l1"):
        check_choice(criterion, TP_IMPORTANCES, "PrunekitImportance", "criterion")
        self.criterion = criterion
        try:
            import torch_pruning as tp

            tp.importance.Importance.register(PrunekitImportance)
        except ImportError:
            pass

    def __repr__(self) -> str:
        return f"PrunekitImportance({self.criterion!r})"

    def layer_scores(self, layer: nn.Module) -> torch.Tensor:
        """Scores of every output channel of one ``Conv``/``Linear`` layer (higher = keep)."""
        w = layer.weight.detach()
        if getattr(layer, "transposed", False):
            w = w.transpose(0, 1)
        if self.criterion == "taylor":
            grad = layer.weight.grad
            if grad is None:
                raise ValueError(
                    "PrunekitImportance('taylor') needs gradients: the layer "
                    f"{type(layer).__name__} has no .grad. Run loss.backward() on the model "
                    "before pruning."
                )
            g = grad.detach().transpose(0, 1) if getattr(layer, "transposed", False) else grad.detach()
            return (w * g).abs().reshape(w.shape[0], -1).sum(dim=1)
        return criteria.channel_scores(w, 1 if self.criterion == "l1" else 2)

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        """Scores of the group's channels, indexed like the group's root layer."""
        tp = _import_tp("PrunekitImportance")
        out_fns = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
        total = None
        for i, (dep, idxs) in enumerate(group):
            layer, fn = dep.target.module, dep.handler
            if fn not in out_fns or not isinstance(layer, (nn.Linear, nn.modules.conv._ConvNd)):
                continue
            root_idxs = group[i].root_idxs
            if any(r is None for r in root_idxs):
                continue
            scores = self.layer_scores(layer)[list(idxs)].double()
            if total is None:
                n = len(group[0].idxs)
                total = torch.zeros(n, dtype=torch.float64, device=scores.device)
            total.index_add_(0, torch.tensor(root_idxs, device=scores.device), scores)
        return None if total is None else total.float()


def _resolve_layers(model, work, layers, caller, name):
    """Map modules of ``model`` or their names to the corresponding modules of ``work``."""
    by_name = dict(work.named_modules())
    name_of = {id(m): n for n, m in model.named_modules()}
    out = []
    for item in layers:
        if isinstance(item, str):
            key = item
        elif isinstance(item, nn.Module) and id(item) in name_of:
            key = name_of[id(item)]
        else:
            raise argument_error(ValueError, name, caller, "must contain modules of the model "
                                 f"or their names. Got {item!r} instead.")
        if key not in by_name:
            raise argument_error(ValueError, name, caller, f"names {key!r}, which is not a "
                                 "module of the model.")
        out.append(by_name[key])
    return out


def tp_prune(model: nn.Module, example_input, sparsity, *, importance="l1",
             ignored_layers=None, round_to: int | None = None, global_pruning: bool = False,
             **pruner_options) -> nn.Module:
    """Channel-prune a copy of ``model`` with Torch-Pruning's dependency graph.

    Works on graphs :func:`prunekit.shrink` refuses: residual additions,
    concatenations, grouped and depthwise convolutions. Runs
    ``torch_pruning.pruner.BasePruner`` with :class:`prunekit.structured.PrunekitImportance` (or any
    Torch-Pruning importance you pass) on a deep copy, so the result is physically
    smaller and ``model`` is not modified. Masks already on ``model`` are made
    permanent in the copy first, so masked channels (norm 0) are the first to go.

    Args:
        model: the model (dense, or masked by prunekit).
        example_input: a tensor (or tuple) the model accepts; Torch-Pruning traces the
            graph through autograd with it.
        sparsity: fraction of each group's channels to remove, in [0, 1]
            (Torch-Pruning's ``pruning_ratio``: it keeps ``int(n * (1 - sparsity))``
            channels), or ``{layer_name: fraction}`` for per-layer ratios.
        importance: ``"l1"``, ``"l2"``, ``"taylor"`` (:class:`prunekit.structured.PrunekitImportance`; for
            Taylor, gradients must be in ``.grad``), or a Torch-Pruning importance
            object, e.g. ``torch_pruning.importance.GroupMagnitudeImportance(p=2)``.
        ignored_layers: modules (or names) whose output channels must stay, default:
            the last ``Linear``/``Conv`` layer of the model (the classifier), so the
            output shape does not change.
        round_to: keep channel counts multiples of this (e.g. 8, for fast kernels).
        global_pruning: rank all groups together instead of layer by layer.
        **pruner_options: passed to ``torch_pruning.pruner.BasePruner``.

    Returns:
        The pruned copy, with plain parameters, in the same train/eval mode as
        ``model``. Build a new optimizer for it.

    Raises:
        ImportError: Torch-Pruning is not installed (``pip install torch-pruning``).
        TypeError, ValueError: for a bad argument, or when pruning would change the
            model's output shape (pass ``ignored_layers``).

    Examples:
        >>> import importlib.util, torch, prunekit as pk
        >>> _ = torch.manual_seed(0)
        >>> model, x = pk.models.TinyResNet(), torch.randn(2, 3, 16, 16)
        >>> has_tp = importlib.util.find_spec("torch_pruning") is not None
        >>> small = pk.tp_prune(model, x, 0.5) if has_tp else None
        >>> not has_tp or (pk.count_parameters(small) < pk.count_parameters(model)
        ...                and small(x).shape == model(x).shape)
        True
    """
    caller = "tp_prune"
    check_model(model, caller)
    args = check_example_input(example_input, caller)
    inputs = args[0] if isinstance(example_input, torch.Tensor) else args
    if isinstance(sparsity, Mapping):
        ratios = {k: check_sparsity(v, caller, f"sparsity[{k!r}]") for k, v in sparsity.items()}
        default_ratio = 0.0
    else:
        ratios, default_ratio = None, check_sparsity(sparsity, caller)
    if isinstance(importance, str):
        imp = PrunekitImportance(check_choice(importance, TP_IMPORTANCES, caller, "importance"))
    elif callable(importance):
        imp = importance
    else:
        raise invalid(TypeError, "importance", caller,
                      f"one of {TP_IMPORTANCES} or a Torch-Pruning importance", repr(importance))
    tp = _import_tp(caller)
    _refuse_unsupported(model, caller)

    work = copy_model(model)
    for src, dst in zip(model.parameters(), work.parameters()):  # deepcopy drops .grad
        if src.grad is not None:
            dst.grad = src.grad.detach().clone()
    strip_masks(work)
    if ignored_layers is None:
        layers = [m for m in work.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
        ignored = layers[-1:]
    else:
        if isinstance(ignored_layers, (str, nn.Module)):
            ignored_layers = [ignored_layers]
        ignored = _resolve_layers(model, work, ignored_layers, caller, "ignored_layers")
    ratio_dict = None
    if ratios is not None:
        ratio_dict = dict(zip(_resolve_layers(model, work, list(ratios), caller, "sparsity"),
                              ratios.values()))
    with eval_mode(work), torch.enable_grad():
        with torch.no_grad():
            before = work(*args)
        try:
            pruner = tp.pruner.BasePruner(
                work, inputs, importance=imp, pruning_ratio=default_ratio,
                pruning_ratio_dict=ratio_dict, ignored_layers=ignored, round_to=round_to,
                global_pruning=global_pruning, **pruner_options)
            pruner.step()
            with torch.no_grad():
                after = work(*args)
        except Exception as exc:  # noqa: BLE001 - Torch-Pruning's own errors are not the user's
            raise UnsupportedGraphError(
                f"{caller}: Torch-Pruning could not prune {type(model).__name__} consistently "
                f"({type(exc).__name__}: {exc}). Leave the layers it cannot follow out with "
                "ignored_layers=[...], or prune them unstructured with prunekit.prune."
            ) from exc
    if sum(p.numel() for p in work.parameters()) == sum(p.numel() for p in model.parameters()) and (
            default_ratio > 0 or any(v > 0 for v in (ratios or {}).values())):
        warnings.warn(
            f"{caller}: Torch-Pruning removed no channel of {type(model).__name__} (its layers may "
            "be of types it does not know, such as Hugging Face's Conv1D); the copy is as large "
            "as the model.", stacklevel=2)
    if isinstance(before, torch.Tensor) and before.shape != after.shape:
        raise ValueError(
            f"{caller} would change the model's output shape from {tuple(before.shape)} to "
            f"{tuple(after.shape)}: pass the output layer(s) in 'ignored_layers'."
        )
    for p in work.parameters():
        p.grad = None
    return work

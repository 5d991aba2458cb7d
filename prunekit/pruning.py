"""``prune``: choose what to prune with a method, in a scope, and attach the masks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.utils.parametrize
from torch import nn

from ._modules import module_ids
from ._validation import check_choice, check_model, check_sparsity, check_weight
from .methods import get_method, plan_masks
from .reparam import attach_mask, effective_tensor
from .targets import Target, named_target, targets

__all__ = ["prune", "prunable_layers", "select_targets", "SCOPES"]

#: ``"layer"``: each layer loses its own fraction; ``"global"``: one ranking over all layers.
SCOPES = ("layer", "global")


def prunable_layers(model: nn.Module, method: str = "l1", exclude=(), include=()) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the tensors ``prune(model, ..., method=method)`` would prune.

    ``name`` is the layer's name for a ``weight`` and ``"<layer>.<tensor>"`` for other
    tensors (``"attn.in_proj_weight"``, ``"lstm.weight_hh_l0"``).
    """
    caller = "prunable_layers"
    check_model(model, caller)
    m = get_method(method, caller)
    return [(t.name, t.module) for t in select_targets(model, m, exclude, include, caller)]


def select_targets(model: nn.Module, method, exclude, include, caller: str) -> list[Target]:
    """The tensors ``method`` prunes: its default ones, less ``exclude``, plus ``include``.

    A tensor tied to an ``nn.Embedding`` (a language model's output layer sharing the token
    embedding) counts as an embedding: it is pruned only when ``include`` names it.
    """
    names = {n for n, _ in model.named_modules()}
    by_target = {t.name: t for t in targets(model)}
    items = _items(exclude)
    if not isinstance(items, list):
        module_ids(model, items, caller, "exclude")  # raises, naming the argument and value
    excluded_modules = module_ids(model, [e for e in items if not _is_tensor_name(e, names, by_target)],
                                  caller, "exclude")
    excluded_tensors = {e for e in items if _is_tensor_name(e, names, by_target)}
    chosen = [t for t in by_target.values()
              if id(t.module) not in excluded_modules and t.name not in excluded_tensors
              and method.applies_to(t.module) and method.applies_to_target(t)]
    for item in _items(include):
        if isinstance(item, nn.Module):
            item = dict((id(v), k) for k, v in model.named_modules()).get(id(item))
            if item is None:
                raise ValueError(f"The 'include' parameter of {caller} contains a module that is "
                                 "not part of the model.")
        t = named_target(model, item) if isinstance(item, str) else None
        if t is None:
            raise ValueError(
                f"The 'include' parameter of {caller} names {item!r}, which is neither a module "
                "with a 'weight' nor a parameter of the model (names as in model.named_modules() "
                "or model.named_parameters())."
            )
        if not method.applies_to_target(t):
            raise ValueError(f"The 'include' parameter of {caller} names {t.name!r}, which "
                             f"method={method.name!r} cannot prune.")
        if all(_param(c) is not _param(t) for c in chosen):
            chosen.append(t)
    return chosen


def _items(value):
    if value is None:
        return []
    if isinstance(value, (str, nn.Module)):
        return [value]
    if isinstance(value, Iterable):
        return list(value)
    return value  # not iterable: resolve_modules refuses it, naming the argument


def _is_tensor_name(item, module_names, by_target) -> bool:
    return isinstance(item, str) and item not in module_names and item in by_target


def _param(t: Target):
    return t.module._parameters.get(t.tensor + "_orig", t.module._parameters.get(t.tensor))


def prune(model: nn.Module, sparsity, *, method: str = "l1", scope: str = "layer",
          exclude=(), include=(), max_layer_sparsity: float | None = None,
          **method_options) -> nn.Module:
    """Prune ``model`` in place and return it.

    Args:
        model: any ``nn.Module``. By default the ``weight`` of every ``nn.Linear`` and
            ``nn.Conv*`` layer is pruned (``"channel"``: not transposed convs;
            ``"kernel"``: ``nn.Conv2d`` only).
        sparsity: the **absolute** fraction of units to prune, in [0, 1]: weights for
            ``"l1"``/``"l2"``, output channels for ``"channel"``, kernels for ``"kernel"``.
            Exactly ``round(sparsity * n)`` units are pruned. With ``scope="layer"`` it may
            also be a mapping ``{layer_name: sparsity}`` (a per-layer plan); only the
            named layers are pruned. Pruning an already pruned model again reaches the new
            target and keeps every pruned weight pruned.
        method: a name in ``prunekit.METHODS``:

            * ``"l1"``, ``"l2"``: magnitude;
            * ``"random"``: the baseline (option ``seed``);
            * ``"gradient"`` (``Σ|g|``), ``"taylor"`` (``|w·Σg|``), ``"fisher"`` (``w²·Σg²``):
              pass ``stats=`` from :func:`prunekit.gradients.collect_gradient_stats`, or
              ``loader=`` and ``loss_fn=`` (with ``max_batches``, ``mode``, ``device``,
              ``progress``) to collect them;
            * ``"kmeans"``: whole clusters of weights (option ``n_clusters``);
            * ``"channel"``, ``"kernel"``: structured (option ``p``).
        scope: ``"layer"``: every layer loses exactly its fraction. ``"global"``: one
            ranking over all layers' units, so layers end up with different sparsities
            (for ``"l1"`` the same choice as ``torch.nn.utils.prune.global_unstructured``).
            For channels the raw norms of different layers are compared as they are.
        exclude: modules, or their names as in ``model.named_modules()``, or tensor names as
            :func:`prunable_layers` gives them (``"attn.in_proj_weight"``), to leave dense (a
            common choice: the classifier, ShrinkBench's default).
        include: more tensors to prune: a module (its ``weight``, e.g. an ``nn.Embedding``)
            or any parameter by name (``"embed.weight"``, ``"blocks.0.gamma"``). Embeddings,
            and an output layer tied to the token embedding, are pruned only when named here;
            biases and normalisation parameters never by default.
        max_layer_sparsity: with ``scope="global"``, the largest fraction of any one
            layer's units that may be pruned (e.g. ``0.95``). One global ranking can empty a
            small layer whose weights happen to be small (its output then no longer depends
            on its input); prune warns, naming the layer, when that happens, and this cap
            prevents it. If the cap makes the requested sparsity unreachable, prune warns and
            prunes as much as the cap allows.
        **method_options: options of the method, e.g. ``p=2`` for ``"channel"``.

    Returns:
        ``model``, with ``weight_orig``/``weight_mask`` on every pruned layer. For
        ``"channel"`` the bias and the following BatchNorm's weight and bias are masked
        too, so a pruned channel outputs exactly zero.

    Raises:
        TypeError, ValueError: for a bad argument; the model is left untouched.

    Note:
        Masking makes weights zero; it does not make the model smaller or faster. Use
        :func:`prunekit.shrink` after channel pruning to remove channels physically.

    Examples:
        >>> import torch, prunekit as pk
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> _ = pk.prune(model, 0.5, method="l1", scope="global")
        >>> pk.sparsity(model)
        0.5
    """
    caller = "prune"
    check_model(model, caller)
    m = get_method(method, caller)
    check_choice(scope, SCOPES, caller, "scope")
    options = m.check_options(method_options, caller)
    if max_layer_sparsity is not None:
        if scope != "global":
            raise ValueError(
                "The 'max_layer_sparsity' parameter of prune applies only to scope='global' "
                f"(with scope='layer' every layer gets exactly its sparsity). Got scope={scope!r}."
            )
        max_layer_sparsity = check_sparsity(max_layer_sparsity, caller, "max_layer_sparsity")
        if not m.exact:
            raise ValueError(
                f"The 'max_layer_sparsity' parameter of prune needs a method that prunes exact "
                f"counts; method={method!r} does not."
            )
    layers = select_targets(model, m, exclude, include, caller)
    if not layers:
        raise ValueError(
            f"prune found no layers to prune with method={method!r} in {type(model).__name__} "
            f"(it prunes {m.describe_targets()}; excluded: {len(_items(exclude))} module(s))."
        )
    if isinstance(sparsity, Mapping):
        if scope != "layer":
            raise ValueError(
                "The 'sparsity' parameter of prune can be a per-layer mapping only with "
                f"scope='layer'. Got scope={scope!r} instead."
            )
        names = {t.name for t in layers}
        plan = {}
        for key, value in sparsity.items():
            if key not in names:
                raise ValueError(
                    f"The 'sparsity' parameter of prune names layer {key!r}, which is not a "
                    f"layer method={method!r} prunes here. Prunable layers: {sorted(names)}."
                )
            plan[key] = check_sparsity(value, caller, f"sparsity[{key!r}]")
        layers = [t for t in layers if t.name in plan]
        sparsity = plan
    else:
        sparsity = check_sparsity(sparsity, caller)
    for t in layers:
        if torch.nn.utils.parametrize.is_parametrized(t.module, t.tensor):
            raise ValueError(
                f"prune cannot mask layer {t.name or 'model'!r}: its {t.tensor} is parametrized "
                "(e.g. by prunekit.share_weights). Prune first, then share weights."
            )
        label = t.name if t.tensor != "weight" else f"{t.name or 'model'}.weight"
        check_weight(effective_tensor(t.module, t.tensor), caller, label)
    options = m.prepare(model, layers, options)

    masks = plan_masks(m, model, layers, sparsity, scope, options,  # nothing changed yet
                       max_layer_sparsity=max_layer_sparsity)
    for (module, tensor_name), keep in masks.items():
        attach_mask(module, tensor_name, keep, model)
    return model

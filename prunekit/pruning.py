"""``prune``: choose what to prune with a method, in a scope, and attach the masks."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import torch
import torch.nn.utils.parametrize
from torch import nn

from ._modules import module_ids
from ._validation import argument_error, check_choice, check_model, check_pattern, check_sparsity, check_weight, invalid
from .calibration import calibration_support, check_calibration, prune_calibrated
from .methods import get_method, plan_masks
from .reparam import attach_mask, check_mask_dtype, effective_tensor
from .reparam import mask_dtype as reparam_mask_dtype
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
                raise argument_error(ValueError, "include", caller, "contains a module that is "
                                 "not part of the model.")
        t = named_target(model, item) if isinstance(item, str) else None
        if t is None:
            raise argument_error(ValueError, "include", caller, f"names {item!r}, which is neither a module "
                "with a 'weight' nor one of the model's parameters (names as in model.named_modules() "
                "or model.named_parameters())."
            )
        if not method.applies_to_target(t):
            raise argument_error(ValueError, "include", caller, f"names {t.name!r}, which "
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


def prune(model: nn.Module, sparsity=None, *, method: str = "l1", scope: str = "layer",
          exclude=(), include=(), max_layer_sparsity: float | None = None, pattern=None,
          mask_dtype=None, **method_options) -> nn.Module:
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
            * ``"channel"``, ``"kernel"``: structured (option ``p``);
            * ``"wanda"`` (``|W_ij|·||X_j||``, per output row; Sun et al. 2024) and
              ``"sparsegpt"`` (Frantar & Alistarh 2023; options ``blocksize=128``,
              ``percdamp=0.01``): one-shot, from the inputs each layer sees. Pass
              ``calibration=``: an iterable of batches, each a tensor, a tuple/list whose
              first element is the model input (what a DataLoader yields) or a mapping of
              keyword inputs, run as ``model(batch)``. With ``sequential=True`` (default)
              layers are pruned in the order the model calls them and each one's statistics
              come from inputs that passed through the already pruned earlier layers;
              ``sequential=False`` takes every layer's statistics from the dense model.
              **SparseGPT changes the kept weights**, not only the mask: it stores the
              updated values in ``weight_orig`` (``remove`` and ``state_dict`` keep them).
              Not for RNN weights (prunekit cannot see the hidden states they multiply):
              prune warns and leaves them dense.
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
        pattern: ``"N:M"`` semi-structured sparsity (``"2:4"``, ``"4:8"``) for the
            weight-level methods (``"l1"``, ``"l2"``, ``"random"``, the gradient methods,
            ``"wanda"``, ``"sparsegpt"``): in every group of M consecutive weights along the
            input dimension at most N are kept (NVIDIA's convention, what
            ``torch.sparse.to_sparse_semi_structured`` expects; a conv groups input
            channels at each kernel position). ``sparsity`` must then be ``1 - N/M`` or
            omitted, ``scope`` ``"layer"``, and M must divide every pruned tensor's input
            dimension.
        mask_dtype: ``None`` (default): each mask is stored in its weight's dtype, as
            ``torch.nn.utils.prune`` does (a float32 model's masks take as much memory as
            its weights). ``torch.bool``: 1 byte per weight, a quarter of that for float32
            and half for float16, for models where memory is short (a language model
            pruned with ``"wanda"`` or ``"sparsegpt"``). The ``state_dict`` then holds bool
            ``weight_mask`` entries, and on a CPU every forward pass spends a little more
            time applying them (about 10-30 % per training step of a small MLP). Masks that
            already exist keep their dtype.
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
        >>> model = torch.nn.Sequential(
        ...     torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> _ = pk.prune(model, 0.5, method="l1", scope="global")
        >>> pk.sparsity(model)
        0.5
    """
    caller = "prune"
    check_model(model, caller)
    check_mask_dtype(mask_dtype, caller)
    with reparam_mask_dtype(mask_dtype):  # no wrapper frame: warnings keep pointing at the caller
        m = get_method(method, caller)
        check_choice(scope, SCOPES, caller, "scope")
        options = m.check_options(method_options, caller)
        nm = None
        if pattern is not None:
            nm = check_pattern(pattern, caller)
            if m.granularity != "weight" or not m.exact:
                raise invalid(ValueError, "pattern", caller,
                              "used with a method that ranks single weights (l1, l2, random, gradient, taylor, "
                              f"fisher, wanda, sparsegpt), not method={method!r}", repr(pattern))
            if scope != "layer":
                raise invalid(ValueError, "scope", caller, "'layer' with an N:M pattern (each group of M "
                              "weights keeps N)", repr(scope))
            implied = 1 - nm[0] / nm[1]
            if sparsity is None:
                sparsity = implied
            elif isinstance(sparsity, Mapping) or not _close(sparsity, implied):
                raise invalid(ValueError, "sparsity", caller,
                              f"omitted or 1 - N/M = {implied:g} with pattern={pattern!r}", repr(sparsity))
        elif sparsity is None:
            raise invalid(TypeError, "sparsity", caller,
                          "given (a fraction in [0, 1] or a per-layer mapping) unless pattern='N:M' is", "None")
        calibrated = m.needs == "calibration"
        if calibrated:
            batches = check_calibration(options["calibration"], caller)
            if scope != "layer":
                raise invalid(ValueError, "scope", caller,
                              f"'layer' for method={method!r} (it compares weights within each layer's rows)",
                              repr(scope))
        if max_layer_sparsity is not None:
            if scope != "global":
                raise argument_error(ValueError, "max_layer_sparsity", 'prune', "applies only to scope='global' "
                    f"(with scope='layer' every layer gets exactly its sparsity). Got scope={scope!r}."
                )
            max_layer_sparsity = check_sparsity(max_layer_sparsity, caller, "max_layer_sparsity")
            if not m.exact:
                raise argument_error(ValueError, "max_layer_sparsity", 'prune', f"needs a method that prunes exact "
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
                raise argument_error(ValueError, "sparsity", 'prune', "can be a per-layer mapping only with "
                    f"scope='layer'. Got scope={scope!r} instead."
                )
            names = {t.name for t in layers}
            plan = {}
            for key, value in sparsity.items():
                if key not in names:
                    raise argument_error(ValueError, "sparsity", 'prune', f"names layer {key!r}, which is not a "
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
        if nm is not None:
            _check_groups(layers, nm, pattern, caller)
        if calibrated:
            _warn_left_dense(model, m, layers, exclude, include, caller)

            def apply(cal):
                s = sparsity[cal.target.name] if isinstance(sparsity, Mapping) else sparsity
                m.prune_target(model, cal, s, nm, options)

            prune_calibrated(model, layers, batches, apply, hessian=m.hessian,
                             sequential=options["sequential"], caller=caller)
            return model
        options = m.prepare(model, layers, options)

        masks = plan_masks(m, model, layers, sparsity, scope, options,  # nothing changed yet
                           max_layer_sparsity=max_layer_sparsity, pattern=nm)
        for (module, tensor_name), keep in masks.items():
            attach_mask(module, tensor_name, keep, model)
        return model


def _close(sparsity, implied: float) -> bool:
    return isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool) and abs(sparsity - implied) < 1e-9


def _check_groups(layers: list[Target], nm: tuple[int, int], pattern, caller: str) -> None:
    """Every tensor has an input dimension that M divides (checked before anything changes)."""
    for t in layers:
        w = effective_tensor(t.module, t.tensor)
        if w.dim() < 2:
            raise invalid(ValueError, "pattern", caller,
                          f"used on tensors with an input dimension; {t.name!r} is {w.dim()}-D", repr(pattern))
        n_in = w.shape[t.layout.in_dim]
        if n_in % nm[1]:
            raise invalid(ValueError, "pattern", caller,
                          f"an N:M pattern whose M divides every pruned tensor's input dimension; {t.name!r} "
                          f"has {n_in} inputs (exclude it, or pick another M)", repr(pattern))


def _warn_left_dense(model, method, layers, exclude, include, caller) -> None:
    """Warn about weight tensors magnitude pruning would prune but ``method`` cannot (RNN weights)."""
    chosen = {t.name for t in layers}
    skipped = [t.name for t in select_targets(model, get_method("l1", caller), exclude, (), caller)
               if t.name not in chosen]
    if skipped:
        warnings.warn(
            f"method={method.name!r} leaves {len(skipped)} weight tensor(s) dense: {skipped[:6]}"
            f"{' ...' if len(skipped) > 6 else ''} ({calibration_support(_target(model, skipped[0]))}). "
            "pk.sparsity_report shows what was pruned; prune them with method='l1' if you want them sparse.",
            stacklevel=3,
        )


def _target(model, name):
    return {t.name: t for t in targets(model)}[name]

"""Model-level pruning through ``torch.nn.utils.prune``.

:func:`prune` chooses what to prune with a *method* (a registered :class:`Method`), in a
*scope* (each layer on its own, or one ranking across layers), and attaches the result
with torch's re-parametrisation: the parameter moves to ``weight_orig`` (the same
``Parameter`` object, so an optimizer built earlier keeps training it), the mask is the
buffer ``weight_mask``, and a forward pre-hook recomputes ``weight = weight_orig *
weight_mask``. Gradients of pruned entries are therefore zero: fine-tuning keeps the mask.

Beyond torch:

* ``copy.deepcopy`` works on a pruned model (torch's fails after a forward pass,
  pytorch/pytorch#37322), because ``module.weight`` is a :class:`PrunedTensor`;
  ``pickle`` and ``torch.save`` of the whole model work too.
* :func:`load_state_dict` loads a pruned model's ``state_dict`` into a fresh model.
* Pruning again with a higher sparsity reaches the new absolute target and never revives
  a pruned weight (masks are nested).
* Every argument is validated and every mask computed before the model is touched, so a
  bad call leaves the model exactly as it was.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import torch
import torch.nn.utils.parametrize
from torch import nn
from torch._C import _disabled_torch_function_impl
from torch.nn.utils import prune as torch_prune

from . import criteria
from ._validation import check_choice, check_p, check_sparsity, check_weight
from .masks import expand_channel_mask, expand_kernel_mask, keep_lowest_pruned, n_to_prune

__all__ = [
    "prune",
    "remove",
    "load_state_dict",
    "effective_tensor",
    "prunable_layers",
    "Method",
    "PrunedTensor",
    "register_method",
    "METHODS",
    "SCOPES",
    "PRUNABLE_TYPES",
]

#: Layer types whose ``weight`` prunekit prunes by default.
PRUNABLE_TYPES = (nn.Linear, nn.modules.conv._ConvNd)
#: ``"layer"``: each layer loses its own fraction; ``"global"``: one ranking over all layers.
SCOPES = ("layer", "global")


# --------------------------------------------------------------------------------------
# Re-parametrisation: torch's mechanism, plus a hook that keeps the model copyable.
# --------------------------------------------------------------------------------------


class PrunedTensor(torch.Tensor):
    """The type of ``module.weight`` on a layer pruned by prunekit: ``weight_orig * weight_mask``.

    torch stores the pruned tensor as a plain attribute that, after a forward pass with
    gradients, is a non-leaf tensor; ``copy.deepcopy`` refuses those, so torch's pruned
    models cannot be copied (pytorch/pytorch#37322). This subclass behaves exactly like the
    tensor it wraps (it stays on the autograd graph, so a loss built from ``layer.weight``
    still trains ``weight_orig``; torch functions return plain tensors) but copies and
    pickles as a detached snapshot.
    """

    __torch_function__ = _disabled_torch_function_impl

    def __deepcopy__(self, memo):
        return _rebuild_pruned(self.detach().as_subclass(torch.Tensor).clone())

    def __reduce_ex__(self, protocol):
        return (_rebuild_pruned, (self.detach().as_subclass(torch.Tensor).clone(),))


def _rebuild_pruned(tensor: torch.Tensor) -> PrunedTensor:
    return tensor.as_subclass(PrunedTensor)


class PrunekitMask(torch_prune.CustomFromMask):
    """torch's ``CustomFromMask`` hook, used for every mask prunekit attaches.

    It behaves like torch's (``torch.nn.utils.prune.is_pruned`` and
    ``torch.nn.utils.prune.remove`` recognise it); before each forward it sets
    ``module.weight`` to ``weight_orig * weight_mask`` as a :class:`PrunedTensor`, so the
    model stays copyable. The mask itself lives in the module's ``<name>_mask`` buffer.
    """

    PRUNING_TYPE = "unstructured"

    def __call__(self, module, inputs):
        setattr(module, self._tensor_name, self.apply_mask(module).as_subclass(PrunedTensor))


def pruned_tensor_names(module: nn.Module) -> list[str]:
    """Names of tensors of ``module`` re-parametrised by a mask (``weight``, ``bias``, ...)."""
    return [
        key[: -len("_orig")]
        for key in module._parameters
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in module._buffers
    ]


def effective_tensor(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The tensor the module computes with, ``orig * mask`` if pruned, without gradient.

    Unlike ``module.weight`` after training steps, this is never stale: it is computed from
    the current ``weight_orig`` and ``weight_mask``.
    """
    if name in pruned_tensor_names(module):
        with torch.no_grad():
            return getattr(module, name + "_orig") * getattr(module, name + "_mask")
    return getattr(module, name).detach()


def _refresh(module: nn.Module, name: str) -> None:
    """Recompute ``module.<name>`` from orig and mask, on the autograd graph like torch does."""
    orig, mask = getattr(module, name + "_orig"), getattr(module, name + "_mask")
    setattr(module, name, (orig * mask).as_subclass(PrunedTensor))


def attach_mask(module: nn.Module, name: str, keep: torch.Tensor) -> None:
    """Attach a boolean keep-mask to ``module.<name>``, nested inside any existing mask."""
    if name in pruned_tensor_names(module):
        buf = getattr(module, name + "_mask")
        with torch.no_grad():
            buf.mul_(keep.to(device=buf.device, dtype=buf.dtype))
    else:
        tensor = getattr(module, name)
        PrunekitMask.apply(module, name, keep.to(device=tensor.device))
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, PrunekitMask) and hook._tensor_name == name:
                hook.mask = None  # the buffer holds the mask; don't keep a second copy
    _refresh(module, name)


def _current_keep(module: nn.Module, name: str) -> torch.Tensor | None:
    if name in pruned_tensor_names(module):
        return getattr(module, name + "_mask") != 0
    return None


# --------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------


class _Units:
    """How a granularity groups a weight into units and expands unit masks back."""

    @staticmethod
    def count(weight: torch.Tensor, granularity: str) -> int:
        if granularity == "weight":
            return weight.numel()
        if granularity == "channel":
            return weight.shape[0]
        return weight.shape[0] * weight.shape[1]

    @staticmethod
    def pruned(keep: torch.Tensor, granularity: str) -> torch.Tensor:
        """Units whose every entry is masked, shaped like the unit scores."""
        if granularity == "weight":
            return ~keep
        if granularity == "channel":
            return ~keep.reshape(keep.shape[0], -1).any(dim=1)
        return ~keep.any(dim=3).any(dim=2)

    @staticmethod
    def expand(unit_keep: torch.Tensor, shape: torch.Size, granularity: str) -> torch.Tensor:
        if granularity == "weight":
            return unit_keep.view(shape)
        if granularity == "channel":
            return expand_channel_mask(unit_keep, shape)
        return expand_kernel_mask(unit_keep.view(shape[0], shape[1]), shape)


class Method:
    """A way of choosing what to prune. Subclass it and :func:`register_method` it.

    A score-based method only implements :meth:`scores` (higher = more important, one
    score per unit); :meth:`plan` then handles both scopes, exact counts, ties, nesting
    with earlier masks, and (for channels) biases and BatchNorm. Methods that do not
    rank units one by one (k-means prunes whole clusters) override :meth:`plan`.

    Attributes:
        name: the ``method=`` string.
        granularity: ``"weight"``, ``"channel"`` (dim 0 of the weight) or ``"kernel"``.
        options: keyword options ``prune`` accepts for this method, with defaults.
    """

    name: str = ""
    granularity: str = "weight"
    options: dict = {}

    def applies_to(self, module: nn.Module) -> bool:
        """Which layers the method prunes by default."""
        return isinstance(module, PRUNABLE_TYPES)

    def check_options(self, options: dict, caller: str) -> dict:
        """Refuse unknown options (``TypeError`` listing the valid ones); fill in defaults."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(repr(k) for k in self.options) or "none"
            raise TypeError(
                f"{caller}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))} "
                f"for method={self.name!r}. Valid options for this method: {valid}."
            )
        return {**self.options, **options}

    def prepare(self, model: nn.Module, layers: list[tuple[str, nn.Module]], options: dict) -> dict:
        """Validate options against the model, compute shared inputs (e.g. gradients)."""
        return options

    def scores(self, name: str, module: nn.Module, weight: torch.Tensor, options: dict) -> torch.Tensor:
        """Importance of each unit of ``weight`` (layer ``name``); higher = kept longer.

        Shaped like ``weight`` for ``granularity="weight"``, ``(out,)`` for channels and
        ``(out, in)`` for kernels. Must be finite.
        """
        raise NotImplementedError

    # -- the generic score-based planner ------------------------------------------------

    def plan(self, model, layers, sparsity, scope, options, caller="prune"):
        """Return ``{(module, tensor_name): keep_mask}`` for every tensor to mask."""
        g = self.granularity
        weights = [effective_tensor(m, "weight") for _, m in layers]
        current = [_current_keep(m, "weight") for _, m in layers]
        unit_scores, already = [], []
        for (name, module), w, cur in zip(layers, weights, current):
            s = self.scores(name, module, w, options)
            if cur is None:
                pruned = torch.zeros(s.shape, dtype=torch.bool, device=s.device)
            else:
                pruned = _Units.pruned(cur, g).view(s.shape).to(s.device)
            unit_scores.append(s.masked_fill(pruned, float("-inf")))
            already.append(pruned)

        unit_keep = []
        if scope == "layer":
            for (name, _), s, pruned in zip(layers, unit_scores, already):
                target = sparsity[name] if isinstance(sparsity, Mapping) else sparsity
                k = self._count(target, s.numel(), int(pruned.sum()), name)
                unit_keep.append(keep_lowest_pruned(s, k).view(s.shape))
        else:
            dtype = unit_scores[0].dtype
            for s in unit_scores[1:]:
                dtype = torch.promote_types(dtype, s.dtype)
            device = unit_scores[0].device
            flat = torch.cat([s.reshape(-1).to(device=device, dtype=dtype) for s in unit_scores])
            k = self._count(sparsity, flat.numel(), int(sum(int(p.sum()) for p in already)), "model")
            keep = keep_lowest_pruned(flat, k)
            for s, part in zip(unit_scores, keep.split([s.numel() for s in unit_scores])):
                unit_keep.append(part.view(s.shape).to(s.device))

        masks = {}
        followers = self.followers(model, layers) if g == "channel" else {}
        for (name, module), w, cur, uk in zip(layers, weights, current, unit_keep):
            keep = _Units.expand(uk, w.shape, g)
            masks[(module, "weight")] = keep if cur is None else keep & cur
            if g == "channel":
                if getattr(module, "bias", None) is not None:
                    masks[(module, "bias")] = uk
                bn = followers.get(module)
                if bn is not None and bn.affine:
                    masks[(bn, "weight")] = uk
                    masks[(bn, "bias")] = uk
        return masks

    def followers(self, model, layers):
        from .structured import following_batchnorms

        return following_batchnorms(model)

    def _count(self, sparsity: float, n_units: int, n_already: int, where: str) -> int:
        k = n_to_prune(sparsity, n_units)
        if k < n_already:
            warnings.warn(
                f"{where}: {n_already} of {n_units} units are already pruned "
                f"({n_already / n_units:.1%}), more than the requested sparsity {sparsity:g}. "
                "prunekit never revives pruned weights, so the mask stays as it is.",
                stacklevel=4,
            )
            return n_already
        return k


class MagnitudeMethod(Method):
    """Unstructured magnitude pruning, ``|w|`` (``"l1"``) or ``w**2`` (``"l2"``).

    Both rank single weights identically; the two names exist because the book compares
    them as *regularisers* and for groups, where they differ.
    """

    granularity = "weight"
    options: dict = {}

    def __init__(self, name: str, p: int):
        self.name, self.p = name, p

    def scores(self, name, module, weight, options):
        return criteria.magnitude_scores(weight, self.p)


class RandomMethod(Method):
    """Unstructured random pruning: the baseline every experiment needs (option ``seed``).

    Scores are uniform random numbers from a generator seeded with ``seed`` (default 0),
    drawn per layer in model order, so the same call prunes the same weights.
    """

    name = "random"
    granularity = "weight"
    options = {"seed": 0}

    def prepare(self, model, layers, options):
        from ._validation import check_int

        check_int(options["seed"], "prune", "seed")
        options = dict(options)
        options["_generator"] = torch.Generator().manual_seed(options["seed"])
        return options

    def scores(self, name, module, weight, options):
        r = torch.rand(weight.shape, generator=options["_generator"], dtype=torch.float64)
        return r.to(weight.device)


class ChannelMethod(Method):
    """Whole output channels by Lp norm (option ``p``, default 1), with bias and BatchNorm."""

    name = "channel"
    granularity = "channel"
    options = {"p": 1}

    def applies_to(self, module):
        return isinstance(module, nn.Linear) or (
            isinstance(module, nn.modules.conv._ConvNd) and not module.transposed
        )

    def check_options(self, options, caller):
        options = super().check_options(options, caller)
        check_p(options["p"], caller)
        return options

    def scores(self, name, module, weight, options):
        return criteria.channel_scores(weight, options["p"])


class KernelMethod(ChannelMethod):
    """Whole ``k x k`` kernels of ``Conv2d`` layers by Lp norm (option ``p``, default 1)."""

    name = "kernel"
    granularity = "kernel"

    def applies_to(self, module):
        return isinstance(module, nn.Conv2d)

    def scores(self, name, module, weight, options):
        return criteria.kernel_scores(weight, options["p"])


#: method name -> :class:`Method` instance; extended by :func:`register_method`.
METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Make ``method`` available as ``prune(..., method=method.name)``."""
    if not isinstance(method, Method) or not method.name:
        raise TypeError(f"register_method expects a named Method instance. Got {method!r} instead.")
    METHODS[method.name] = method
    return method


register_method(MagnitudeMethod("l1", 1))
register_method(MagnitudeMethod("l2", 2))
register_method(RandomMethod())
register_method(ChannelMethod())
register_method(KernelMethod())


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def _check_model(model, caller: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"The 'model' parameter of {caller} must be a torch.nn.Module. "
            f"Got {type(model).__name__} instead."
        )
    return model


def resolve_modules(model: nn.Module, items, caller: str, param: str) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for modules given as objects or names (as in ``named_modules()``).

    ``items`` may be one module or name, or an iterable of them; duplicates are dropped.
    Anything that is not part of ``model`` is refused, naming ``param`` and the value.
    """
    if isinstance(items, (str, nn.Module)):
        items = [items]
    if not isinstance(items, Iterable):
        raise TypeError(
            f"The {param!r} parameter of {caller} must be a module, a module name, or an "
            f"iterable of them. Got {items!r} instead."
        )
    named = list(model.named_modules())
    by_name = dict(named)
    name_of = {}
    for n, m in named:
        name_of.setdefault(id(m), n)
    out, seen = [], set()
    for item in items:
        if isinstance(item, str):
            if item not in by_name:
                close = [n for n in by_name if n and (item in n or n in item)][:5]
                hint = f" Did you mean one of {close}?" if close else ""
                raise ValueError(
                    f"The {param!r} parameter of {caller} names {item!r}, which is not a module "
                    f"of the model (names as in model.named_modules()).{hint}"
                )
            name, module = item, by_name[item]
        elif isinstance(item, nn.Module):
            if id(item) not in name_of:
                raise ValueError(
                    f"The {param!r} parameter of {caller} contains a {type(item).__name__} "
                    "that is not part of the model."
                )
            name, module = name_of[id(item)], item
        else:
            raise TypeError(
                f"The {param!r} parameter of {caller} must contain modules or module names. "
                f"Got {item!r} instead."
            )
        if id(module) not in seen:
            seen.add(id(module))
            out.append((name, module))
    return out


def _resolve_exclude(model: nn.Module, exclude, caller: str) -> set[int]:
    if exclude is None:
        return set()
    return {id(m) for _, m in resolve_modules(model, exclude, caller, "exclude")}


def prunable_layers(model: nn.Module, method: str = "l1", exclude=()) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the layers ``prune(model, ..., method=method)`` would prune."""
    caller = "prunable_layers"
    _check_model(model, caller)
    m = METHODS[check_choice(method, METHODS, caller, "method")]
    skip = _resolve_exclude(model, exclude, caller)
    return [(n, mod) for n, mod in model.named_modules() if m.applies_to(mod) and id(mod) not in skip]


def prune(model: nn.Module, sparsity, *, method: str = "l1", scope: str = "layer",
          exclude=(), **method_options) -> nn.Module:
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
        method: one of ``prunekit.METHODS``:

            * ``"l1"``, ``"l2"``: magnitude (chapter 1);
            * ``"random"``: the baseline (option ``seed``);
            * ``"gradient"`` (``Σ|g|``), ``"taylor"`` (``|w·Σg|``), ``"fisher"`` (``w²·Σg²``):
              chapter 2; pass ``stats=`` from :func:`prunekit.gradients.collect_gradient_stats`, or
              ``loader=`` and ``loss_fn=`` (with ``max_batches``, ``mode``, ``device``,
              ``progress``) to collect them;
            * ``"kmeans"``: whole clusters of weights (chapter 3; option ``n_clusters``);
            * ``"channel"``, ``"kernel"``: structured (chapter 4; option ``p``).
        scope: ``"layer"``: every layer loses exactly its fraction. ``"global"``: one
            ranking over all layers' units, so layers end up with different sparsities
            (for ``"l1"`` the same choice as ``torch.nn.utils.prune.global_unstructured``).
            For channels the raw norms of different layers are compared as they are.
        exclude: modules, or their names as in ``model.named_modules()``, to leave dense
            (a common choice: the classifier, ShrinkBench's default).
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
    _check_model(model, caller)
    check_choice(method, METHODS, caller, "method")
    check_choice(scope, SCOPES, caller, "scope")
    m = METHODS[method]
    options = m.check_options(method_options, caller)
    skip = _resolve_exclude(model, exclude, caller)
    layers = [(n, mod) for n, mod in model.named_modules() if m.applies_to(mod) and id(mod) not in skip]
    if not layers:
        raise ValueError(
            f"prune found no layers to prune with method={method!r} in {type(model).__name__} "
            f"(it prunes {_describe_targets(m)}; excluded: {len(skip)} module(s))."
        )
    if isinstance(sparsity, Mapping):
        if scope != "layer":
            raise ValueError(
                "The 'sparsity' parameter of prune can be a per-layer mapping only with "
                f"scope='layer'. Got scope={scope!r} instead."
            )
        names = {n for n, _ in layers}
        plan = {}
        for key, value in sparsity.items():
            if key not in names:
                raise ValueError(
                    f"The 'sparsity' parameter of prune names layer {key!r}, which is not a "
                    f"layer method={method!r} prunes here. Prunable layers: {sorted(names)}."
                )
            plan[key] = check_sparsity(value, caller, f"sparsity[{key!r}]")
        layers = [(n, mod) for n, mod in layers if n in plan]
        sparsity = plan
    else:
        sparsity = check_sparsity(sparsity, caller)
    for name, module in layers:
        if torch.nn.utils.parametrize.is_parametrized(module, "weight"):
            raise ValueError(
                f"prune cannot mask layer {name or 'model'!r}: its weight is parametrized "
                "(e.g. by prunekit.share_weights). Prune first, then share weights."
            )
        check_weight(effective_tensor(module, "weight"), caller, f"{name or 'model'}.weight")
    options = m.prepare(model, layers, options)

    masks = m.plan(model, layers, sparsity, scope, options, caller)  # nothing changed yet
    for (module, tensor_name), keep in masks.items():
        attach_mask(module, tensor_name, keep)
    return model


def _describe_targets(m: Method) -> str:
    if isinstance(m, KernelMethod):
        return "nn.Conv2d weights"
    if isinstance(m, ChannelMethod):
        return "nn.Linear and non-transposed nn.Conv* weights"
    return "nn.Linear and nn.Conv* weights"


def remove(model: nn.Module) -> nn.Module:
    """Make pruning permanent: drop ``*_orig``/``*_mask`` and the hooks, keep the zeros.

    Works on a whole model (torch's ``prune.remove`` takes one module and one name). The
    forward pass is unchanged; the model's ``state_dict`` has plain ``weight`` keys again.
    Nothing stops later training from making the zeros non-zero: prune again or keep the
    masks while training.

    Returns:
        ``model``.
    """
    _check_model(model, "remove")
    for module in model.modules():
        for name in pruned_tensor_names(module):
            torch_prune.remove(module, name)
    return model


def load_state_dict(model: nn.Module, state_dict: Mapping, strict: bool = True):
    """Load a *pruned* model's ``state_dict`` into a fresh (unpruned) model of the same class.

    A pruned model saves ``fc.weight_orig`` and ``fc.weight_mask`` instead of ``fc.weight``,
    which a fresh model's ``load_state_dict`` rejects. This helper first gives the fresh
    model the same re-parametrisation (all-ones masks), then loads, so masks and weights
    come back exactly and pruning stays in force.

    Args:
        model: the fresh model (it may already be pruned; masks are then overwritten).
        state_dict: from ``pruned_model.state_dict()`` (e.g. via
            ``torch.load(path, weights_only=True)``).
        strict: passed to ``nn.Module.load_state_dict``.

    Returns:
        What ``nn.Module.load_state_dict`` returns (missing and unexpected keys). On error the
        model is left as it was.

    Examples:
        >>> import torch, prunekit as pk
        >>> pruned = pk.prune(torch.nn.Linear(4, 2), 0.5)
        >>> fresh = torch.nn.Linear(4, 2)
        >>> _ = pk.load_state_dict(fresh, pruned.state_dict())
        >>> torch.equal(fresh.weight, pruned.weight)
        True
    """
    _check_model(model, "load_state_dict")
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            "The 'state_dict' parameter of load_state_dict must be a mapping from "
            f"names to tensors. Got {type(state_dict).__name__} instead."
        )
    named = dict(model.named_modules())
    added = []
    # nn.Module.load_state_dict copies every matching tensor before it raises, so keep a
    # backup (values and parameter order) to restore the model exactly on failure.
    backup = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    orders = {id(m): list(m._parameters) for m in named.values()}
    for key in state_dict:
        if not key.endswith("_orig"):
            continue
        path, _, tensor_name = key[: -len("_orig")].rpartition(".")
        module = named.get(path)
        if (module is None or key[: -len("_orig")] + "_mask" not in state_dict
                or tensor_name in pruned_tensor_names(module)
                or not isinstance(getattr(module, tensor_name, None), torch.Tensor)):
            continue
        ones = torch.ones_like(getattr(module, tensor_name), dtype=torch.bool)
        attach_mask(module, tensor_name, ones)
        added.append((module, tensor_name))
    try:
        result = model.load_state_dict(state_dict, strict=strict)
    except Exception:
        for module, tensor_name in added:  # undo: identity masks leave values unchanged
            torch_prune.remove(module, tensor_name)
        for module, _ in added:  # torch's remove re-appends the parameter: restore the order
            for k in orders[id(module)]:
                module._parameters[k] = module._parameters.pop(k)
        with torch.no_grad():
            for k, v in model.state_dict(keep_vars=True).items():
                v.copy_(backup[k])
        for module in model.modules():
            for tensor_name in pruned_tensor_names(module):
                _refresh(module, tensor_name)
        raise
    for module in model.modules():
        for tensor_name in pruned_tensor_names(module):
            _refresh(module, tensor_name)
    return result

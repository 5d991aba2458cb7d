"""``compare``: a fair comparison of pruning methods on your model (same start, same budget, seeds)."""

from __future__ import annotations

import copy
import inspect
import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from . import training
from ._modules import last_layer, model_device, resolve_modules
from ._progress import progress_bar
from ._validation import (
    argument_error,
    check_bool,
    check_callable,
    check_choice,
    check_int,
    check_loss_fn,
    check_sparsity,
    invalid,
)
from .comparison_result import Comparison
from .gradients import collect_gradient_stats
from .measure import count_macs, count_parameters, sparse_storage_bits
from .measure import sparsity as achieved_sparsity
from .measure.latency import time_calls
from .measure.storage import default_index_bits
from .methods import METHODS
from .pruning import SCOPES, prunable_layers, prune
from .reparam import effective_tensor
from .structured import UnsupportedGraphError, shrink
from .targets import targets

__all__ = ["compare", "Comparison", "DEFAULT_METHODS"]

#: What :func:`compare` runs when ``methods`` is not given (those that apply to the model).
DEFAULT_METHODS = (
    "random",
    "l1",
    {"method": "l1", "scope": "global"},
    "l2",
    "gradient",
    "taylor",
    "kmeans",
    "kernel",
    "channel",
)

_CALLER = "compare"


@dataclass(frozen=True)
class _Spec:
    label: str
    method: str
    scope: str
    options: dict


def _label(method: str, scope: str, options: dict) -> str:
    extra = [scope] if scope != "layer" else []
    extra += [f"{k}={v}" for k, v in options.items() if k not in ("stats", "loader", "loss_fn", "info")]
    return method + (f" ({', '.join(extra)})" if extra else "")


def _parse_methods(methods, probe: nn.Module, exclude, explicit: bool) -> list[_Spec]:
    if isinstance(methods, (str, Mapping)) or not isinstance(methods, Sequence):
        raise invalid(TypeError, "methods", _CALLER, "a list of method names or dicts such as "
                      "{'method': 'l1', 'scope': 'global'}", repr(methods))
    if not methods:
        raise argument_error(ValueError, "methods", _CALLER, "must not be empty.")
    specs = []
    for i, item in enumerate(methods):
        where = f"methods[{i}]"
        if isinstance(item, str):
            item = {"method": item}
        if not isinstance(item, Mapping) or "method" not in item:
            raise invalid(TypeError, where, _CALLER, "a method name or a dict with a 'method' key",
                          repr(item))
        item = dict(item)
        name = check_choice(item.pop("method"), METHODS, _CALLER, f"{where}['method']")
        scope = check_choice(item.pop("scope", "layer"), SCOPES, _CALLER, f"{where}['scope']")
        label = item.pop("label", None)
        known = set(METHODS[name].options)
        unknown = sorted(set(item) - known)
        if unknown:
            raise argument_error(ValueError, where, _CALLER, f"has option(s) {unknown} that method "
                                 f"{name!r} does not take; it takes {sorted(known) or 'none'}.")
        if label is None:
            label = _label(name, scope, item)
        elif not isinstance(label, str) or not label:
            raise invalid(TypeError, where + "[label]", _CALLER, "a non-empty string", repr(label))
        if not prunable_layers(probe, name, exclude):
            if explicit:
                raise argument_error(
                    ValueError, where, _CALLER, f"asks for method {name!r}, which finds no layer "
                    f"to prune in {type(probe).__name__} (excluded: "
                    f"{sorted(exclude) if exclude else 'none'}).")
            continue  # a default method that does not apply (e.g. "kernel" on an MLP)
        specs.append(_Spec(label, name, scope, item))
    labels = [s.label for s in specs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise argument_error(ValueError, "methods", _CALLER, f"gives the same label to several "
                             f"methods: {dupes}. Add a 'label' key to tell them apart.")
    return specs


def _check_values(values, name: str, check) -> list:
    """A non-empty list (numpy arrays and tensors too) of distinct valid values."""
    if isinstance(values, torch.Tensor) or type(values).__module__ == "numpy":
        values = values.tolist()
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise invalid(TypeError, name, _CALLER, "a non-empty list", repr(values))
    values = list(values)
    if not values:
        raise invalid(ValueError, name, _CALLER, "a non-empty list", "[]")
    out = [check(v, _CALLER, f"{name}[{i}]") for i, v in enumerate(values)]
    if len(set(out)) != len(out):
        raise argument_error(ValueError, name, _CALLER, f"has repeated values: {values!r}.")
    return out


def _check_step(value, name: str, function: Callable):
    """``value`` is a dict of keyword arguments of ``function`` or a callable(model)."""
    if callable(value):
        return value
    if not isinstance(value, Mapping):
        raise invalid(TypeError, name, _CALLER, f"a dict of options of prunekit.training."
                      f"{function.__name__} or a callable(model)", repr(value))
    allowed = set(inspect.signature(function).parameters) - {"model", "loader", "kwargs"}
    allowed |= set(inspect.signature(training.train).parameters) - {"model", "loader"}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise argument_error(ValueError, name, _CALLER, f"has option(s) {unknown} that "
                             f"prunekit.training.{function.__name__} does not take.")
    return dict(value)


def _first_batch(loader, name: str) -> torch.Tensor:
    try:
        batch = next(iter(loader))
    except StopIteration:
        raise argument_error(ValueError, name, _CALLER, "yielded no batches.") from None
    except TypeError:
        raise invalid(TypeError, name, _CALLER, "an iterable of (inputs, targets) batches",
                      repr(loader)) from None
    x = batch[0] if isinstance(batch, (tuple, list)) else None
    if not isinstance(x, torch.Tensor):
        raise argument_error(TypeError, name, _CALLER, "must yield (inputs, targets) with a tensor "
                             f"of inputs. Got a batch of type {type(batch).__name__} instead.")
    return x


def _build(model_fn, seed: int) -> nn.Module:
    training.seed_everything(seed)
    model = model_fn()
    if not isinstance(model, nn.Module):  # the function's result, not an argument itself
        raise argument_error(TypeError, "model_fn", _CALLER, "must return a torch.nn.Module. "
                             f"Got {type(model).__name__} instead.")
    return model


def _run_step(step, model: nn.Module, loader, fine: bool) -> None:
    if callable(step):
        step(model)
    elif fine:
        training.fine_tune(model, loader, **{"progress": False, **step})
    else:
        training.train(model, loader, **{"progress": False, **step})


def _deployable(model: nn.Module, example: torch.Tensor, use_shrink: bool):
    """The smallest dense model equal to ``model`` (``shrink``), or ``model`` if not possible."""
    if not use_shrink:
        return model, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return shrink(model, example).eval(), True
    except UnsupportedGraphError:
        return model, False


def _stored_bits(model: nn.Module, fmt: str) -> int:
    """Bits of all parameters at 32 bits per value: each Linear/Conv weight in the smaller of
    a dense tensor and the sparse format ``fmt`` with relative indices of
    :func:`~prunekit.measure.storage.default_index_bits` bits (5 for Linear, 8 for conv,
    gaps longer than the index costing filler entries), every other parameter dense."""
    total, weights = 0, 0
    for t in targets(model):
        w = effective_tensor(t.module, t.tensor).detach()
        weights += w.numel()
        dense = sparse_storage_bits(w, "dense")
        if fmt != "dense":  # the book's convention: Deep Compression's relative indices
            sparse = sparse_storage_bits(w, fmt, index_bits=default_index_bits(t.module))
            dense = min(dense, sparse)
        total += dense
    return total + 32 * (count_parameters(model) - weights)


def _storage_format(method: str) -> str:
    granularity = METHODS[method].granularity
    return {"channel": "dense", "kernel": "kernel"}.get(granularity, "fine")


def compare(model_fn: Callable[[], nn.Module], train_loader, test_loader, *,
            methods=None, sparsities=(0.5, 0.75, 0.9, 0.95, 0.98), seeds=(0, 1, 2),
            train=None, fine_tune=None, evaluate=None, loss_fn=None, val_loader=None,
            exclude="classifier", gradient_batches: int | None = None,
            use_shrink: bool = True, latency: bool = True, latency_batch: int = 32,
            latency_repeats: int = 20, threads: int | None = None,
            progress: bool = True) -> Comparison:
    """Compare pruning methods fairly on one model: same start, same budget, many seeds.

    For each seed: seed every RNG, build ``model_fn()``, train it (``train``), evaluate it.
    Then for each method and sparsity: copy that dense model, seed every RNG again, prune
    the copy (:func:`prunekit.prune`), evaluate it, fine-tune it (``fine_tune``, the same
    budget for every method), evaluate it again, and measure it. A row therefore depends
    only on (seed, method, sparsity), not on which other methods ran.

    Measured per row (see :class:`Comparison` for the columns): achieved sparsity;
    accuracy before and after fine-tuning; the **compression ratio** (all parameters of the
    dense model / non-zero parameters of the pruned one) and **theoretical speed-up** (MACs
    of the dense model / MACs by non-zero weights), both as ShrinkBench defines them; the
    **storage ratio** of a real format (32-bit values plus Deep Compression's relative
    indices, 5 bits for Linear and 8 for conv weights, as :func:`prunekit.compression_report`
    counts them: one per non-zero weight, one per kept kernel for ``"kernel"``, none for a
    shrunk dense model; each weight stored in whichever of that and a dense tensor is
    smaller);
    the **dense speed-up** (MACs that a dense implementation still computes); and, where
    pruning removed structure that :func:`prunekit.shrink` can cut out (channels; also
    neurons that unstructured pruning killed entirely), the median CPU latency of the
    shrunk model against the dense one. Masking alone never makes a model faster: rows
    without removed structure have no latency.

    Args:
        model_fn: ``model_fn()`` returns a new model (called after seeding, so its
            initialisation follows the seed). To compare on a model you already trained,
            return a copy of it and pass ``train={"epochs": 0}``.
        train_loader: ``(inputs, targets)`` batches for training, fine-tuning and the
            gradient statistics of ``"gradient"``/``"taylor"``/``"fisher"``.
        test_loader: batches for evaluation; its first batch also fixes the example input
            (MACs, :func:`prunekit.shrink`) and the latency batch.
        methods: a list of method names (``prunekit.METHODS``) or dicts such as
            ``{"method": "l1", "scope": "global", "label": "l1 global"}`` (other keys
            are the method's options). Default: :data:`DEFAULT_METHODS` that apply to the
            model (``"kernel"`` needs ``Conv2d`` layers). ``"random"`` gets the run's
            seed unless you give one; gradient methods get statistics collected once per
            seed on the dense model (``gradient_batches`` batches of ``train_loader``).
        sparsities: the requested sparsities, each in [0, 1] (a list or an array). What a sparsity counts
            depends on the method (weights, kernels, channels: see
            :func:`prunekit.prune`), which is why results are best read against the
            achieved compression, not the request.
        seeds: one dense model per seed; report mean ± std over them.
        train: options of :func:`prunekit.training.train` for the dense model (default
            ``{"epochs": 5}``), or a callable ``train(model)`` that trains in place.
        fine_tune: options of :func:`prunekit.training.fine_tune` (default
            ``{"epochs": 1}``), or a callable ``fine_tune(model)``. ``{"epochs": 0}``
            skips fine-tuning.
        evaluate: ``evaluate(model) -> float`` (higher is better); default top-1
            accuracy on ``test_loader`` (:func:`prunekit.training.evaluate`).
        loss_fn: loss for the gradient statistics; default ``nn.CrossEntropyLoss()``.
        val_loader: optional validation batches; each row then also records
            ``val_accuracy`` (after fine-tuning) and ``dense_val_accuracy``, so that choices
            (``Comparison.best_within(on="val_accuracy")``) are made off the test set.
        exclude: layers every method leaves dense (names as in ``model.named_modules()``,
            or modules). The default ``"classifier"`` excludes the last ``nn.Linear`` /
            ``nn.Conv*`` layer in ``named_modules()`` order (the output layer of most
            models; name yours if it is registered earlier), as ShrinkBench does: pruning
            it silences whole classes. ``()`` prunes every layer.
        gradient_batches: batches for the gradient statistics (``None``: all).
        use_shrink: rebuild each pruned model without its dead channels/neurons
            (:func:`prunekit.shrink`) before counting and timing; models it cannot
            rebuild (residual networks) are measured as masked.
        latency: measure latency where structure was removed.
        latency_batch: batch size of the latency measurement (taken from the first test
            batch).
        latency_repeats: timed calls per latency measurement (median reported).
        threads: torch threads for the latency measurement (default: current setting).
        progress: show a progress bar (one step per trained or fine-tuned model).

    Returns:
        A :class:`Comparison`: ``print`` it, call ``.summary()``, ``.plot()``,
        ``.best_within()`` or ``.to_pandas()``, or read ``.rows``.

    Raises:
        TypeError, ValueError: for a bad argument, before anything is trained.

    Examples:
        >>> import torch, prunekit as pk
        >>> train, test = pk.data.loaders("digits")
        >>> result = pk.compare(
        ...     lambda: pk.models.MLP(hidden=(32,)), train, test,
        ...     methods=["random", "l1"], sparsities=[0.5, 0.9], seeds=[0],
        ...     train={"epochs": 2}, fine_tune={"epochs": 1}, progress=False)
        >>> len(result.rows)
        4
        >>> sorted(result.rows[0])[:4]
        ['accuracy', 'achieved_sparsity', 'compression_ratio', 'dense_accuracy']
        >>> best = result.best_within(tolerance=0.05)
        >>> best["l1"]["sparsity"] >= best["random"]["sparsity"]
        True
    """
    check_callable(model_fn, _CALLER, "model_fn", "a callable that returns a new model")
    sparsities = _check_values(sparsities, "sparsities", check_sparsity)
    seeds = _check_values(seeds, "seeds", lambda v, c, n: check_int(v, c, n, minimum=0))
    train = _check_step({"epochs": 5} if train is None else train, "train", training.train)
    fine_tune = _check_step({"epochs": 1} if fine_tune is None else fine_tune, "fine_tune",
                            training.fine_tune)
    if evaluate is not None:
        check_callable(evaluate, _CALLER, "evaluate", "a callable(model) -> float")
    if loss_fn is not None:
        check_loss_fn(loss_fn, _CALLER)
    if gradient_batches is not None:
        check_int(gradient_batches, _CALLER, "gradient_batches", minimum=1)
    latency_batch = check_int(latency_batch, _CALLER, "latency_batch", minimum=1)
    latency_repeats = check_int(latency_repeats, _CALLER, "latency_repeats", minimum=1)
    if threads is not None:
        check_int(threads, _CALLER, "threads", minimum=1)
    for name, flag in (("use_shrink", use_shrink), ("latency", latency), ("progress", progress)):
        check_bool(flag, _CALLER, name)
    _first_batch(train_loader, "train_loader")
    x_test = _first_batch(test_loader, "test_loader")
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    score = evaluate or (lambda m: training.evaluate(m, test_loader))
    if val_loader is not None:
        _first_batch(val_loader, "val_loader")

    probe = _build(model_fn, seeds[0])  # to check methods and exclude before any training
    if isinstance(exclude, str) and exclude == "classifier":
        last = last_layer(probe)
        if last is None:
            raise ValueError(f"{_CALLER} found no nn.Linear/nn.Conv* layer in "
                             f"{type(probe).__name__}: nothing to prune.")
        exclude = [last[0]]
    elif isinstance(exclude, str):
        raise invalid(TypeError, "exclude", _CALLER, "'classifier' or a list of layer names or "
                      "modules", repr(exclude))
    else:  # names, as model_fn builds a new model (new module objects) for every seed
        exclude = [name for name, _ in resolve_modules(probe, exclude, _CALLER, "exclude")]
    specs = _parse_methods(DEFAULT_METHODS if methods is None else methods, probe, exclude,
                           explicit=methods is not None)
    if not specs:
        raise ValueError(f"None of the default methods finds a layer to prune in "
                         f"{type(probe).__name__} with exclude={exclude!r}.")
    del probe

    settings = {
        "methods": [s.label for s in specs], "sparsities": sparsities, "seeds": seeds,
        "train": train if not callable(train) else getattr(train, "__name__", "callable"),
        "fine_tune": (fine_tune if not callable(fine_tune)
                      else getattr(fine_tune, "__name__", "callable")),
        "exclude": exclude, "latency_batch": latency_batch, "threads": threads,
        "use_shrink": use_shrink,
    }
    rows, dense_rows = [], []
    bar = progress_bar(total=len(seeds) * (1 + len(specs) * len(sparsities)), desc=_CALLER,
                       enabled=progress)
    try:
        for seed in seeds:
            bar.set_postfix_str(f"seed {seed}: dense", refresh=False)
            dense = _build(model_fn, seed)
            device = model_device(dense)
            example = x_test[:1].to(device)
            x_lat = x_test[:latency_batch].to(device)
            _run_step(train, dense, train_loader, fine=False)
            dense.eval()
            dense_acc = float(score(dense))
            dense_val = None if val_loader is None else training.evaluate(dense, val_loader)
            dense_params = count_parameters(dense)
            dense_macs = count_macs(dense, example)
            dense_rows.append({"seed": seed, "accuracy": dense_acc, "params": dense_params,
                               "macs": dense_macs, "val_accuracy": dense_val})
            bar.update(1)
            stats = None
            needed = sorted({METHODS[s.method].statistic for s in specs if _needs_stats(s)})
            if needed:
                stats = collect_gradient_stats(dense, train_loader, loss_fn, statistics=needed,
                                               max_batches=gradient_batches)
            for spec in specs:
                options = dict(spec.options)
                if "seed" in METHODS[spec.method].options:
                    options.setdefault("seed", seed)
                if _needs_stats(spec):
                    options["stats"] = stats
                for s in sparsities:
                    bar.set_postfix_str(f"seed {seed}: {spec.label} @ {s:g}", refresh=False)
                    start = time.perf_counter()
                    model = copy.deepcopy(dense)
                    training.seed_everything(seed)
                    prune(model, s, method=spec.method, scope=spec.scope, exclude=exclude, **options)
                    model.eval()
                    pruned_acc = float(score(model))
                    training.seed_everything(seed)  # the same batches for every row of a seed,
                    _run_step(fine_tune, model, train_loader, fine=True)  # whatever prune drew
                    model.eval()
                    acc = float(score(model))
                    seconds = time.perf_counter() - start
                    row = {"method": spec.label, "sparsity": s, "seed": seed,
                           "achieved_sparsity": achieved_sparsity(model),
                           "dense_accuracy": dense_acc, "pruned_accuracy": pruned_acc,
                           "accuracy": acc, "dense_val_accuracy": dense_val,
                           "val_accuracy": None if val_loader is None
                           else training.evaluate(model, val_loader)}
                    row.update(_measure(model, spec.method, example, x_lat, dense, dense_params,
                                        dense_macs, use_shrink, latency, latency_repeats, threads))
                    row["seconds"] = seconds
                    rows.append(row)
                    bar.update(1)
    finally:
        bar.close()
    return Comparison(rows=rows, dense=dense_rows, settings=settings)


def _measure(model, method, example, x_lat, dense, dense_params, dense_macs,
             use_shrink, latency, repeats, threads) -> dict:
    deployed, shrunk = _deployable(model, example, use_shrink)
    params = count_parameters(deployed, nonzero_only=True)
    macs_nz = count_macs(deployed, example, nonzero_only=True)
    macs = count_macs(deployed, example)
    fmt = _storage_format(method)  # how this method's weights would be stored
    if fmt == "dense" and not shrunk:
        fmt = "fine"  # channels that could not be cut out are stored as sparse weights
    bits = _stored_bits(deployed, fmt)
    out = {
        "params": params, "dense_params": dense_params,
        "compression_ratio": dense_params / params if params else math.inf,
        "storage_ratio": 32 * dense_params / bits if bits else math.inf,  # dense: 32 bits each
        "macs": macs_nz, "dense_macs": dense_macs,
        "theoretical_speedup": dense_macs / macs_nz if macs_nz else math.inf,
        "dense_speedup": dense_macs / macs if macs else math.inf,
        "latency_ms": None, "dense_latency_ms": None, "measured_speedup": None,
        "shrunk": shrunk,
    }
    if latency and shrunk and macs < dense_macs:
        before, after = _paired_latency(dense, deployed, x_lat, repeats, threads)
        out.update(latency_ms=after, dense_latency_ms=before, measured_speedup=before / after)
    return out


def _paired_latency(a: nn.Module, b: nn.Module, x: torch.Tensor, repeats: int, threads) -> tuple:
    """Median latency (ms) of ``a`` and ``b``, timed alternately so drift hits both alike."""
    (ta, tb), _ = time_calls([a, b], (x,), warmup=2, repeats=repeats, threads=threads)
    return statistics.median(ta), statistics.median(tb)


def _needs_stats(spec) -> bool:
    """A gradient method whose statistics ``compare`` collects (none given in its options)."""
    return (METHODS[spec.method].needs == "gradients" and "stats" not in spec.options
            and "loader" not in spec.options)

"""Every argument check and message: ``The 'x' parameter of f must be ... Got ... instead.``"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping

import torch

__all__ = [
    "invalid",
    "argument_error",
    "describe",
    "check_model",
    "check_sparsity",
    "check_choice",
    "check_p",
    "check_weight",
    "check_int",
    "check_bool",
    "check_callable",
    "check_example_input",
    "check_same_shape",
    "check_loader",
    "check_loss_fn",
    "check_options",
]


def describe(value) -> str:
    """A short description of a value for error messages (tensors by shape and dtype)."""
    if isinstance(value, torch.Tensor):
        return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    text = repr(value)
    return text if len(text) <= 80 else f"a {type(value).__name__}"


def argument_error(exc: type[Exception], name: str, caller: str, says: str) -> Exception:
    """``The 'name' parameter of caller <says>``: for what the "must be" form cannot say.

    E.g. ``says="yielded no batches."`` or ``"names 'fc9', which is not a module ..."``;
    ``says`` is inserted as it is, final full stop included.
    """
    return exc(f"The {name!r} parameter of {caller} {says}")


def invalid(exc: type[Exception], name: str, caller: str, must: str, got: str) -> Exception:
    """The exception for a bad argument: ``The 'name' parameter of caller must be must. Got got instead.``

    ``got`` is inserted as it is: pass ``repr(value)`` or :func:`describe` ``(value)``.
    """
    return argument_error(exc, name, caller, f"must be {must}. Got {got} instead.")


def _fail(exc: type[Exception], name: str, caller: str, must: str, value) -> Exception:
    return invalid(exc, name, caller, must, repr(value))


def check_model(model, caller: str, name: str = "model"):
    """``model`` is a ``torch.nn.Module``."""
    if not isinstance(model, torch.nn.Module):
        raise invalid(TypeError, name, caller, "a torch.nn.Module", type(model).__name__)
    return model


def check_sparsity(value, caller: str, name: str = "sparsity") -> float:
    """Return ``value`` as a float in [0, 1], or raise naming the argument and the value.

    Booleans are refused even though ``bool`` is a subclass of ``int``: ``sparsity=True``
    is almost certainly a mistake, not a request to prune everything.
    """
    must = "a real number in the range [0, 1]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
            value = value.item()
        else:
            raise _fail(TypeError, name, caller, must, value)
    value = float(value)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise _fail(ValueError, name, caller, must, value)
    return value


def check_choice(value, options: Iterable[str], caller: str, name: str) -> str:
    """Raise unless ``value`` is one of ``options`` (listed in the message)."""
    options = list(options)
    if not isinstance(value, str) or value not in options:
        listed = ", ".join(repr(o) for o in options)
        exc = ValueError if isinstance(value, str) else TypeError
        raise _fail(exc, name, caller, f"one of {{{listed}}}", value)
    return value


def check_p(value, caller: str) -> int:
    """The norm order: 1 or 2 (booleans refused)."""
    if isinstance(value, bool) or value not in (1, 2):
        exc = TypeError if not isinstance(value, numbers.Real) or isinstance(value, bool) else ValueError
        raise _fail(exc, "p", caller, "1 or 2", value)
    return int(value)


def check_int(value, caller: str, name: str, *, minimum: int | None = None) -> int:
    """An integer (not bool), optionally at least ``minimum``."""
    must = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(TypeError, name, caller, must, value)
    if minimum is not None and value < minimum:
        raise _fail(ValueError, name, caller, must, value)
    return int(value)


def check_bool(value, caller: str, name: str) -> bool:
    """``True`` or ``False`` (not 0/1, not None)."""
    if not isinstance(value, bool):
        raise _fail(TypeError, name, caller, "True or False", value)
    return value


def check_callable(value, caller: str, name: str, must: str = "callable"):
    """A callable; ``must`` says which kind (``"a callable(model) -> float"``)."""
    if not callable(value):
        raise invalid(TypeError, name, caller, must, describe(value))
    return value


def _describe(t) -> str:
    return describe(t) if isinstance(t, torch.Tensor) else repr(t)


def check_weight(weight, caller: str, name: str = "weight", *, ndim: int | None = None,
                 min_ndim: int | None = None, finite: bool = True) -> torch.Tensor:
    """A non-empty floating-point tensor with only finite values.

    ``ndim`` requires an exact number of dimensions (4 for a conv kernel mask),
    ``min_ndim`` a lower bound (2 for channel masks). ``finite=False`` skips the pass over
    the values, for callers that check them more cheaply (e.g. after sorting) and call
    again with ``finite=True`` for the message.
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(
            f"The {name!r} parameter of {caller} must be a torch.Tensor. "
            f"Got {type(weight).__name__} instead."
        )
    if not weight.is_floating_point():
        raise TypeError(
            f"The {name!r} parameter of {caller} must be a floating-point tensor. "
            f"Got {_describe(weight)} instead."
        )
    if weight.numel() == 0:
        raise ValueError(
            f"The {name!r} parameter of {caller} must be a non-empty tensor. "
            f"Got {_describe(weight)} instead."
        )
    if ndim is not None and weight.dim() != ndim:
        raise ValueError(
            f"The {name!r} parameter of {caller} must be a {ndim}-D tensor "
            f"(out_channels, in_channels, kH, kW). Got {_describe(weight)} instead."
        )
    if min_ndim is not None and weight.dim() < min_ndim:
        raise ValueError(
            f"The {name!r} parameter of {caller} must have at least {min_ndim} dimensions "
            f"(dim 0 indexes output channels). Got {_describe(weight)} instead."
        )
    if not finite:
        return weight
    lo, hi = torch.aminmax(weight.detach())  # one pass; NaN and +-inf propagate to lo/hi
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        bad = int((~torch.isfinite(weight)).sum())
        raise ValueError(
            f"The {name!r} parameter of {caller} must contain only finite values. "
            f"Got {_describe(weight)} with {bad} NaN or infinite entries instead."
        )
    return weight


def check_example_input(example_input, caller: str, name: str = "example_input") -> tuple:
    """A tensor, or a non-empty tuple/list of tensors (one per forward argument), as a tuple.

    A ``torch.nn.utils.rnn.PackedSequence`` counts as a tensor (what recurrent layers take).
    """
    def ok(t):
        return isinstance(t, torch.Tensor) or type(t).__name__ == "PackedSequence"

    if ok(example_input):  # a PackedSequence is itself a tuple: check it first
        return (example_input,)
    if isinstance(example_input, (tuple, list)) and example_input and all(map(ok, example_input)):
        return tuple(example_input)
    raise TypeError(
        f"The {name!r} parameter of {caller} must be a torch.Tensor (or a tuple of tensors, "
        f"one per forward argument). Got {type(example_input).__name__} instead."
    )


def check_same_shape(a: torch.Tensor, b, caller: str, name_a: str, name_b: str) -> None:
    if not isinstance(b, torch.Tensor) or b.shape != a.shape:
        got = _describe(b)
        raise ValueError(
            f"The {name_b!r} parameter of {caller} must have the same shape as {name_a!r} "
            f"{tuple(a.shape)}. Got {got} instead."
        )


def check_loader(loader, caller: str, name: str = "loader") -> None:
    """An iterable of ``(inputs, targets)`` batches (a tensor, string or mapping is refused)."""
    if isinstance(loader, (torch.Tensor, str, bytes, Mapping)) or not isinstance(loader, Iterable):
        raise invalid(TypeError, name, caller, "an iterable of (inputs, targets) batches, such "
                      "as a torch DataLoader", describe(loader))


def check_loss_fn(loss_fn, caller: str, name: str = "loss_fn") -> None:
    """A callable ``loss_fn(outputs, targets) -> scalar tensor``."""
    if not callable(loss_fn):
        raise invalid(TypeError, name, caller, "a callable loss_fn(outputs, targets) -> scalar "
                      "tensor, such as torch.nn.CrossEntropyLoss()", describe(loss_fn))


def check_options(options: Mapping, defaults: Mapping, caller: str, what: str) -> dict:
    """Refuse keyword options not in ``defaults`` (``TypeError`` listing the valid ones); fill defaults."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        valid = ", ".join(repr(k) for k in defaults) or "none"
        raise TypeError(
            f"{caller}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))} "
            f"for {what}. Valid options for this method: {valid}."
        )
    return {**defaults, **options}


def check_pattern(pattern, caller: str, name: str = "pattern") -> tuple[int, int]:
    """``"N:M"`` (or ``(N, M)``) as ``(n, m)`` with ``1 <= n < m``."""
    must = "an N:M pattern such as '2:4' or (2, 4), with 1 <= N < M"
    if isinstance(pattern, str):
        parts = pattern.split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise invalid(ValueError, name, caller, must, repr(pattern))
        n, m = (int(p) for p in parts)
    elif (isinstance(pattern, (tuple, list)) and len(pattern) == 2
          and all(isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in pattern)):
        n, m = (int(p) for p in pattern)
    else:
        raise invalid(TypeError, name, caller, must, repr(pattern))
    if not 1 <= n < m:
        raise invalid(ValueError, name, caller, must, repr(pattern))
    return n, m

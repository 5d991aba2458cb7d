"""Figures (matplotlib, imported when a function runs): curves with bands, histograms, masks."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

import torch
from torch import nn

from ._validation import invalid
from .reparam import effective_tensor
from .targets import targets

__all__ = ["summarize", "mean_std", "band", "plot_curves", "plot_weight_histograms", "plot_mask",
           "plot_input_mask"]


def _axes(ax, figsize=(6, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def mean_std(values) -> tuple:
    """Mean and sample standard deviation (0 for one value; ``None`` values are skipped).

    Returns ``(None, None)`` when nothing was measured and a NaN standard deviation when a
    value is infinite.
    """
    values = [float(v) for v in values if v is not None]
    if not values:
        return None, None
    if len(values) < 2:
        return values[0], 0.0
    if any(math.isinf(v) for v in values):
        return statistics.fmean(values), math.nan
    return statistics.fmean(values), statistics.stdev(values)


def band(ax, xs, mean, std, *, label, alpha: float = 0.2, **style):
    """A line of means with markers and a shaded band of one standard deviation; the line."""
    line, = ax.plot(xs, mean, marker="o", markersize=3, label=label, **style)
    ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                    color=line.get_color(), alpha=alpha, linewidth=0)
    return line


def summarize(records, x: str, y: str, by: str = "method") -> dict:
    """Mean and standard deviation of ``y`` per ``(by, x)`` over repeated runs (seeds).

    Args:
        records: iterable of dicts (one per run), e.g. ``{"method": "l1", "sparsity": 0.9,
            "seed": 0, "accuracy": 0.97}``.
        x, y, by: keys of the x value, the measured value and the grouping.

    Returns:
        ``{group: [(x, mean, std, n), ...]}`` with x ascending; ``std`` is the sample
        standard deviation (0 for a single run).

    Examples:
        >>> from prunekit.plotting import summarize
        >>> rows = [{"method": "l1", "s": 0.5, "acc": a} for a in (0.9, 1.0)]
        >>> summarize(rows, "s", "acc")
        {'l1': [(0.5, 0.95, 0.07071067811865474, 2)]}
    """
    groups = defaultdict(lambda: defaultdict(list))
    for r in records:
        groups[r[by]][r[x]].append(float(r[y]))
    out = {}
    for g, per_x in groups.items():
        rows = []
        for xv in sorted(per_x):
            vals = per_x[xv]
            mean, std = mean_std(vals)
            rows.append((xv, mean, std, len(vals)))
        out[g] = rows
    return out


def plot_curves(records, x: str, y: str, by: str = "method", *, ax=None, xlabel=None,
                ylabel=None, title=None, reference=None, reference_label="dense",
                percent_x: bool = False, logx: bool = False, styles=None):
    """Mean ± one standard deviation of ``y`` against ``x``, one line per group, with bands.

    Args:
        records: dicts as for :func:`summarize`.
        x, y, by: keys; one line per value of ``by``.
        ax: matplotlib axes to draw on (a new figure if ``None``).
        xlabel, ylabel, title: labels (default: the keys).
        reference: optional horizontal line (e.g. the dense model's accuracy).
        percent_x: format x ticks as percentages (for sparsity).
        logx: logarithmic x axis (for compression ratios).
        styles: optional ``{group: dict(color=..., linestyle=...)}``.

    Returns:
        The axes.
    """
    ax = _axes(ax)
    for group, rows in summarize(records, x, y, by).items():
        xs = [r[0] for r in rows]
        mean = [r[1] for r in rows]
        std = [r[2] for r in rows]
        band(ax, xs, mean, std, label=str(group), **dict((styles or {}).get(group, {})))
    if reference is not None:
        ax.axhline(reference, color="black", linestyle=":", linewidth=1, label=reference_label)
    if logx:
        ax.set_xscale("log")
    if percent_x:
        from matplotlib.ticker import PercentFormatter

        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def _weights(obj, label) -> torch.Tensor:
    if isinstance(obj, torch.Tensor):
        return obj.detach().reshape(-1)
    if isinstance(obj, nn.Module):
        parts = [effective_tensor(t.module, t.tensor).reshape(-1) for t in targets(obj)]
        if not parts:
            raise ValueError(f"{type(obj).__name__} has no Linear/Conv weights to plot.")
        return torch.cat(parts)
    raise invalid(TypeError, f"items[{label!r}]", "plot_weight_histograms",
                  "a torch.Tensor or a torch.nn.Module", type(obj).__name__)


def plot_weight_histograms(items: dict, *, bins: int = 121, range_=None, ax=None, logy: bool = True,
                           title: str | None = None):
    """Overlaid histograms of weight values (all Linear/Conv weights of each model).

    Args:
        items: ``{label: model_or_tensor}``.
        bins: number of bins.
        range_: ``(low, high)``; default symmetric around 0 covering 99.9 % of the weights.
        ax: axes to draw on.
        logy: logarithmic count axis (shows the tails and the spike at zero).
        title: figure title.

    Returns:
        The axes.
    """
    ax = _axes(ax)
    data = {k: _weights(v, k).float().cpu() for k, v in items.items()}
    if range_ is None:
        hi = max(float(torch.quantile(d.abs()[:1_000_000], 0.999)) for d in data.values())
        range_ = (-hi, hi)
    for label, w in data.items():
        ax.hist(w.numpy(), bins=bins, range=range_, histtype="step", linewidth=1.4, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("weight value")
    ax.set_ylabel("number of weights" + (" (log scale)" if logy else ""))
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return ax


def plot_mask(mask: torch.Tensor, *, ax=None, title: str | None = None, aspect="auto"):
    """A 2-D mask (or weight) as an image: kept entries dark, pruned entries white.

    For LeNet-300-100's first layer, transpose the ``(300, 784)`` weight's mask to see Han
    et al.'s bands: each band of 28 input columns is one image row.
    """
    ax = _axes(ax, figsize=(8, 3))
    m = (mask.detach() != 0).float().cpu()
    if m.dim() != 2:
        m = m.reshape(m.shape[0], -1)
    ax.imshow(m.numpy(), cmap="Greys", interpolation="nearest", aspect=aspect, vmin=0, vmax=1)
    ax.set_xlabel("input index")
    ax.set_ylabel("output index")
    if title:
        ax.set_title(title)
    return ax


def plot_input_mask(mask: torch.Tensor, image_shape=(28, 28), *, ax=None, title: str | None = None):
    """How many connections each input pixel keeps, as an image (first layer of an MLP).

    Args:
        mask: the first Linear layer's mask or weight, shape ``(out_features, H*W)``.
        image_shape: ``(H, W)`` of the input images.

    Returns:
        The axes (with a colour bar).
    """
    ax = _axes(ax, figsize=(4, 4))
    kept = (mask.detach() != 0).float().sum(dim=0).reshape(image_shape).cpu()
    im = ax.imshow(kept.numpy(), cmap="viridis", interpolation="nearest")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="kept connections")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax

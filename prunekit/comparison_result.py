"""``Comparison``: the rows ``compare`` returns, their summary over seeds, plots and tables."""

from __future__ import annotations

import math
import numbers
from collections import defaultdict
from dataclasses import dataclass, field

from ._table import Table, TableRepr
from ._validation import argument_error, check_choice, invalid
from .plotting import band, mean_std

__all__ = ["Comparison", "METRICS", "STYLES"]

#: Numeric columns of a row, in the order :meth:`Comparison.summary` reports them.
METRICS = (
    "achieved_sparsity", "dense_accuracy", "pruned_accuracy", "accuracy", "params",
    "dense_params", "compression_ratio", "storage_ratio", "macs", "dense_macs",
    "theoretical_speedup", "dense_speedup", "latency_ms", "dense_latency_ms",
    "measured_speedup", "seconds", "val_accuracy", "dense_val_accuracy",
)


@dataclass(repr=False)
class Comparison(TableRepr):
    """The result of :func:`compare`: one row per method x sparsity x seed.

    Columns of ``rows`` (dicts):

    * ``method`` (label), ``sparsity`` (requested), ``seed``;
    * ``achieved_sparsity``: fraction of zeros among all Linear/Conv weights (before any
      :func:`prunekit.shrink`, so comparable with the request);
    * ``dense_accuracy``, ``pruned_accuracy`` (before fine-tuning), ``accuracy`` (after);
    * ``params`` (non-zero parameters of the deployed model: shrunk where possible),
      ``dense_params``, ``compression_ratio = dense_params / params``;
    * ``storage_ratio``: bits of the dense model over bits of the pruned one, 32 bits per
      value: each Linear/Conv weight in the smaller of a dense tensor and the method's
      sparse format (values plus relative indices of 5 bits for Linear and 8 for conv
      weights, the book's storage convention, :func:`prunekit.sparse_storage_bits`:
      one index per non-zero weight, one per kept kernel for ``"kernel"``, none for a
      shrunk model), biases and BatchNorm parameters dense. Indices (and zeros stored
      inside kept kernels) are why it is never above ``compression_ratio``;
    * ``macs`` (MACs per sample by non-zero weights), ``dense_macs``,
      ``theoretical_speedup = dense_macs / macs`` (needs sparse kernels to be real),
      ``dense_speedup`` (dense MACs over the MACs a dense implementation of the deployed
      model computes: above 1 only where structure was removed);
    * ``latency_ms``, ``dense_latency_ms``, ``measured_speedup``: median latency (ms) of the
      deployed and the dense model at the latency batch, timed alternately in eval mode
      under ``torch.inference_mode()``, only where structure was removed, else ``None``;
    * ``val_accuracy``, ``dense_val_accuracy``: accuracy on ``compare``'s ``val_loader``
      after fine-tuning and of the dense model (``None`` without one);
    * ``shrunk`` (whether :func:`prunekit.shrink` rebuilt the model), ``seconds``.

    ``dense`` holds one dict per seed (``seed``, ``accuracy``, ``params``, ``macs``),
    ``settings`` what was run.
    """

    rows: list
    dense: list
    settings: dict = field(default_factory=dict)

    @property
    def methods(self) -> list:
        """Method labels, in the order they ran."""
        return list(dict.fromkeys(r["method"] for r in self.rows))

    @property
    def dense_accuracy(self) -> tuple:
        """Mean and standard deviation of the dense models' accuracy over seeds."""
        return mean_std([d["accuracy"] for d in self.dense])

    def summary(self) -> list:
        """Mean and standard deviation over seeds, one dict per method x sparsity.

        Keys: ``method``, ``sparsity``, ``n`` (seeds), and ``<metric>_mean`` /
        ``<metric>_std`` for every numeric column (``None`` where it was not measured).
        """
        groups = defaultdict(list)
        for r in self.rows:
            groups[(r["method"], r["sparsity"])].append(r)
        order = {m: i for i, m in enumerate(self.methods)}
        out = []
        for (method, s), rows in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
            item = {"method": method, "sparsity": s, "n": len(rows)}
            for metric in METRICS:
                item[f"{metric}_mean"], item[f"{metric}_std"] = mean_std([r.get(metric) for r in rows])
            out.append(item)
        return out

    def best_within(self, tolerance: float = 0.01, x: str = "compression_ratio",
                    on: str = "accuracy") -> dict:
        """Per method, the summary point with the largest mean ``x`` whose mean accuracy
        (after fine-tuning) is at least the mean dense accuracy minus ``tolerance``.

        ``on="val_accuracy"`` makes that choice on the validation accuracies (``compare``
        with ``val_loader=``), so the test accuracy of the chosen point is an honest
        estimate. Returns ``{method: summary dict or None}`` (``None``: no sparsity met the
        tolerance). Answers "how far can each method go for at most a 1-point loss?".
        """
        if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or tolerance < 0:
            raise invalid(ValueError, "tolerance", "best_within", "a non-negative number",
                          repr(tolerance))
        check_choice(x, METRICS, "best_within", "x")
        check_choice(on, ("accuracy", "val_accuracy"), "best_within", "on")
        dense = [d.get(on) for d in self.dense]
        if any(v is None for v in dense):
            raise ValueError("best_within(on='val_accuracy') needs compare(..., val_loader=...); "
                             "this comparison has no validation accuracies.")
        floor = mean_std(dense)[0] - tolerance
        best = {m: None for m in self.methods}
        for item in self.summary():
            value = item[f"{x}_mean"]
            if value is None or item[f"{on}_mean"] < floor:
                continue
            current = best[item["method"]]
            if current is None or value > current[f"{x}_mean"]:
                best[item["method"]] = item
        return best

    def at(self, value: float, x: str = "compression_ratio", y: str = "accuracy") -> dict:
        """Per method, mean ``y`` at the **achieved** ``x == value``, interpolated linearly in
        ``log(x)`` between the two summary points around it (``None`` outside the range the
        method reached). Compares methods at matched compression (or speed-up) rather than
        at matched requested sparsity, which means different things for different methods.

        Examples:
            >>> from prunekit import Comparison
            >>> rows = [dict(method="a", sparsity=s, compression_ratio=c, accuracy=acc)
            ...         for s, c, acc in ((0.5, 2.0, 0.9), (0.75, 8.0, 0.7))]
            >>> round(Comparison(rows, dense=[]).at(4.0)["a"], 6)   # halfway in log(x)
            0.8
        """
        check_choice(x, METRICS, "at", "x")
        check_choice(y, METRICS, "at", "y")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
            raise invalid(ValueError, "value", "at", "a positive number", repr(value))
        out = {}
        for method in self.methods:
            pts = sorted((it[f"{x}_mean"], it[f"{y}_mean"]) for it in self.summary()
                         if it["method"] == method and it[f"{x}_mean"] is not None
                         and it[f"{y}_mean"] is not None and math.isfinite(it[f"{x}_mean"]))
            out[method] = None
            for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
                if x0 <= value <= x1:
                    t = 0.0 if x1 == x0 else math.log(value / x0) / math.log(x1 / x0)
                    out[method] = y0 + t * (y1 - y0)
                    break
            if out[method] is None and pts and pts[0][0] == value:
                out[method] = pts[0][1]
        return out

    def to_pandas(self):
        """The rows as a ``pandas.DataFrame`` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("Comparison.to_pandas needs pandas: pip install pandas "
                              "(or use .rows, a list of dicts).") from exc
        return pd.DataFrame(self.rows)

    def plot(self, x: str = "compression_ratio", y: str = "accuracy", *, ax=None,
             logx: bool | None = None, methods=None, title=None, styles=None):
        """Mean ``y`` against mean ``x`` per method (one point per sparsity), ±1 std band.

        Args:
            x: a numeric column, e.g. ``"compression_ratio"``, ``"theoretical_speedup"``,
                ``"dense_speedup"``, ``"measured_speedup"``, ``"achieved_sparsity"``.
            y: a numeric column, e.g. ``"accuracy"`` or ``"pruned_accuracy"``.
            ax: matplotlib axes (a new figure if ``None``).
            logx: logarithmic x axis; default: yes for ratios and speed-ups.
            methods: labels to draw (default all).
            title: axes title.
            styles: ``{label: dict(color=..., linestyle=...)}``, over ``prunekit.compare.STYLES`` (a
                fixed colour per default method, so figures of different models agree).

        Returns:
            The axes. The dense models' mean accuracy is a dotted line when ``y`` is an
            accuracy.
        """
        import matplotlib.pyplot as plt

        check_choice(x, METRICS, "plot", "x")
        check_choice(y, METRICS, "plot", "y")
        if ax is None:
            _, ax = plt.subplots(figsize=(6.5, 4.2))
        wanted = self.methods if methods is None else list(methods)
        unknown = [m for m in wanted if m not in self.methods]
        if unknown:
            raise argument_error(ValueError, "methods", "plot", f"names {unknown}, which are not "
                                 f"in this comparison ({self.methods}).")
        by_method = defaultdict(list)
        for item in self.summary():
            if item[f"{x}_mean"] is not None and item[f"{y}_mean"] is not None:
                by_method[item["method"]].append(item)
        for method in wanted:
            points = sorted(by_method.get(method, []), key=lambda it: it[f"{x}_mean"])
            if not points:
                continue
            xs = [p[f"{x}_mean"] for p in points]
            mean = [p[f"{y}_mean"] for p in points]
            std = [p[f"{y}_std"] or 0.0 for p in points]
            style = {**STYLES.get(method, {}), **(styles or {}).get(method, {})}
            band(ax, xs, mean, std, label=method, alpha=0.15, **style)
        if "accuracy" in y:
            ax.axhline(self.dense_accuracy[0], color="black", linestyle=":", linewidth=1,
                       label="dense")
        if logx if logx is not None else x.endswith(("ratio", "speedup")):
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(_AXIS_LABELS.get(x, x))
        ax.set_ylabel(_AXIS_LABELS.get(y, y))
        if title:
            ax.set_title(title)
        ax.legend(fontsize="small", ncol=2)
        ax.grid(alpha=0.3, which="both")
        return ax

    def _table(self) -> Table:
        def pm(item, key, fmt):
            mean, std = item[f"{key}_mean"], item[f"{key}_std"]
            if mean is None:
                return "-"
            return fmt(mean) + ("" if not std or math.isnan(std) else " ± " + fmt(std))

        header = ("method", "sparsity", "achieved", "compression", "storage", "theor. x",
                  "dense x", "measured x", "acc. pruned", "acc. fine-tuned")
        lines = []
        for it in self.summary():
            lines.append((
                it["method"], f"{it['sparsity']:.0%}", f"{it['achieved_sparsity_mean']:.1%}",
                f"{it['compression_ratio_mean']:.1f}x", f"{it['storage_ratio_mean']:.2f}x",
                f"{it['theoretical_speedup_mean']:.1f}x", f"{it['dense_speedup_mean']:.2f}x",
                pm(it, "measured_speedup", lambda v: f"{v:.2f}x"),
                pm(it, "pruned_accuracy", lambda v: f"{v:.2%}"),
                pm(it, "accuracy", lambda v: f"{v:.2%}"),
            ))
        mean, std = self.dense_accuracy
        n = len(self.dense)
        lines.append((f"dense ({n} seed{'s' if n != 1 else ''})", "0%", "", "1.0x", "1.00x",
                      "1.0x", "1.00x", "", "", f"{mean:.2%}" + (f" ± {std:.2%}" if n > 1 else "")))
        return Table(header, tuple(lines), frozenset(range(1, len(header))))


#: Line styles of the default methods' labels in :meth:`Comparison.plot` (same colour for the
#: same method in every figure; ``l2`` dashed, since it coincides with ``l1`` for weights).
STYLES = {
    "random": {"color": "tab:gray"},
    "l1": {"color": "tab:blue"},
    "l1 (global)": {"color": "tab:green"},
    "l2": {"color": "tab:orange", "linestyle": "--"},
    "l2 (global)": {"color": "tab:olive", "linestyle": "--"},
    "gradient": {"color": "tab:purple"},
    "taylor": {"color": "tab:brown"},
    "fisher": {"color": "tab:cyan"},
    "kmeans": {"color": "tab:pink"},
    "kernel": {"color": "goldenrod"},
    "channel": {"color": "tab:red"},
}

_AXIS_LABELS = {
    "compression_ratio": "compression ratio (dense / non-zero parameters)",
    "storage_ratio": "storage ratio (dense bits / sparse-format bits)",
    "theoretical_speedup": "theoretical speed-up (dense MACs / non-zero MACs)",
    "dense_speedup": "dense speed-up (MACs removed from the dense computation)",
    "measured_speedup": "measured speed-up (latency dense / shrunk)",
    "achieved_sparsity": "achieved sparsity",
    "accuracy": "test accuracy after fine-tuning",
    "pruned_accuracy": "test accuracy before fine-tuning",
}

"""What prunekit does to the zoo of real architectures (tests/zoo.py): the issue #12 baseline.

    PYTHONPATH=. python benchmarks/zoo_baseline.py                  # the prunekit on the path
    PYTHONPATH=/tmp/pk01 python benchmarks/zoo_baseline.py          # e.g. a 0.1.0 checkout:
        git archive 0b0d476 prunekit | tar -x -C /tmp/pk01

Per zoo model, after ``pk.prune(model, 0.5)`` (l1, layer scope, defaults):

* ``covered``: fraction of zeros in the matmul weights (zoo.matmul_weights: Linear, Conv*,
  HF Conv1D, MHA in_proj/q/k/v/out_proj, RNN weight_ih/hh; shared ones once), read as the
  layer that multiplies with them computes them, against ``claimed`` = ``pk.sparsity(model)``.
* ``MACs``: ``pk.count_macs(model, x)`` / reference, the reference being
  ``FlopCounterMode`` total / 2 with autograd on (so MHA's eval fast path, which hides its
  projections, is off) and the math SDPA kernel (the CPU flash kernel has no FLOP formula,
  so QK^T and AV would be missed), where the FLOPs it sees inside RNN modules are replaced by the hand
  formula ``zoo.rnn_macs`` (it sees GRU's matmuls, none of LSTM's).
* ``faithful``: the pruned model's output (eval, no_grad) equals that of a fresh copy holding
  exactly the masked weights (one value per shared parameter: the masked one), right after
  pruning (``faithful_0``) and after one SGD step in train mode (``faithful_1``) with an
  optimizer built *before* pruning. ``train_1``/``train_2``: whether the first step and two
  more ran (prunekit 0.1's hooks fail at the second backward on MHA).
* ``export``: ``torch.export.export`` of the dense model, then of the pruned one (and whether
  the exported program's output equals the eager one).

Everything is seeded; one thread.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import pathlib
import sys
import time
import warnings

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import zoo  # noqa: E402

import prunekit as pk  # noqa: E402


def reference_macs(model: nn.Module, x) -> int:
    """FlopCounterMode / 2, RNN modules by the hand formula.

    Autograd on: MHA's eval fast path (taken under no_grad) hides its projections. Math SDPA
    kernel: FlopCounterMode has no formula for the CPU flash kernel
    (``_scaled_dot_product_flash_attention_for_cpu``) and would miss ``QK^T`` and ``AV``.
    """
    rnn_paths = [p for p, m in model.named_modules() if isinstance(m, nn.RNNBase)]
    with FlopCounterMode(display=False) as counter, torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
        zoo.call(model, x)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    inside_rnn = sum(sum(counts.get(f"{root}.{p}", {}).values()) for p in rnn_paths)
    return (counter.get_total_flops() - inside_rnn) // 2 + zoo.rnn_macs(model, x)


def coverage(model: nn.Module, weights) -> tuple[float, bool]:
    """Zero fraction of the matmul weights as their matmul user computes them; users agree?"""
    zeros = total = 0
    agree = True
    for w in weights:
        path, name = w.name.rpartition(".")[::2]
        value = zoo.effective_value(model.get_submodule(path), name)
        zeros += int((value == 0).sum())
        total += value.numel()
        for upath, uname in w.users:
            other = zoo.effective_value(model.get_submodule(upath), uname)
            agree &= torch.equal(other, value)
    return zeros / total, agree


def masked_reference(pruned: nn.Module, name: str, seed: int) -> nn.Module:
    """A fresh model holding exactly the pruned model's effective values (shared: masked)."""
    ref, _ = zoo.build(name, seed)
    matmul_user = {}
    for w in zoo.matmul_weights(pruned):
        for user in w.users:
            matmul_user[user] = w.name.rpartition(".")[::2]
    with torch.no_grad():
        for path, module in ref.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                src_path, src_name = matmul_user.get((path, pname), (path, pname))
                p.copy_(zoo.effective_value(pruned.get_submodule(src_path), src_name))
            for bname, b in module.named_buffers(recurse=False):
                b.copy_(pruned.get_submodule(path).get_buffer(bname))
    return ref.eval()


def same_output(a: nn.Module, b: nn.Module, x) -> bool:
    with torch.no_grad():
        ya = zoo.output_tensor(zoo.call(a.eval(), x))
        yb = zoo.output_tensor(zoo.call(b.eval(), x))
    return torch.allclose(ya, yb, rtol=1e-4, atol=1e-5)


def short(exc: BaseException, n: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) <= n else text[: n - 1] + "…"


def try_export(model: nn.Module, x) -> str:
    args = x if isinstance(x, tuple) else (x,)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.export.export(model, args)
    except Exception as exc:  # noqa: BLE001 - the table reports what failed
        return "FAIL " + short(exc)
    with torch.no_grad():
        ok = torch.allclose(zoo.output_tensor(program.module()(*args)),
                            zoo.output_tensor(zoo.call(model, x)), rtol=1e-4, atol=1e-5)
    return "ok" if ok else "ok, outputs differ"


def train_steps(model: nn.Module, optimizer, x, steps: int = 2) -> str:
    model.train()
    try:
        for _ in range(steps):
            optimizer.zero_grad()
            zoo.output_tensor(zoo.call(model, x)).float().pow(2).mean().backward()
            optimizer.step()
    except Exception as exc:  # noqa: BLE001
        return "FAIL " + short(exc)
    finally:
        model.eval()
    return "ok"


def row(name: str, seed: int = 0) -> dict:
    model, x = zoo.build(name, seed)
    weights = zoo.matmul_weights(model)
    n_matmul = sum(w.numel for w in weights)
    out = {"model": name, "params": sum(p.numel() for p in model.parameters()), "matmul": n_matmul}
    out["export_dense"] = try_export(model, x)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)  # built before pruning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pk.prune(model, 0.5)
    out["warnings"] = len(caught)
    out["covered"], out["users_agree"] = coverage(model, weights)
    out["claimed"] = pk.sparsity(model)
    ref = reference_macs(model, x)
    out["macs_ref"] = ref
    out["macs_ratio"] = pk.count_macs(model, x) / ref
    out["faithful_0"] = same_output(model, masked_reference(model, name, seed), x)
    out["train_1"] = train_steps(model, optimizer, x, 1)
    out["faithful_1"] = same_output(model, masked_reference(model, name, seed), x) if out["train_1"] == "ok" else None
    out["train_2"] = train_steps(model, optimizer, x, 2) if out["train_1"] == "ok" else "-"
    out["export_pruned"] = try_export(model, x)
    return out


def fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return {True: "yes", False: "NO", None: "-"}[v]
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


COLUMNS = [("model", 30), ("params", 7), ("matmul", 7), ("covered", 7), ("claimed", 7),
           ("users_agree", 11), ("macs_ratio", 10), ("faithful_0", 10), ("train_1", 10),
           ("faithful_1", 10), ("train_2", 10), ("export_dense", 12), ("export_pruned", 13)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(zoo.ZOO), help="zoo names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"prunekit {pk.__version__} ({pathlib.Path(pk.__file__).parent}), torch {torch.__version__}")
    print("  ".join(f"{c:<{w}}" for c, w in COLUMNS))
    rows = []
    for name in args.models:
        start = time.perf_counter()
        try:
            r = row(name)
        except Exception as exc:  # noqa: BLE001
            print(f"{name:<30}  FAIL {short(exc, 120)}")
            continue
        rows.append(r)
        cells = [fmt(r[c]) if w == 0 or len(fmt(r[c])) <= w else fmt(r[c])[: w - 1] + "…"
                 for c, w in COLUMNS]
        print("  ".join(f"{c:<{w}}" for c, (_, w) in zip(cells, COLUMNS)),
              f"[{time.perf_counter() - start:.1f}s]", flush=True)
    print("\nfailures in full:")
    for r in rows:
        for key in ("train_1", "train_2", "export_dense", "export_pruned"):
            if r[key].startswith("FAIL"):
                print(f"  {r['model']}.{key}: {r[key]}")


if __name__ == "__main__":
    main()

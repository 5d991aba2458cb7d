"""Channel pruning that really shrinks: prunekit.shrink against the masked model and Torch-Pruning.

    python benchmarks/structured.py          # VGG_SMALL on 32x32 inputs, 50 % of every conv's channels

One run, one process. The VGG-style CNN (conv 64-64-M-128-128-M-256-256-M-512-512-M, random
weights, random BatchNorm statistics, eval mode) gets 50 % of the output channels of every
conv pruned by L1 norm (``pk.prune(model, 0.5, method="channel", exclude=["fc"])``), then
``pk.shrink`` builds the smaller model.

Every model (dense, masked, shrunk and the two Torch-Pruning models) is timed in two memory
layouts: PyTorch's default NCHW (``torch.contiguous_format``) and channels_last (NHWC: a
deep copy of the model converted with ``.to(memory_format=torch.channels_last)``, the input
made ``.contiguous(memory_format=torch.channels_last)``). channels_last is the layout PyTorch
recommends for CNN inference on CPU (oneDNN convolutions and pooling work natively in it),
so the latency goals are checked on channels_last; the NCHW numbers are printed beside them
with their values. The outputs do not depend on the layout (the largest difference is
printed). The script prints

* max |masked - shrunk| on random inputs, in both layouts (goal <= 1e-4; the script exits
  non-zero if it is missed),
* the MAC reduction (theoretical speed-up),
* the measured CPU speed-up at batch 32, masked / shrunk latency, per layout (goal, checked
  on channels_last: >= 0.9 x the MAC reduction),
* the latency of Torch-Pruning's version of the same network, pruned at ratio 0.5 with the
  same channel choice (``pk.tp_prune``, prunekit's L1 importance) and with Torch-Pruning's
  own group L1 importance, per layout (goal, checked on channels_last: prunekit's model
  within 10 % of Torch-Pruning's),
* where the time goes: torch.profiler's self CPU time of one forward pass at batch 32 of the
  masked and the shrunk model, per layout, grouped into convolution / pooling / batchnorm /
  relu (clamp_min) / other, with the masked / shrunk ratio of every group (8 interleaved
  profiled passes; per model and group the least time, like the best-round latencies).
  ("other" is mostly the masked model's mask multiplications, ``aten::mul``.)
  Convolutions scale with the MACs; BatchNorm and ReLU are proportional to the activations,
  which only halve when the channels halve; max-pooling is slow in NCHW. That is why the
  NCHW speed-up falls short of the MAC reduction and the channels_last one does not.

Latencies come from interleaved rounds (each round times every model in both layouts once in
turn), so drift and other processes on the machine hit all models alike; ratios use the best
round (least disturbed on a shared machine), medians are printed too. Threads are fixed
(default 2, the book's target); absolute milliseconds depend on the machine, ratios much
less. The latency goals print PASS or MISS but never fail the script (timings are noisy).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import sys
import time

import torch

import prunekit as pk

LAYOUTS = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}
GOAL_LAYOUT = "channels_last"
GROUPS = ("convolution", "pooling", "batchnorm", "relu", "other")


def interleaved_latency(runs: dict, rounds: int, warmup: int = 2) -> dict:
    """``{key: (best ms, median ms)}`` for ``runs = {key: (model, input)}``.

    Each round runs every model once, in turn. The best (minimum) of the rounds is the
    least disturbed by other processes on a shared machine, so the ratios below use it;
    the medians are printed beside it.
    """
    times = {key: [] for key in runs}
    with torch.inference_mode():
        for model, x in runs.values():
            for _ in range(warmup):
                model(x)
        for _ in range(rounds):
            for key, (model, x) in runs.items():
                start = time.perf_counter()
                model(x)
                times[key].append((time.perf_counter() - start) * 1e3)
    return {key: (min(t), statistics.median(t)) for key, t in times.items()}


def op_group(name: str) -> str:
    """The group of an ATen operator name, for the profile breakdown."""
    if "conv" in name:
        return "convolution"
    if "pool" in name:
        return "pooling"
    if "batch_norm" in name:
        return "batchnorm"
    if "relu" in name or "clamp_min" in name:
        return "relu"
    return "other"


@contextlib.contextmanager
def quiet_stderr():
    """Silence C-level stderr (this torch build logs profiler_start/stop lines there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_groups(runs: dict, passes: int) -> dict:
    """``{key: {group: ms}}`` for ``runs = {key: (model, input)}``: self CPU time per op group.

    ``passes`` interleaved rounds, each profiling one forward pass of every model in turn;
    for each model and group the least time over the passes is kept (the least disturbed,
    as for the latencies).
    """
    from torch.profiler import ProfilerActivity, profile

    best = {}
    with torch.inference_mode(), quiet_stderr():
        for model, x in runs.values():
            model(x)  # warm-up outside the profile
        for _ in range(passes):
            for key, (model, x) in runs.items():
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    model(x)
                groups = dict.fromkeys(GROUPS, 0.0)
                for evt in prof.key_averages():
                    groups[op_group(evt.key)] += evt.self_cpu_time_total / 1e3
                best[key] = {g: min(t, best.get(key, groups)[g]) for g, t in groups.items()}
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile-passes", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start_all = time.perf_counter()
    torch.manual_seed(0)

    dense = pk.models.VGG(pk.models.VGG_SMALL, in_channels=3, image_size=32).eval()
    g = torch.Generator().manual_seed(1)
    for m in dense.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    x = torch.randn(args.batch, 3, 32, 32)
    x1 = x[:1]

    masked = pk.prune(copy.deepcopy(dense), args.sparsity, method="channel", exclude=["fc"])
    t0 = time.perf_counter()
    shrunk = pk.shrink(masked, x1)  # the example input only fixes the shapes
    t_shrink = time.perf_counter() - t0

    models = {"dense": dense, "masked": masked, "shrunk": shrunk}
    try:
        import torch_pruning as tp

        models["tp (prunekit L1)"] = pk.tp_prune(dense, x1, args.sparsity, importance="l1")
        models["tp (own group L1)"] = pk.tp_prune(
            dense, x1, args.sparsity, importance=tp.importance.GroupMagnitudeImportance(p=1))
        same_arch = ([p.shape for p in models["tp (prunekit L1)"].parameters()]
                     == [p.shape for p in shrunk.parameters()])
        with torch.no_grad():
            tp_diff = float((models["tp (prunekit L1)"](x) - shrunk(x)).abs().max())
    except ImportError:
        print("Torch-Pruning is not installed (pip install torch-pruning): skipping its rows.")
        same_arch, tp_diff = None, None

    # the same models in each layout: NCHW uses them as they are, channels_last deep copies
    # (the masked model's masks are converted too, so it still computes what it did)
    in_layout = {"NCHW": models}
    in_layout["channels_last"] = {name: copy.deepcopy(m).to(memory_format=torch.channels_last)
                                  for name, m in models.items()}
    inputs = {layout: {b: xb.contiguous(memory_format=fmt) for b, xb in ((args.batch, x), (1, x1))}
              for layout, fmt in LAYOUTS.items()}

    diffs, layout_diff = {}, 0.0
    with torch.no_grad():
        for layout, fmt in LAYOUTS.items():
            ms, sh = in_layout[layout]["masked"], in_layout[layout]["shrunk"]
            batches = [x, torch.randn_like(x), 3 * torch.randn_like(x)]
            diffs[layout] = max(float((ms(xi.contiguous(memory_format=fmt))
                                       - sh(xi.contiguous(memory_format=fmt))).abs().max())
                                for xi in batches)
            for name in models:
                out = in_layout[layout][name](inputs[layout][args.batch])
                layout_diff = max(layout_diff, float((out - models[name](x)).abs().max()))
    max_diff = max(diffs.values())

    macs = {name: pk.count_macs(m, x1) for name, m in models.items()}
    params = {name: pk.count_parameters(m) for name, m in models.items()}
    disk = {name: pk.model_size_bytes(m, strip_masks=True) for name, m in models.items()}
    lat = {}
    for b, rounds in ((args.batch, args.rounds), (1, 2 * args.rounds)):
        runs = {(name, layout): (in_layout[layout][name], inputs[layout][b])
                for name in models for layout in LAYOUTS}
        lat[b] = interleaved_latency(runs, rounds)
    prof = profile_groups({(name, layout): (in_layout[layout][name], inputs[layout][args.batch])
                           for layout in LAYOUTS for name in ("masked", "shrunk")},
                          args.profile_passes)

    b = args.batch
    print(f"VGG_SMALL (conv 64-64-M-128-128-M-256-256-M-512-512-M, fc), 32x32x3 input, eval mode; "
          f"pk.prune(model, {args.sparsity}, method='channel', exclude=['fc']) then pk.shrink")
    print(f"torch {torch.__version__}, torch.set_num_threads({args.threads}) "
          f"(get_num_threads() = {torch.get_num_threads()}); latency: best and median of "
          f"{args.rounds} (batch {b}) / {2 * args.rounds} (batch 1) interleaved rounds, "
          "all models and both layouts in every round")
    print(f"layouts: NCHW (PyTorch's default) and channels_last (NHWC, PyTorch's recommended "
          f"layout for CNN inference on CPU); the latency goals are checked on {GOAL_LAYOUT}")
    print()
    header = f"{'model':<19}{'params':>11}{'MACs/img':>13}{'disk KB':>9}"
    print(header)
    print("-" * len(header))
    for name in models:
        print(f"{name:<19}{params[name]:>11,}{macs[name]:>13,}{disk[name] / 1024:>9.0f}")
    print()
    header = (f"{'model':<19}{'layout':<15}{'best ms@' + str(b):>12}{'median':>8}"
              f"{'best ms@1':>11}{'median':>8}")
    print(header)
    print("-" * len(header))
    for name in models:
        for layout in LAYOUTS:
            (b32, m32), (b1, m1) = lat[b][name, layout], lat[1][name, layout]
            print(f"{name:<19}{layout:<15}{b32:>12.1f}{m32:>8.1f}{b1:>11.2f}{m1:>8.2f}")
    print()

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    mac_ratio = macs["masked"] / macs["shrunk"]
    print(f"shrink took {t_shrink:.2f} s")
    print("max |masked - shrunk| on random inputs:  "
          + ", ".join(f"{diffs[lo]:.2e} ({lo})" for lo in LAYOUTS)
          + f"   (goal <= 1e-4: {verdict(max_diff <= 1e-4)})")
    print(f"max |channels_last - NCHW| output, any model: {layout_diff:.2e}")
    print(f"MAC reduction (theoretical speed-up):    {mac_ratio:.2f}x")
    print(f"parameter reduction:                     {params['masked'] / params['shrunk']:.2f}x")
    speedup = {}
    for layout in LAYOUTS:
        speedup[layout] = lat[b]["masked", layout][0] / lat[b]["shrunk", layout][0]
        med = lat[b]["masked", layout][1] / lat[b]["shrunk", layout][1]
        goal = (f"   (goal >= 0.9: {verdict(speedup[layout] / mac_ratio >= 0.9)})"
                if layout == GOAL_LAYOUT else "   (not the goal's layout)")
        print(f"measured speed-up at batch {b}, masked/shrunk, {layout:<13}: "
              f"{speedup[layout]:.2f}x (best), {med:.2f}x (median) = "
              f"{speedup[layout] / mac_ratio:.2f} of the MAC reduction{goal}")
    for layout in LAYOUTS:
        print(f"measured speed-up at batch 1, {layout:<13}:  "
              f"{lat[1]['masked', layout][0] / lat[1]['shrunk', layout][0]:.2f}x (best)")
    for layout in LAYOUTS:
        print(f"masked / dense latency at batch {b}, {layout:<13}: "
              f"{lat[b]['masked', layout][0] / lat[b]['dense', layout][0]:.2f} "
              "(masking alone saves nothing)")
    print(f"channels_last / NCHW latency at batch {b}: "
          + ", ".join(f"{lat[b][name, 'channels_last'][0] / lat[b][name, 'NCHW'][0]:.2f} ({name})"
                      for name in ("dense", "shrunk")))
    if same_arch is not None:
        print(f"Torch-Pruning with the same channel choice: same architecture {same_arch}, "
              f"max |tp - shrunk| {tp_diff:.2e}")
        for layout in LAYOUTS:
            ratio = lat[b]["shrunk", layout][0] / lat[b]["tp (prunekit L1)", layout][0]
            own = lat[b]["shrunk", layout][0] / lat[b]["tp (own group L1)", layout][0]
            goal = (f"(goal <= 1.10: {verdict(ratio <= 1.10)})" if layout == GOAL_LAYOUT
                    else "(not the goal's layout)")
            print(f"shrunk / Torch-Pruning latency at batch {b}, {layout:<13}: {ratio:.2f} "
                  f"(same choice), {own:.2f} (TP's own group L1)   {goal}")
    print()
    print(f"where the time goes: torch.profiler self CPU time of one forward pass at batch {b}, "
          f"ms (per model and op group the least of {args.profile_passes} interleaved passes; "
          "total = sum of the groups)")
    header = (f"{'layout':<15}{'op group':<13}{'masked':>9}{'shrunk':>9}{'ratio':>8}"
              f"{'share of shrunk':>17}")
    print(header)
    print("-" * len(header))
    for layout in LAYOUTS:
        pm, ps = prof["masked", layout], prof["shrunk", layout]
        tot_m, tot_s = sum(pm.values()), sum(ps.values())
        for grp in (*GROUPS, "total"):
            tm, ts = (tot_m, tot_s) if grp == "total" else (pm[grp], ps[grp])
            ratio = f"{tm / ts:.2f}x" if ts > 0 else "-"
            print(f"{layout:<15}{grp:<13}{tm:>9.1f}{ts:>9.1f}{ratio:>8}{100 * ts / tot_s:>16.0f}%")
    print(f"(MAC reduction {mac_ratio:.2f}x: convolutions follow it; BatchNorm, ReLU and pooling "
          "work on activations, which only halve; max-pooling is slow in NCHW; 'other' holds the "
          "masked model's mask multiplications, aten::mul)")
    print(f"total run time {time.perf_counter() - start_all:.0f} s")
    if max_diff > 1e-4:
        raise SystemExit(f"shrunk model differs from the masked model: max |masked - shrunk| "
                         f"{max_diff:.2e} > 1e-4")


if __name__ == "__main__":
    main()

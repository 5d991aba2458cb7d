"""Channel pruning that really shrinks: prunekit.shrink against the masked model and Torch-Pruning.

    python benchmarks/structured.py          # VGG_SMALL on 32x32 inputs, 50 % of every conv's channels

One run, one process. The VGG-style CNN (conv 64-64-M-128-128-M-256-256-M-512-512-M, random
weights, random BatchNorm statistics, eval mode) gets 50 % of the output channels of every
conv pruned by L1 norm (``pk.prune(model, 0.5, method="channel", exclude=["fc"])``), then
``pk.shrink`` builds the smaller model. The script prints

* max |masked - shrunk| on random inputs (goal <= 1e-4),
* the MAC reduction (theoretical speed-up),
* the measured CPU speed-up at batch 32 (goal >= 0.9 x the MAC reduction),
* the latency of Torch-Pruning's version of the same network, pruned at ratio 0.5 with the
  same channel choice (``pk.tp_prune``, prunekit's L1 importance) and with Torch-Pruning's
  own group L1 importance (goal: prunekit's model within 10 % of Torch-Pruning's).

Latencies come from interleaved rounds (each round times every model once in turn), so
drift and other processes on the machine hit all models alike; ratios use the best round
(least disturbed on a shared machine), medians are printed too. Threads are fixed (default 2,
the book's target); absolute milliseconds depend on the machine, ratios much less.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import prunekit as pk


def interleaved_latency(models: dict, x: torch.Tensor, rounds: int, warmup: int = 2) -> dict:
    """``{name: (best ms, median ms)}``; each round runs every model once, in turn.

    The best (minimum) of the rounds is the least disturbed by other processes on a shared
    machine, so the ratios below use it; the medians are printed beside it.
    """
    times = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(warmup):
                model(x)
        for _ in range(rounds):
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: (min(t), statistics.median(t)) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
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
    with torch.no_grad():
        diffs = [float((masked(xi) - shrunk(xi)).abs().max())
                 for xi in (x, torch.randn_like(x), 3 * torch.randn_like(x))]
    max_diff = max(diffs)

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

    macs = {name: pk.count_macs(m, x1) for name, m in models.items()}
    params = {name: pk.count_parameters(m) for name, m in models.items()}
    disk = {name: pk.model_size_bytes(m, strip_masks=True) for name, m in models.items()}
    lat32 = interleaved_latency(models, x, args.rounds)
    lat1 = interleaved_latency(models, x1, 2 * args.rounds)

    print(f"VGG_SMALL (conv 64-64-M-128-128-M-256-256-M-512-512-M, fc), 32x32x3 input, eval mode; "
          f"pk.prune(model, {args.sparsity}, method='channel', exclude=['fc']) then pk.shrink")
    print(f"torch {torch.__version__}, torch.set_num_threads({args.threads}) "
          f"(get_num_threads() = {torch.get_num_threads()}); latency: best and median of "
          f"{args.rounds} (batch {args.batch}) / {2 * args.rounds} (batch 1) interleaved rounds")
    print()
    b = args.batch
    header = (f"{'model':<19}{'params':>11}{'MACs/img':>13}{'disk KB':>9}"
              f"{'best ms@' + str(b):>12}{'median':>8}{'best ms@1':>11}{'median':>8}")
    print(header)
    print("-" * len(header))
    for name in models:
        print(f"{name:<19}{params[name]:>11,}{macs[name]:>13,}{disk[name] / 1024:>9.0f}"
              f"{lat32[name][0]:>12.1f}{lat32[name][1]:>8.1f}{lat1[name][0]:>11.2f}{lat1[name][1]:>8.2f}")
    print()
    mac_ratio = macs["masked"] / macs["shrunk"]
    speedup = lat32["masked"][0] / lat32["shrunk"][0]
    speedup_median = lat32["masked"][1] / lat32["shrunk"][1]
    print(f"shrink took {t_shrink:.2f} s")
    print(f"max |masked - shrunk| on random inputs:  {max_diff:.2e}   (goal <= 1e-4)")
    print(f"MAC reduction (theoretical speed-up):    {mac_ratio:.2f}x")
    print(f"parameter reduction:                     {params['masked'] / params['shrunk']:.2f}x")
    print(f"measured speed-up at batch {b}, masked/shrunk: {speedup:.2f}x (best), "
          f"{speedup_median:.2f}x (median) = {speedup / mac_ratio:.2f} of the MAC reduction "
          "(goal >= 0.9)")
    print(f"measured speed-up at batch 1:            {lat1['masked'][0] / lat1['shrunk'][0]:.2f}x (best)")
    print(f"masked / dense latency at batch {b}:      "
          f"{lat32['masked'][0] / lat32['dense'][0]:.2f} (masking alone saves nothing)")
    if same_arch is not None:
        ratio = lat32["shrunk"][0] / lat32["tp (prunekit L1)"][0]
        own = lat32["shrunk"][0] / lat32["tp (own group L1)"][0]
        print(f"Torch-Pruning with the same channel choice: same architecture {same_arch}, "
              f"max |tp - shrunk| {tp_diff:.2e}")
        print(f"shrunk / Torch-Pruning latency at batch {b}: {ratio:.2f} (same choice), "
              f"{own:.2f} (TP's own group L1)   (goal <= 1.10)")
    print(f"total run time {time.perf_counter() - start_all:.0f} s")
    if max_diff > 1e-4:
        raise SystemExit("shrunk model differs from the masked model")


if __name__ == "__main__":
    main()

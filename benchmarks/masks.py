"""Speed of prunekit.magnitude_mask against one weight.abs() pass and torch.nn.utils.prune.

    python benchmarks/masks.py            # 4096 x 4096 float32 at sparsity 0.9 (the issue's setting)

Two ratios, each against a reference measured in the same process:

* against ``weight.abs()``, one elementwise pass that reads the weight and writes a
  tensor of its size: the physical limit of any mask that looks at every ``|w|``
  (goal: ``magnitude_mask`` takes at most 3x its time);
* against ``torch.nn.utils.prune.L1Unstructured.compute_mask`` (goal: at least 10x faster),
  whose mask must be identical to ours (the script fails otherwise).

Machines are noisy, so the three are timed alternately, round after round, and the ratios
use the best time of each (the median is printed too). Threads are fixed at 2 to mirror
the book's 2-core target.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn.utils import prune

import prunekit as pk

GOAL_VS_ABS = 3.0     # magnitude_mask time / weight.abs() time, at most
GOAL_VS_TORCH = 10.0  # L1Unstructured time / magnitude_mask time, at least


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=15, help="rounds of abs and magnitude_mask")
    ap.add_argument("--torch-repeats", type=int, default=3, help="rounds of L1Unstructured (slow)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    w = torch.randn(args.size, args.size)
    ones = torch.ones_like(w)
    reference = prune.L1Unstructured(amount=args.sparsity)

    ours = pk.magnitude_mask(w, args.sparsity)
    theirs = reference.compute_mask(w, ones).bool()
    same = torch.equal(ours, theirs)

    times = {"abs": [], "ours": [], "torch": []}
    for r in range(args.repeats):
        times["abs"].append(timed(lambda: w.abs()))
        times["ours"].append(timed(lambda: pk.magnitude_mask(w, args.sparsity)))
        if r < args.torch_repeats:
            times["torch"].append(timed(lambda: reference.compute_mask(w, ones)))
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    vs_abs = best["ours"] / best["abs"]
    vs_torch = best["torch"] / best["ours"]
    ok_abs, ok_torch = vs_abs <= GOAL_VS_ABS, vs_torch >= GOAL_VS_TORCH

    print(f"weight {args.size}x{args.size} float32, sparsity {args.sparsity}, {args.threads} threads "
          f"(best and median of {args.repeats}, torch of {args.torch_repeats})")
    for key, label in (("abs", "weight.abs()"), ("ours", "prunekit.magnitude_mask"),
                       ("torch", "torch.nn.utils.prune.L1Unstructured.compute_mask")):
        print(f"  {label:50s} {best[key] * 1e3:8.1f} ms  (median {median[key] * 1e3:8.1f} ms)")
    print(f"  identical masks: {same}")
    print(f"  magnitude_mask / weight.abs(): {vs_abs:.2f}x  (median {median['ours'] / median['abs']:.2f}x; "
          f"goal <= {GOAL_VS_ABS:g}x) {'PASS' if ok_abs else 'FAIL'}")
    print(f"  speed-up over L1Unstructured:  {vs_torch:.1f}x  (goal >= {GOAL_VS_TORCH:g}x) "
          f"{'PASS' if ok_torch else 'FAIL'}")
    if not same:
        raise SystemExit("masks differ")


if __name__ == "__main__":
    main()

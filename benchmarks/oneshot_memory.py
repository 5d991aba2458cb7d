"""Peak memory of one-shot pruning a ~25M-parameter transformer, against the model's own size.

    python benchmarks/oneshot_memory.py                     # SparseGPT, 128 sequences of 32 tokens
    python benchmarks/oneshot_memory.py --bool-masks        # prune(..., mask_dtype=torch.bool)
    python benchmarks/oneshot_memory.py --method wanda --length 64

The model is Hugging Face's GPT-2 built from a config (6 layers, width 512, vocabulary 8,192:
about 23.1M parameters, 88 MiB in float32), with random weights: memory does not depend on
what the weights are. Calibration: 128 sequences in batches of 8. prunekit keeps per layer
only its input statistics (the ``in x in`` Gram matrix for SparseGPT, factorised in place;
column norms for Wanda) and never the model's activations; each calibration pass stops once
the layers being pruned have read their inputs. The goal is

    peak memory while pruning <= 2 x the model's size + one layer's activations

measured as the process's resident memory (sampled every 2 ms from /proc/self/statm), minus
what it held before ``prune`` started, plus the model's size. Before that starting point the
script runs one forward pass: the first pass of a fresh process pages in torch's kernels and
sets up its thread and allocator pools (40-60 MiB here), which any use of the model pays,
pruning or not. Printed as a ratio to the goal, with the masks' own size: float32 masks (the
default, torch.nn.utils.prune's format) are 72 MiB here, 0.82 of the model, which leaves
little room under the goal; ``--bool-masks`` stores 18 MiB.

glibc keeps some freed memory in its heap, so resident memory runs a few MiB above what is
live; ``MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/oneshot_memory.py`` makes every block
of 64 KiB or more its own mapping, and resident memory then follows the live tensors.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import torch

import prunekit as pk


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler(threading.Thread):
    def __init__(self, interval=0.002):
        super().__init__(daemon=True)
        self.interval, self.peak, self.running = interval, rss_bytes(), True

    def run(self):
        while self.running:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def stop(self):
        self.running = False
        self.join()
        self.peak = max(self.peak, rss_bytes())


def main():
    import transformers

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="sparsegpt", choices=["sparsegpt", "wanda"])
    p.add_argument("--sequences", type=int, default=128)
    p.add_argument("--length", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--bool-masks", action="store_true",
                   help="prune(..., mask_dtype=torch.bool): 1-byte masks instead of float32 ones")
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=6, n_embd=512, n_head=8, vocab_size=8192, n_positions=args.length)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 8192, (args.batch, args.length), generator=g)
               for _ in range(args.sequences // args.batch)]
    activation = args.batch * args.length * max(4 * cfg.n_embd, cfg.vocab_size) * 4  # the logits
    # The first forward pass of a fresh process pages in torch's kernels and sets up its
    # thread and allocator pools: memory any use of the model pays once, pruning or not.
    before_warmup = rss_bytes()
    with torch.no_grad():
        model(batches[0])
    warmup = rss_bytes() - before_warmup
    sampler = PeakSampler()
    start = rss_bytes()
    sampler.start()
    t0 = time.perf_counter()
    mask_dtype = torch.bool if args.bool_masks else None
    pk.prune(model, 0.5, method=args.method, calibration=batches, mask_dtype=mask_dtype)
    seconds = time.perf_counter() - t0
    sampler.stop()
    extra = sampler.peak - start
    peak = model_bytes + extra
    goal = 2 * model_bytes + activation
    masks = sum(b.numel() * b.element_size() for n, b in model.named_buffers() if n.endswith("_mask"))
    n_params = sum(p.numel() for p in model.parameters())
    kind = "bool" if args.bool_masks else "float32"
    print(f"{args.method}, {kind} masks: {n_params / 1e6:.1f}M parameters "
          f"({model_bytes / 2**20:.0f} MiB), {args.sequences} sequences x {args.length} tokens, "
          f"{seconds:.0f} s, achieved sparsity {pk.sparsity(model):.3f}")
    print(f"  one forward pass before pruning (not counted): {warmup / 2**20:.0f} MiB")
    print(f"  the masks themselves: {masks / 2**20:.0f} MiB")
    print(f"  memory added while pruning {extra / 2**20:.0f} MiB; peak = model + that = {peak / 2**20:.0f} MiB")
    print(f"  goal: 2 x model + one layer's activations ({activation / 2**20:.0f} MiB) = {goal / 2**20:.0f} MiB")
    print(f"  ratio peak / goal = {peak / goal:.2f} (goal <= 1)")


if __name__ == "__main__":
    main()

"""Per-GPU memory budget of HRM-Text training for each size (FSDP2, bf16, bp_steps=5), from parameter counts.

    .venv/bin/python benchmarks/memory.py                 # B, L, XL at their recipes' world size and token budget
    .venv/bin/python benchmarks/memory.py --world 8 --tokens 16384

Parameters are counted on the meta device (nothing is allocated). The budget (benchmarks/flops.py) splits a step
into sharded model states (fp32 weights, grads, AdamATan2 m and v, EMA), the bf16 blocks FSDP2 keeps gathered
between recursion calls, activations of the calls inside the bp horizon, and the logits. Measured peaks come from
``benchmarks/gpu_check.sh`` (``torch.cuda.max_memory_allocated``) on a GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flops import core_flops_per_token, memory_budget  # noqa: E402

from hrmkit.cores import build_core  # noqa: E402

# size: (GPUs, tokens per GPU) of the recipes
RECIPES = {"B": (8, 24_576), "L": (8, 21_504), "XL": (16, 12_288)}
VOCAB = 65_536
GIB = 2**30


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--world", type=int, default=None, help="GPUs (default: the recipe's)")
    p.add_argument("--tokens", type=int, default=None, help="tokens per GPU (default: the recipe's)")
    args = p.parse_args()
    cols = ("size", "GPUs", "tok/GPU", "core M", "states", "gathered", "activ.", "logits", "total GiB", "GFLOP/tok")
    print("".join(f"{c:>10}" for c in cols))
    for size in args.sizes:
        world, tokens = RECIPES[size]
        world, tokens = args.world or world, args.tokens or tokens
        with torch.device("meta"):
            core = build_core("hrm", f"text-{size}", bp_steps=5)
        d = core.hidden_size
        layers = len(core.L.layers)
        b = memory_budget(core.num_parameters(), 2 * VOCAB * d, d, layers, 5, tokens, VOCAB, world)
        states = b.weights + b.grads + b.optimizer + b.ema
        row = (size, world, tokens, f"{core.num_parameters() / 1e6:.0f}", f"{states / GIB:.2f}",
               f"{b.gathered / GIB:.2f}", f"{b.activations / GIB:.2f}", f"{b.logits / GIB:.2f}",
               f"{b.total / GIB:.1f}", f"{core_flops_per_token(core) / 1e9:.2f}")
        print("".join(f"{c:>10}" for c in row))


if __name__ == "__main__":
    main()

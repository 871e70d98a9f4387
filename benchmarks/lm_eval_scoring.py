"""lm-eval loglikelihood scoring speed of hrmkit's adapter: requests/s by batch size (hrmkit.eval.prefix_scoring).

    .venv/bin/python benchmarks/lm_eval_scoring.py                          # d=128, 32 requests, batch 1 vs 16
    .venv/bin/python benchmarks/lm_eval_scoring.py --hidden 256 --batch_sizes 1 8 32 --device cuda

Requests look like multiple-choice items: a context of 64..192 random tokens (the PrefixLM prefix) and a 1..8-token
continuation, scored with the ``hrm`` ``text-tiny`` core widened to --hidden (vocabulary 512). Batch sizes are timed
in alternating rounds (the machine is shared: compare the ratio, not the absolute figure), each the median of
--rounds, and the scores of every batch size are checked against batch size 1.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import torch

from hrmkit.cores import build_core
from hrmkit.eval.prefix_scoring import ScoreItem, score_items
from hrmkit.tasks import TextTask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = random.Random(0)
    core = build_core("hrm", "text-tiny", hidden_size=args.hidden, num_heads=max(1, args.hidden // 32),
                      max_seq_len=256)
    task = TextTask(core, vocab_size=512).to(args.device).eval()
    items = []
    for _ in range(args.requests):
        ctx, cont = rng.randint(64, 192), rng.randint(1, 8)
        tokens = tuple(rng.randrange(31, 512) for _ in range(ctx + cont))
        items.append(ScoreItem(tokens, ctx, ctx))
    reference = [s.logprob for s in score_items(task, items, 1)]
    times: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
    for _ in range(args.rounds):
        for b in args.batch_sizes:
            start = time.perf_counter()
            got = [s.logprob for s in score_items(task, items, b)]
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[b].append(time.perf_counter() - start)
            worst = max(abs(x - y) for x, y in zip(got, reference))
            assert worst < 1e-3, f"batch {b}: scores differ from batch 1 by {worst}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    base = statistics.median(times[args.batch_sizes[0]])
    print(f"hidden={args.hidden} requests={args.requests} device={args.device} load1={load:.1f} "
          f"threads={torch.get_num_threads()}")
    for b in args.batch_sizes:
        t = statistics.median(times[b])
        print(f"batch_size={b:3d}  {args.requests / t:8.1f} requests/s  x{base / t:.2f} vs batch "
              f"{args.batch_sizes[0]}")


if __name__ == "__main__":
    main()

"""Text training throughput per core and size on this machine: packed PrefixLM tokens/s of forward + backward.

    .venv/bin/python benchmarks/text_throughput.py              # built-in cores, d=64 and d=128, 1,024 tokens
    .venv/bin/python benchmarks/text_throughput.py --cores hrm ut --hidden 128 --tokens 2048

The puzzle counterpart (samples/s, bidirectional) is benchmarks/core_throughput.py. Each row: TextTask with the
core's ``tiny`` variant widened to --hidden (heads = hidden/32), vocabulary 512, one fixed-length packed row of
instruction/response samples (benchmarks/gpu_check.py's generator), median of --repeats timed forward+backward
passes after --warmup, and the App. A FLOPs per token of the core (benchmarks/flops.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flops import core_flops_per_token  # noqa: E402
from gpu_check import packed_rows  # noqa: E402

from hrmkit.cores import CORES, build_core  # noqa: E402
from hrmkit.tasks import TextTask  # noqa: E402

VOCAB = 512
BUILTIN = ["hrm", "trm", "ut", "rins", "transformer"]


def bench(name: str, hidden: int, tokens: int, warmup: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    core = build_core(name, "tiny", hidden_size=hidden, num_heads=max(1, hidden // 32), max_seq_len=tokens)
    task = TextTask(core, vocab_size=VOCAB)
    batch = packed_rows(tokens, 1, VOCAB)[0]
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        r = task._step(batch)
        (r["ce_sum"] / r["count"].clamp_min(1)).backward()
        task.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {"params": core.num_parameters(), "tokens_per_s": tokens / statistics.median(times),
            "flops": core_flops_per_token(task.core)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cores", nargs="*", default=BUILTIN, help="registered core names (plugins too)")
    p.add_argument("--hidden", nargs="*", type=int, default=[64, 128])
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'core':<12}{'hidden':>7}{'core params':>13}{'tokens/s':>11}{'MFLOP/token':>13}")
    for name in args.cores:
        CORES.get(name)  # an unknown name fails here with the registered names
        for hidden in args.hidden:
            r = bench(name, hidden, args.tokens, args.warmup, args.repeats)
            print(f"{name:<12}{hidden:>7}{r['params']:>13,}{r['tokens_per_s']:>11,.0f}{r['flops'] / 1e6:>13.2f}",
                  flush=True)


if __name__ == "__main__":
    main()

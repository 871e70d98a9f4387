"""The ACT training step at the HRM Sudoku config against this host's matmul throughput, and where its time goes.

    .venv/bin/python benchmarks/puzzle_step.py                        # bf16, batch 32, 2 threads, profile table
    .venv/bin/python benchmarks/puzzle_step.py --dtype float32 --no-profile

One step is what ``Trainer.fit`` runs per batch without the framework: ``PuzzleTask.training_step`` (one segment
with gradient, the bootstrap segment for the Q-continue target, stablemax loss), backward, both optimizers. FLOPs per
step are counted with ``torch.utils.flop_counter`` (every matmul and attention, forward and backward); the host's
matmul throughput is the best of a few ``[B·L, d] × [d, 4d]`` products in the same dtype and thread count. The
fraction ``step FLOP/s ÷ matmul FLOP/s`` is how close the step runs to the matmul floor. ``--profile`` prints the
operators that take the most self CPU time in one profiled step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from hrmkit.cores import build_core
from hrmkit.tasks import PuzzleTask

SEQ, VOCAB = 81, 11


def matmul_gflops(rows: int, d: int, dtype: torch.dtype, repeats: int = 5) -> float:
    a, b = torch.randn(rows, d, dtype=dtype), torch.randn(d, 4 * d, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * rows * d * 4 * d / best / 1e9


def make(dtype: str, batch: int) -> tuple[PuzzleTask, dict, torch.optim.Optimizer]:
    torch.manual_seed(0)
    core = build_core("hrm", "sudoku", compute_dtype=None if dtype == "float32" else dtype)
    task = PuzzleTask(core, vocab_size=VOCAB, seq_len=SEQ, num_puzzle_identifiers=1, halt_max_steps=16,
                      warmup_steps=1)
    task.configure_model()
    opt = task.configure_optimizers()["optimizer"]
    g = torch.Generator().manual_seed(0)
    batch_ = {"inputs": torch.randint(1, VOCAB, (batch, SEQ), generator=g),
              "labels": torch.randint(1, VOCAB, (batch, SEQ), generator=g),
              "puzzle_identifiers": torch.zeros(batch, dtype=torch.long)}
    return task.train(), batch_, opt


def step(task: PuzzleTask, batch: dict, opt: torch.optim.Optimizer) -> None:
    loss = task.training_step(batch, 0)
    loss.backward()
    task.on_before_optimizer_step(opt)
    opt.step()
    opt.zero_grad(set_to_none=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--no-profile", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    task, batch, opt = make(args.dtype, args.batch)
    step(task, batch, opt)  # warm-up (allocations, first ACT carry)
    with FlopCounterMode(display=False) as counter:
        step(task, batch, opt)
    flops = counter.get_total_flops()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step(task, batch, opt)
        times.append(time.perf_counter() - start)
    t = statistics.median(times)
    dtype = getattr(torch, args.dtype)
    peak = matmul_gflops(args.batch * (SEQ + 1), task.core.hidden_size, dtype)
    achieved = flops / t / 1e9
    print(f"HRM sudoku config (d={task.core.hidden_size}, 4+4 layers, H2/L2), {args.dtype}, batch {args.batch}, "
          f"{args.threads} threads, load average {load:.2f} -> {os.getloadavg()[0]:.2f}")
    print(f"step {t:.2f} s (median of {args.steps}: {', '.join(f'{x:.2f}' for x in times)}), "
          f"{args.batch / t:.1f} rows/s")
    print(f"{flops / 1e12:.3f} TFLOP/step -> {achieved:.1f} GFLOP/s; host {args.dtype} matmul {peak:.1f} GFLOP/s "
          f"({peak / args.threads:.1f} per thread); step at {achieved / peak:.0%} of the matmul throughput")
    if not args.no_profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step(task, batch, opt)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=40))


if __name__ == "__main__":
    main()

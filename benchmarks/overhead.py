"""Framework overhead: hrmkit's Lightning training step vs a bare PyTorch loop, same model and batches (CPU).

    .venv/bin/python benchmarks/overhead.py               # tiny and small, puzzle and text; ~1-2 minutes
    .venv/bin/python benchmarks/overhead.py --configs text-small --steps 40

The bare loop is what a hand-written trainer would do per step: ``loss = task.training_step(batch)``, backward,
the optimizer step(s), ``zero_grad``, the LR scheduler; so both sides run exactly the same model code and only the
framework around it differs (Lightning: fit loop, hooks, optimizer closure, ``self.log``, data fetching). The time
of a step is the gap between consecutive step starts (median over the steps after --warmup); trials alternate
bare / Lightning and the best trial of each counts, so other load on the machine hurts both sides alike. Prints one
row per configuration and the ratio Lightning / bare (1.00 = no overhead).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from hrmkit.cores import build_core
from hrmkit.data.text.packing import pack_batch
from hrmkit.tasks import PuzzleTask, TextTask

# name: (task kind, core overrides, batch shape: puzzle rows x length, or packed text tokens)
CONFIGS: dict[str, tuple[str, dict[str, Any], int]] = {
    "puzzle-tiny": ("puzzle", dict(hidden_size=32, num_heads=2, H_layers=1, L_layers=1), 16),
    "puzzle-small": ("puzzle", dict(hidden_size=128, num_heads=4, H_layers=2, L_layers=2), 32),
    "text-tiny": ("text", dict(hidden_size=32, num_heads=2, H_layers=1, L_layers=1), 256),
    "text-small": ("text", dict(hidden_size=128, num_heads=4, H_layers=2, L_layers=2), 1024),
}
PUZZLE_LEN, VOCAB = 81, 256


def make_task(kind: str, core: dict[str, Any]) -> L.LightningModule:
    torch.manual_seed(0)
    if kind == "puzzle":
        return PuzzleTask(build_core("hrm", "tiny", max_seq_len=PUZZLE_LEN + 1, **core), vocab_size=11,
                          seq_len=PUZZLE_LEN, num_puzzle_identifiers=4, halt_max_steps=4, warmup_steps=10)
    return TextTask(build_core("hrm", "text-tiny", max_seq_len=2048, **core), vocab_size=VOCAB, warmup_steps=10)


def make_batches(kind: str, size: int, n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    if kind == "puzzle":
        return [{"inputs": torch.from_numpy(rng.integers(1, 11, (size, PUZZLE_LEN))),
                 "labels": torch.from_numpy(rng.integers(1, 11, (size, PUZZLE_LEN))),
                 "puzzle_identifiers": torch.from_numpy(rng.integers(0, 4, size))} for _ in range(n)]
    out = []
    for _ in range(n):
        samples, left = [], size - 16
        while left >= 32:
            k = int(rng.integers(16, min(200, left) + 1))
            samples.append((rng.integers(3, VOCAB, k).astype(np.int64), int(rng.integers(4, k // 2))))
            left -= k
        out.append(pack_batch(samples, size, pad_id=0))
    return out


def step_times(starts: list[float], warmup: int) -> float:
    gaps = [b - a for a, b in zip(starts[warmup:], starts[warmup + 1:])]
    return statistics.median(gaps)


def bare(kind: str, core: dict[str, Any], batches: list[dict[str, Any]], warmup: int) -> float:
    """The hand-written loop: same task code, no framework."""
    task = make_task(kind, core)
    task.configure_model()
    conf = task.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    task.train()
    starts = []
    for i, batch in enumerate(batches):
        starts.append(time.perf_counter())
        loss = task.training_step(batch, i)
        loss.backward()
        task.on_before_optimizer_step(opt)  # PuzzleTask's sparse puzzle-embedding optimizer
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
    starts.append(time.perf_counter())
    return step_times(starts, warmup)


class StepClock(Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, *args: Any) -> None:
        self.starts.append(time.perf_counter())


def lightning(kind: str, core: dict[str, Any], batches: list[dict[str, Any]], warmup: int) -> float:
    """hrmkit's way: the task under ``Trainer.fit`` (logging on, no progress bar, checkpoints or validation)."""
    clock = StepClock()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=len(batches), logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[clock], num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(make_task(kind, core), DataLoader(batches, batch_size=None))
    return step_times(clock.starts, warmup)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--steps", type=int, default=30, help="timed steps per trial")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    print(f"{'config':<14}{'bare ms/step':>14}{'hrmkit ms/step':>16}{'ratio':>8}")
    ratios = []
    for name in args.configs:
        kind, core, size = CONFIGS[name]
        batches = make_batches(kind, size, args.warmup + args.steps)
        b_best, l_best = float("inf"), float("inf")
        for _ in range(args.trials):
            b_best = min(b_best, bare(kind, core, batches, args.warmup))
            l_best = min(l_best, lightning(kind, core, batches, args.warmup))
        ratios.append(l_best / b_best)
        print(f"{name:<14}{b_best * 1e3:>14.2f}{l_best * 1e3:>16.2f}{l_best / b_best:>8.3f}", flush=True)
    print(f"overhead ratio (geometric mean): {float(np.exp(np.mean(np.log(ratios)))):.3f}")


if __name__ == "__main__":
    main()

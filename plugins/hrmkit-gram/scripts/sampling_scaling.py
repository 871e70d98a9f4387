"""Measure inference-time width scaling of the GRAM core on a small CPU Sudoku run.

Trains PuzzleTask + GRAM on a generated Sudoku set, then evaluates the same checkpoint with N sampled trajectories
per puzzle (N = 1, 4, 16; whole-answer and per-position voting) and with the mean trajectory, and prints a Markdown
table of token accuracy, exact accuracy (voted), coverage (some trajectory right) and evaluation time. Tiny and
short by design: the numbers show the mechanism, not GRAM's published accuracy.

    python plugins/hrmkit-gram/scripts/sampling_scaling.py --steps 300
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from hrmkit.cores import build_core
from hrmkit.data import PuzzleDataModule
from hrmkit.data.puzzles.sudoku import build_sudoku
from hrmkit.tasks.puzzle import PuzzleTask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--train_size", type=int, default=512)
    parser.add_argument("--test_size", type=int, default=64)
    parser.add_argument("--givens", default="easy")
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    torch.set_num_threads(2)
    L.seed_everything(0)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "sudoku"
        t0 = time.perf_counter()
        build_sudoku(str(data_dir), train_size=args.train_size, test_size=args.test_size, levels=[args.givens],
                     num_aug=0, seed=0)
        print(f"dataset built ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        data = PuzzleDataModule(str(data_dir), batch_size=32, eval_batch_size=args.test_size)
        core = build_core("gram", "tiny", hidden_size=args.hidden, num_heads=4, max_seq_len=128)
        task = PuzzleTask(core, halting="hrm", halt_max_steps=2, lr=1e-3, warmup_steps=20)
        trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp)
        start = time.perf_counter()
        trainer.fit(task, data)
        train_s = time.perf_counter() - start
        print(f"trained ({train_s:.0f} s)", file=sys.stderr, flush=True)
        evaluator = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                              enable_model_summary=False, default_root_dir=tmp)
        rows = []
        settings = [("mean trajectory", 1, "answer", 0.0)]
        settings += [(f"N={n}, {rule}", n, rule, 1.0) for n in args.samples for rule in ("answer", "position")
                     if n > 1 or rule == "answer"]
        for name, n, rule, temperature in settings:
            task.hparams.num_samples, task.hparams.vote, task.core.temperature = n, rule, temperature
            torch.manual_seed(0)
            start = time.perf_counter()
            m = evaluator.validate(task, data, verbose=False)[0]
            rows.append((name, m["val/token_acc"], m["val/exact_acc"], m.get("val/exact_acc_any", m["val/exact_acc"]),
                         time.perf_counter() - start))
    print(f"GRAM tiny (hidden {args.hidden}), {args.steps} steps x batch 32 on {args.train_size} '{args.givens}' "
          f"Sudoku, {train_s:.0f} s training on CPU; {args.test_size} test puzzles\n")
    print("| evaluation | token acc | exact acc (voted) | coverage (any trajectory) | eval s |")
    print("|---|---|---|---|---|")
    for name, tok, exact, cover, secs in rows:
        print(f"| {name} | {tok:.3f} | {exact:.3f} | {cover:.3f} | {secs:.1f} |")


if __name__ == "__main__":
    main()

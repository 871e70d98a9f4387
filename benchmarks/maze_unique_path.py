"""Should Maze-Hard-style training data hold only mazes with a unique shortest path? Measured two ways.

    .venv/bin/python benchmarks/maze_unique_path.py [--steps 400] [--size 10] [--count 60]

1. Data: at the Maze-Hard setting (30×30, path ≥ 110, 20 loops) and the small training setting below, how many
   generated mazes have more than one shortest path, how many label cells are an arbitrary choice (on the label's
   path but not on every shortest path), and what the unique-path option costs in generation time.
2. Training: the same small HRM trained for a fixed number of steps (so machine load does not change the result) on
   default mazes and on unique-path mazes, both evaluated on the SAME default test mazes (several shortest paths,
   as Maze-Hard's are), with the label metric and the shortest-path judge.

Prints one table per part; docs/data.md records the figures and the decision.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np

from hrmkit.cores import build_core
from hrmkit.data import PuzzleDataModule
from hrmkit.data.puzzles.maze import (
    GOAL,
    PATH,
    START,
    WALL,
    _bfs,
    build_maze,
    count_shortest_paths,
    generate_mazes,
)
from hrmkit.tasks.puzzle import PuzzleTask


def arbitrary_label_cells(question: np.ndarray, answer: np.ndarray) -> float:
    """Fraction of the label's path cells that some other shortest path avoids (the label chose them arbitrarily)."""
    passable = question != WALL
    s, g = tuple(np.argwhere(question == START)[0]), tuple(np.argwhere(question == GOAL)[0])
    ds, dg = _bfs(passable, s)[0], _bfs(passable, g)[0]
    total = ds[g]
    on_some = (ds >= 0) & (dg >= 0) & (ds + dg == total)
    # a cell is on every shortest path iff it is the only on-some-path cell at its distance from S
    levels = np.bincount(ds[on_some], minlength=total + 1)
    forced = on_some & (levels[np.clip(ds, 0, total)] == 1)
    path = answer == PATH
    return float((path & ~forced).sum() / max(1, path.sum()))


def data_stats(size: int, min_path: int, loops: int, count: int, seed: int) -> None:
    start = time.perf_counter()
    mazes = list(generate_mazes(count, seed=seed, size=size, min_path_len=min_path, num_loops=loops))
    t_default = (time.perf_counter() - start) / count
    multi = sum(count_shortest_paths(m.question) > 1 for m in mazes)
    arbitrary = np.mean([arbitrary_label_cells(m.question, m.answer) for m in mazes])
    n_unique = max(1, count // 4)
    start = time.perf_counter()
    list(generate_mazes(n_unique, seed=seed, size=size, min_path_len=min_path, num_loops=loops, unique_path=True))
    t_unique = (time.perf_counter() - start) / n_unique
    print(f"| {size}x{size}, path >= {min_path}, {loops} loops | {multi}/{count} ({multi / count:.0%}) | "
          f"{arbitrary:.1%} | {t_default * 1e3:.0f} ms | {t_unique * 1e3:.0f} ms ({t_unique / t_default:.1f}x) |")


def train_and_score(train_dir: Path, steps: int, seed: int) -> dict[str, float]:
    L.seed_everything(seed, verbose=False)
    core = build_core("hrm", "tiny", hidden_size=64, num_heads=4, max_seq_len=256)
    task = PuzzleTask(core, halting="hrm", halt_max_steps=4, lr=2e-3, warmup_steps=20, puzzle_emb_len=1)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, val_check_interval=steps,
                        check_val_every_n_epoch=None, num_sanity_val_steps=0)
    dm = PuzzleDataModule(str(train_dir), batch_size=32, eval_batch_size=64, seed=seed)
    trainer.fit(task, dm)
    (metrics,) = trainer.validate(task, dm, verbose=False)
    return {k: float(v) for k, v in metrics.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--size", type=int, default=10)
    parser.add_argument("--min_path", type=int, default=8)
    parser.add_argument("--loops", type=int, default=3)
    parser.add_argument("--train_size", type=int, default=2000)
    parser.add_argument("--test_size", type=int, default=300)
    parser.add_argument("--count", type=int, default=60, help="mazes per row of the data table")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per arm")
    parser.add_argument("--skip_data", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    if not args.skip_data:
        print("| setting | mazes with > 1 shortest path | label path cells chosen arbitrarily | s/maze default | "
              "s/maze unique-only |\n|---|---|---|---|---|")
        data_stats(30, 110, 20, args.count, 0)
        data_stats(args.size, args.min_path, args.loops, args.count * 4, 0)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # the shared test split: default mazes (several shortest paths allowed), as Maze-Hard's test set
        common = dict(size=args.size, min_path_len=args.min_path, num_loops=args.loops, seed=0)
        build_maze(str(root / "default"), train_size=args.train_size, test_size=args.test_size, **common)
        build_maze(str(root / "unique"), train_size=args.train_size, test_size=args.test_size, unique_path=True,
                   **common)
        # evaluate both on default test mazes: swap the unique build's test split for the default one
        shutil.rmtree(root / "unique" / "test")
        shutil.copytree(root / "default" / "test", root / "unique" / "test")
        meta_u, meta_d = (root / "unique" / "metadata.json"), (root / "default" / "metadata.json")
        mu, md = json.loads(meta_u.read_text()), json.loads(meta_d.read_text())
        mu["splits"]["test"] = md["splits"]["test"]
        meta_u.write_text(json.dumps(mu))
        print(f"\nTraining: HRM d=64 H2/L2 1+1 layers, {args.steps} steps of batch 32, {args.train_size} train mazes "
              f"{args.size}x{args.size}; test: {args.test_size} default mazes (shared)\n")
        print("| training data | seed | val/exact_acc (label) | val/exact_acc_judge | val/token_acc |\n"
              "|---|---|---|---|---|")
        for seed in range(args.seeds):
            for name in ("default", "unique"):
                start = time.perf_counter()
                m = train_and_score(root / name, args.steps, seed)
                print(f"| {name} | {seed} | {m['val/exact_acc']:.3f} | {m['val/exact_acc_judge']:.3f} | "
                      f"{m['val/token_acc']:.3f} |  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

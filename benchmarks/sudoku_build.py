"""Sudoku data throughput on this machine: puzzles/s generated per difficulty, then examples/s streamed.

    .venv/bin/python benchmarks/sudoku_build.py --count 2000 --workers 2 --groups 1500 --num-aug 100

Part 1 generates ``--count`` unique-solution puzzles per level with ``--workers`` processes.
Part 2 builds a dataset of ``--groups`` train groups (``--num-aug`` versions each) in a temporary directory and
streams ``--epochs`` training epochs plus one evaluation pass through ``PuzzleDataModule`` for each loader
``--loader-workers`` value, reporting examples/s (collated int64 batches, nothing else done with them).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hrmkit.data.modules import PuzzleDataModule
from hrmkit.data.puzzles.sudoku import build_sudoku, generate_many, parse_level


def bench_generation(levels: list[str], count: int, workers: int, seed: int) -> None:
    print(f"{'level':<10}{'givens':>8}{'puzzles':>9}{'seconds':>9}{'puzzles/s':>11}{'mean givens':>13}")
    for level in levels:
        givens = parse_level(level)
        start = time.perf_counter()
        puzzles, _ = generate_many(count, givens, seed=seed, key=f"bench/{level}", num_workers=workers)
        dt = time.perf_counter() - start
        mean = float((puzzles > 0).sum(1).mean())
        print(f"{level:<10}{givens!s:>8}{count:>9}{dt:>9.2f}{count / dt:>11.1f}{mean:>13.1f}")


def bench_streaming(groups: int, num_aug: int, batch_size: int, epochs: int, loader_workers: list[int],
                    workers: int, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sudoku"
        per_level = max(1, groups // 3)
        start = time.perf_counter()
        meta = build_sudoku(str(out), train_size=per_level, test_size=per_level, num_aug=num_aug, seed=seed,
                            num_workers=workers)
        dt = time.perf_counter() - start
        train = meta.splits["train"]
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
        print(f"\nbuild: {train.total_groups} train groups x {train.total_puzzles // train.total_groups} versions "
              f"+ {meta.splits['test'].total_groups} test in {dt:.2f} s ({size:.1f} MiB on disk, "
              f"{train.total_puzzles / dt:.0f} stored versions/s incl. generation)")
        print(f"{'loader':<8}{'workers':>8}{'batches':>9}{'examples':>10}{'seconds':>9}{'examples/s':>12}")
        for nw in loader_workers:
            dm = PuzzleDataModule(str(out), batch_size=batch_size, num_workers=nw, seed=seed)
            dm.setup("fit")
            for name, loader, passes in (("train", dm.train_dataloader(), epochs), ("eval", dm.val_dataloader(), 1)):
                start = time.perf_counter()
                batches = [b for _ in range(passes) for b in loader]
                dt = time.perf_counter() - start
                n = sum(int(b["valid"].sum()) for b in batches)
                print(f"{name:<8}{nw:>8}{len(batches):>9}{n:>10}{dt:>9.2f}{n / dt:>12.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", nargs="*", default=["easy", "medium", "hard"])
    p.add_argument("--count", type=int, default=2000, help="puzzles generated per level")
    p.add_argument("--workers", type=int, default=2, help="generation processes")
    p.add_argument("--groups", type=int, default=1500, help="train groups in the streamed dataset")
    p.add_argument("--num-aug", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--loader-workers", nargs="*", type=int, default=[0, 2])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-generation", action="store_true")
    a = p.parse_args()
    if not a.skip_generation:
        bench_generation(a.levels, a.count, a.workers, a.seed)
    bench_streaming(a.groups, a.num_aug, a.batch_size, a.epochs, a.loader_workers, a.workers, a.seed)


if __name__ == "__main__":
    main()

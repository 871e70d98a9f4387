"""Evaluation cut short still sees every tag; ``hrmkit plot`` draws a resumed run as one curve."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hrmkit.commands.plot import plot
from hrmkit.data.modules import PuzzleDataModule, stratified_order
from hrmkit.data.puzzles.sudoku import build_sudoku
from hrmkit.pictures.charts import stitch_runs


def test_stratified_order_puts_every_tag_in_every_prefix():
    tags = np.array([0] * 6 + [1] * 3 + [2] * 3)
    order = stratified_order(tags)
    assert sorted(order.tolist()) == list(range(12))
    assert set(tags[order[:4]]) == {0, 1, 2}
    assert [i for i in order if tags[i] == 0] == list(range(6))  # stored order kept within a tag


@pytest.mark.parametrize("limit", [1, 0.3])
def test_a_limited_validation_sees_every_tag(tmp_path, limit):
    data = tmp_path / "sudoku"
    build_sudoku(str(data), train_size=4, test_size=4, num_aug=0, seed=0)  # easy, medium, hard: 4 each, in order
    dm = PuzzleDataModule(str(data), batch_size=2, eval_batch_size=4)
    dm.trainer = SimpleNamespace(limit_val_batches=limit, world_size=1)
    dm.setup("validate")
    first = next(iter(dm.val_dataloader()))
    assert set(first["tag"].tolist()) == {0, 1, 2}
    everything = [t for batch in dm.val_dataloader() for t in batch["tag"].tolist()]
    assert sorted(everything) == [0] * 4 + [1] * 4 + [2] * 4
    dm.trainer = SimpleNamespace(limit_val_batches=1.0, world_size=1)  # uncut: stored order, as before
    assert next(iter(dm.val_dataloader()))["tag"].tolist() == [0, 0, 0, 0]


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_plot_stitches_older_split_versions(tmp_path):
    logs = tmp_path / "run/lightning_logs"
    _write(logs / "version_0/metrics.csv", [{"step": s, "train/loss": 10 - s} for s in range(6)])
    # resumed from the step-4 checkpoint: its points replace the first segment's from step 4 on
    _write(logs / "version_1/metrics.csv", [{"step": s, "train/loss": 5 - s / 10} for s in range(4, 8)])
    _write(logs / "version_2/metrics.csv", [{"step": 7, "val/exact_acc": 0.5}])  # a validate run: on its own
    _write(logs / "version_3/metrics.csv", [{"step": s, "train/loss": 1.0} for s in range(3)])  # a new run
    runs = stitch_runs(sorted(logs.rglob("metrics.csv")))
    assert [first.parent.name for first, _ in runs] == ["version_0", "version_2", "version_3"]
    steps = [x for x, _ in runs[0][1]["train/loss"]]
    assert steps == [0, 1, 2, 3, 4, 5, 6, 7]
    assert runs[0][1]["train/loss"][4][1] == pytest.approx(4.6)  # from the resumed segment
    written = plot(str(tmp_path / "run"))
    assert str(logs / "version_0/plots/loss.png") in written
    assert not (logs / "version_1/plots").exists()

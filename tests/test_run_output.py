"""What a run prints and logs: halted-only metrics never log a false 0, the model summary shows App. A FLOPs,
data builds print one summary line, and the Lightning warnings hrmkit's own usage triggered are gone."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import lightning as L
import pytest

from hrmkit.cli import main
from hrmkit.commands.lightning import _default_logger
from hrmkit.cores import build_core
from hrmkit.cores.flops import core_flops_per_token, core_forward_flops_per_token
from hrmkit.data import PuzzleDataModule
from hrmkit.data.puzzles.maze import build_maze
from hrmkit.tasks.puzzle import PuzzleTask

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def maze_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("maze") / "ds"
    build_maze(str(out), train_size=16, test_size=4, size=10, min_path_len=4, num_loops=2, seed=0)
    return out


class StopAt(L.Callback):
    """Stops the run after ``step`` batches the way Lightning's Timer does (``should_stop`` at batch end)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _rows(log_dir: Path) -> list[dict]:
    (path,) = log_dir.rglob("metrics.csv")
    with path.open() as f:
        return [r for r in csv.DictReader(f) if r.get("train/loss")]


def _fit(maze_data: Path, tmp_path: Path, halt_max_steps: int, max_steps: int, log_every: int, stop: int | None):
    task = PuzzleTask(build_core("hrm", "tiny", max_seq_len=128), halt_max_steps=halt_max_steps,
                      halt_exploration_prob=0.0, warmup_steps=1)
    callbacks = [StopAt(stop)] if stop else []
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, log_every_n_steps=log_every, limit_val_batches=0,
                        logger=L.pytorch.loggers.CSVLogger(tmp_path), enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, callbacks=callbacks)
    trainer.fit(task, PuzzleDataModule(str(maze_data), batch_size=4))
    return _rows(tmp_path)


def test_time_limited_run_logs_no_false_zero_when_no_slot_halted(maze_data, tmp_path):
    # halt_max_steps=4 and a fresh q head: no sequence halts before its 4th segment. The run stops after step 2
    # (as a time limit would), off the logging interval: the last row has the losses but no halted-only metric.
    rows = _fit(maze_data, tmp_path, halt_max_steps=4, max_steps=50, log_every=50, stop=2)
    assert len(rows) == 1 and rows[0]["step"] == "1"
    last = rows[-1]
    assert last["train/loss"] and last["train/halted_frac"] == "0.0"
    for key in ("train/token_acc", "train/exact_acc", "train/segments", "train/q_halt_acc"):
        assert last.get(key, "") == "", f"{key} logged {last.get(key)!r} although no sequence halted"


def test_halted_metrics_average_every_halted_sequence_since_the_last_row(maze_data, tmp_path):
    # halt_max_steps=2: every slot halts at its 2nd segment, i.e. on steps 2 and 4; rows every 2 steps see them.
    rows = _fit(maze_data, tmp_path, halt_max_steps=2, max_steps=4, log_every=2, stop=None)
    assert [r["step"] for r in rows] == ["1", "3"]
    assert all(float(r["train/segments"]) == 2.0 for r in rows)
    assert all(0.0 <= float(r["train/token_acc"]) <= 1.0 for r in rows)


def test_model_summary_shows_app_a_flops_per_sample(maze_data, capsys, tmp_path):
    task = PuzzleTask(build_core("hrm", "tiny", max_seq_len=128), halt_max_steps=2)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(task, PuzzleDataModule(str(maze_data), batch_size=4))
    out = capsys.readouterr().out
    per_token = core_flops_per_token(task.core) + core_forward_flops_per_token(task.core)  # + the Q-target pass
    expected = per_token * (100 + 1)  # 10x10 grid + 1 puzzle-embedding position
    assert f"{expected / 1e6:.3g} MFLOP per sample per segment" in " ".join(out.split())
    assert "Total FLOPs" not in out and "FLOPs ┃" not in out  # Lightning's all-zero column and total are gone
    # the HRM tiny core: 6 calls of a 1-layer stack forward, the last H and L call backward
    stack = sum(p.numel() for p in task.core.H.parameters())
    assert core_flops_per_token(task.core) == 2 * 6 * stack + 4 * 2 * stack


def test_summary_is_still_off_when_disabled(maze_data, capsys, tmp_path):
    task = PuzzleTask(build_core("hrm", "tiny", max_seq_len=128), halt_max_steps=2)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(task, PuzzleDataModule(str(maze_data), batch_size=4))
    assert "Training FLOPs" not in capsys.readouterr().out


def test_data_builds_print_one_summary_line(tmp_path, capsys):
    main(["data", "maze", "--out_dir", str(tmp_path / "m"), "--size", "10", "--min_path_len", "4", "--num_loops",
          "2", "--train_size", "6", "--test_size", "3"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("hrmkit: built")]
    assert len(lines) == 1
    line = lines[0]
    assert f"maze dataset {tmp_path / 'm'}" in line and "train 6 puzzles (6 examples)" in line
    assert "test 3 puzzles (3 examples)" in line and line.endswith(" s") and "kB" in line


def test_default_logger_is_an_explicit_csv_logger_without_tensorboard(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a))
    logger = _default_logger(str(tmp_path))
    assert isinstance(logger, L.pytorch.loggers.CSVLogger) and Path(logger.save_dir) == tmp_path
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        L.Trainer(logger=logger, accelerator="cpu", enable_progress_bar=False)
    assert not [w for w in caught if "tensorboardX" in str(w.message)]


def test_tiny_fit_raises_none_of_the_preventable_warnings(maze_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:  # the filters in force, as in a real run
        main(["fit", "-c", str(ROOT / "tests/recipes/maze-hrm.yaml"), "--data.init_args.data_dir", str(maze_data),
              "--trainer.enable_model_summary", "false"])
    messages = [str(w.message) for w in caught]
    for text in ("tensorboardX", "`IterableDataset` has `__len__`", "smaller than the logging interval"):
        assert not [m for m in messages if text in m], f"warning still raised: {text}"

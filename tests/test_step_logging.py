"""Per-step training metrics are produced only when somebody reads them, and the CSV logs keep every value."""

from __future__ import annotations

import csv

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

import hrmkit.tasks.puzzle
import hrmkit.tasks.text
from hrmkit.cores import build_core
from hrmkit.data.text.packing import pack_batch
from hrmkit.tasks import PuzzleTask, TextTask
from hrmkit.tasks.step_logging import _watches_training, step_logging

STEPS, EVERY = 8, 3


def make(kind: str):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if kind == "puzzle":
        task = PuzzleTask(build_core("hrm", "tiny", max_seq_len=10), vocab_size=5, seq_len=9, num_puzzle_identifiers=2,
                          halt_max_steps=3, warmup_steps=1)
        batches = [{"inputs": torch.from_numpy(rng.integers(1, 5, (4, 9))),
                    "labels": torch.from_numpy(rng.integers(1, 5, (4, 9))),
                    "puzzle_identifiers": torch.zeros(4, dtype=torch.long)} for _ in range(STEPS)]
    else:
        task = TextTask(build_core("hrm", "text-tiny", max_seq_len=64), vocab_size=32, warmup_steps=1)
        batches = [pack_batch([(rng.integers(3, 32, 12).astype(np.int64), 5),
                               (rng.integers(3, 32, 10).astype(np.int64), 4)], 32, pad_id=0) for _ in range(STEPS)]
    return task, DataLoader(batches, batch_size=None)


def fit(tmp_path, kind: str, callbacks=(), bar: bool = False):
    task, loader = make(kind)
    trainer = L.Trainer(max_steps=STEPS, accelerator="cpu", log_every_n_steps=EVERY, enable_checkpointing=False,
                        logger=CSVLogger(tmp_path, name=kind), callbacks=list(callbacks), enable_model_summary=False,
                        enable_progress_bar=bar, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(task, loader)
    with open(trainer.logger.experiment.metrics_file_path) as f:
        rows = list(csv.DictReader(f))
    return rows, trainer


def record(monkeypatch, module, force: str | None = None) -> list[tuple[int, str]]:
    seen: list[tuple[int, str]] = []

    def spy(task, batch_idx):
        decision = force or step_logging(task, batch_idx)
        seen.append((batch_idx, decision))
        return decision

    monkeypatch.setattr(module, "step_logging", spy)
    return seen


@pytest.mark.parametrize("kind,module", [("puzzle", hrmkit.tasks.puzzle), ("text", hrmkit.tasks.text)])
def test_csv_logs_are_unchanged_and_metrics_skip_unread_steps(tmp_path, monkeypatch, kind, module):
    before_seen = record(monkeypatch, module, force="all")  # the old behaviour: every step computes and logs all
    before, _ = fit(tmp_path / "before", kind)
    after_seen = record(monkeypatch, module)
    after, trainer = fit(tmp_path / "after", kind, [TQDMProgressBar(refresh_rate=4)], bar=True)
    assert before and before[0].keys() == after[0].keys()  # same columns
    assert before == after  # same rows (steps) and the same values
    assert {k for k in after[0] if k.startswith("train/")} >= {"train/loss", "train/exact_acc"}
    assert len(before_seen) == len(after_seen) == STEPS
    # logged steps 2, 5 (every 3rd), the run's last step 7; the bar alone refreshes at step 3 (every 4th)
    assert after_seen == [(0, "none"), (1, "none"), (2, "all"), (3, "progress"), (4, "none"), (5, "all"),
                          (6, "none"), (7, "all")]
    assert "train/loss" in trainer.callback_metrics  # fresh after fit


def test_monitor_on_a_training_metric_gets_it_every_step(tmp_path, monkeypatch):
    seen = record(monkeypatch, hrmkit.tasks.text)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="train/token_acc", mode="max", every_n_train_steps=2)
    task, loader = make("text")
    trainer = L.Trainer(max_steps=4, accelerator="cpu", log_every_n_steps=50, logger=False, callbacks=[ckpt],
                        enable_model_summary=False, enable_progress_bar=False)
    trainer.fit(task, loader)
    assert [d for _, d in seen] == ["all"] * 4
    assert ckpt.best_model_path  # it found its metric
    assert not _watches_training(ModelCheckpoint(dirpath=tmp_path / "v", monitor="val/loss"))
    assert not _watches_training(ModelCheckpoint(dirpath=tmp_path / "w"))  # no monitor: last/periodic checkpoints


def test_outside_fit_nothing_is_logged():
    task, loader = make("text")
    batch = next(iter(loader))
    assert step_logging(task, 0) == "none"
    task.training_step(batch, 0).backward()  # no trainer: no self.log warning, a loss all the same

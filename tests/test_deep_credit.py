"""DeepCreditWarmup: the reference schedule's exact boundaries, clamping, logging and resuming."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from hrmkit.callbacks import DeepCreditWarmup, deep_credit_bp_steps
from hrmkit.cores import build_core
from hrmkit.data import SyntheticDataModule
from hrmkit.tasks import SequenceTask


def _changes(total: int, ratio: float = 0.2, lo: int = 2, hi: int = 5) -> list[tuple[int, int]]:
    """(first step, value) of every value the schedule takes over ``total`` steps."""
    out: list[tuple[int, int]] = []
    for step in range(1, total + 1):
        value = deep_credit_bp_steps(step, total, lo, hi, ratio)
        if not out or out[-1][1] != value:
            out.append((step, value))
    return out


def test_boundaries_of_the_papers_run():
    # specs/hrm-text.md §3.1: 60B tokens / 196,608 tokens per step -> floor = 305,175 steps, window 61,035
    assert _changes(305_175) == [(1, 2), (20_345, 3), (40_690, 4), (61_035, 5)]
    # a round total: window 60,000 -> thirds exactly
    assert _changes(300_000) == [(1, 2), (20_000, 3), (40_000, 4), (60_000, 5)]


def test_ratio_zero_is_max_from_step_one_and_ratio_one_ends_at_the_last_step():
    assert _changes(1000, ratio=0.0) == [(1, 5)]
    assert _changes(9, ratio=1.0) == [(1, 2), (3, 3), (6, 4), (9, 5)]


def test_callback_schedule_matches_the_function_and_validates():
    cb = DeepCreditWarmup(total_steps=300_000)
    assert [cb.bp_steps_at(s) for s in (1, 19_999, 20_000, 59_999, 60_000, 300_000)] == [2, 2, 3, 4, 5, 5]
    with pytest.raises(ValueError, match="min_steps <= max_steps"):
        DeepCreditWarmup(min_steps=5, max_steps=2)
    with pytest.raises(ValueError, match="warmup_ratio"):
        DeepCreditWarmup(warmup_ratio=-0.1)
    with pytest.raises(ValueError, match="total_steps"):
        DeepCreditWarmup(total_steps=0)
    with pytest.raises(RuntimeError, match="resolved at train start"):
        DeepCreditWarmup().bp_steps_at(1)


class _Record(Callback):
    """Reads the core's horizon at the start of every batch (registered after DeepCreditWarmup)."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen[trainer.global_step + 1] = pl_module.core.bp_steps


def _task(variant: str = "text-tiny") -> SequenceTask:
    return SequenceTask(build_core("hrm", variant, hidden_size=16, num_heads=2), vocab_size=8)


def _data() -> SyntheticDataModule:
    return SyntheticDataModule("reverse", seq_len=4, vocab_size=8, num_train=8 * 64, num_val=8, batch_size=8)


def _trainer(tmp_path: Path, max_steps: int, callbacks: list[Callback], **kw) -> L.Trainer:
    kw.setdefault("logger", False)
    kw.setdefault("enable_checkpointing", False)
    return L.Trainer(max_steps=max_steps, accelerator="cpu", default_root_dir=tmp_path, callbacks=callbacks,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=0, **kw)


def test_tiny_run_sets_and_logs_bp_steps(tmp_path):
    """HRM text-tiny (8 calls), total from max_steps = 12, ratio 0.5: window 6 -> 2,3,3,4,4,5,5,..."""
    L.seed_everything(0)
    record = _Record()
    logger = CSVLogger(tmp_path, name="run")
    trainer = _trainer(tmp_path, 12, [DeepCreditWarmup(2, 5, 0.5), record], logger=logger, log_every_n_steps=1)
    trainer.fit(_task(), _data())
    expected = {s: deep_credit_bp_steps(s, 12, 2, 5, 0.5) for s in range(1, 13)}
    assert record.seen == expected
    assert [expected[s] for s in (1, 2, 4, 6, 12)] == [2, 3, 4, 5, 5]
    rows = list(csv.DictReader(open(Path(logger.log_dir) / "metrics.csv")))
    logged = {int(r["step"]) + 1: float(r["train/bp_steps"]) for r in rows if r.get("train/bp_steps")}
    assert logged == {s: float(v) for s, v in expected.items()}


def test_out_of_range_ramp_is_clamped_with_one_warning(tmp_path):
    record = _Record()
    # HRM "tiny": 6 calls, min_bp_steps 2; ask for 1 -> 9
    with pytest.warns(UserWarning, match=r"leaves the valid range \[2, 6\]"):
        _trainer(tmp_path, 3, [DeepCreditWarmup(1, 9, 0.0), record]).fit(_task("tiny"), _data())
    assert set(record.seen.values()) == {6}


def test_infinite_total_is_a_clear_error(tmp_path):
    trainer = _trainer(tmp_path, -1, [DeepCreditWarmup()], max_time={"seconds": 5})
    with pytest.raises(ValueError, match="estimated_stepping_batches is infinite"):
        trainer.fit(_task(), _data())


def test_module_without_core_is_a_clear_error(tmp_path):
    task = _task("tiny")
    task.core = None  # type: ignore[assignment]
    with pytest.raises(TypeError, match="`core` attribute"):
        _trainer(tmp_path, 1, [DeepCreditWarmup()]).fit(task, _data())


@pytest.mark.filterwarnings("ignore:.*callbacks used to create the checkpoint.*",
                            "ignore:.*resuming from a checkpoint.*")
def test_resume_from_a_checkpoint_continues_the_ramp(tmp_path):
    total = 12
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=5)
    first = _Record()
    L.seed_everything(0)
    _trainer(tmp_path, 5, [DeepCreditWarmup(2, 5, 0.5, total_steps=total), first, ckpt_cb],
             enable_checkpointing=True).fit(_task(), _data())
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    state = torch.load(ckpt, weights_only=False)["callbacks"]["DeepCreditWarmup"]
    assert state == {"min_steps": 2, "max_steps": 5, "warmup_ratio": 0.5, "total_steps": total}

    second = _Record()
    _trainer(tmp_path, total, [DeepCreditWarmup(2, 5, 0.5, total_steps=total), second]).fit(
        _task(), _data(), ckpt_path=ckpt)
    assert min(second.seen) == 6
    assert {**first.seen, **second.seen} == {s: deep_credit_bp_steps(s, total, 2, 5, 0.5) for s in range(1, 13)}

    third = _Record()
    changed = r"warmup_ratio: 0.5 -> 0.2, total_steps: 12 -> 40.*bp_steps at step 6: 5 -> 4"
    with pytest.warns(UserWarning, match=changed):
        _trainer(tmp_path, 7, [DeepCreditWarmup(2, 5, 0.2, total_steps=40), third]).fit(
            _task(), _data(), ckpt_path=ckpt)
    assert third.seen == {6: 4, 7: 4}  # window 8: 2 + floor(6/8 * 3)

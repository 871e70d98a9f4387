"""MagicNormHealth: per-call logs on measured steps only, and NaN / bound / drift / explosion / spike alarms."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from hrmkit.callbacks import MagicNormError, MagicNormHealth, MagicNormWarning
from hrmkit.commands.plot import plot
from hrmkit.cores import build_core
from hrmkit.data import SyntheticDataModule
from hrmkit.tasks import SequenceTask

TEXT_CALLS = ["L0", "L1", "L2", "H0", "L3", "L4", "L5", "H1"]  # HRM text-tiny, bp_steps 5: H0 L3 L4 L5 H1 keep grads


def _task(norm: str = "magic") -> SequenceTask:
    if norm == "magic":
        core = build_core("hrm", "text-tiny", hidden_size=16, num_heads=2)
    else:
        core = build_core("hrm", "tiny", hidden_size=16, num_heads=2, norm=norm)
    return SequenceTask(core, vocab_size=8)


def _fit(tmp_path: Path, task: SequenceTask, steps: int, callbacks: list[Callback], **kw) -> L.Trainer:
    L.seed_everything(0)
    kw.setdefault("logger", False)
    data = SyntheticDataModule("reverse", seq_len=4, vocab_size=8, num_train=8 * 64, num_val=8, batch_size=8)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", default_root_dir=tmp_path, callbacks=callbacks,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, **kw)
    trainer.fit(task, data)
    return trainer


class _Probe(Callback):
    """Whether telemetry is on during each batch (runs after MagicNormHealth's hooks)."""

    def __init__(self) -> None:
        self.active: dict[int, bool] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.active[trainer.global_step] = pl_module.core._telemetry is not None


class _AtStep(Callback):
    """Run ``fn(pl_module)`` before the training batch of one step (a planted fault)."""

    def __init__(self, step: int, fn) -> None:
        self.step, self.fn = step, fn

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                self.fn(pl_module)


def _plant_nan(task: SequenceTask, call: int = 2) -> None:
    """NaN into the output of schedule position ``call`` (an L call) via a forward hook on the L stack."""
    def hook(module, args, out):
        return out * float("nan") if args[4] == call else out

    task.core.L.register_forward_hook(hook)


def test_normal_run_logs_per_call_keys_on_measured_steps_only(tmp_path):
    task, cb, probe = _task(), MagicNormHealth(every_n_steps=2), _Probe()
    logger = CSVLogger(tmp_path, name="run")
    with warnings.catch_warnings():
        warnings.simplefilter("error", MagicNormWarning)
        _fit(tmp_path, task, 6, [cb, probe], logger=logger, log_every_n_steps=1)
    assert cb.problems == []
    assert probe.active == {0: True, 1: False, 2: True, 3: False, 4: True, 5: False}
    assert task.core._telemetry is None and not task.core.L._forward_hooks  # everything removed again
    rows = [r for r in csv.DictReader(open(Path(logger.log_dir) / "metrics.csv")) if r.get("magicnorm/rms/L0")]
    assert [int(r["step"]) for r in rows] == [0, 2, 4]
    for name in TEXT_CALLS:
        assert abs(float(rows[-1][f"magicnorm/rms/{name}"]) - 1.0) < 1e-3  # MagicNorm: unit RMS after every call
        assert float(rows[-1][f"magicnorm/max_abs/{name}"]) > 1.0
    grads = {n for n in TEXT_CALLS if rows[-1].get(f"magicnorm/grad_norm/{n}")}
    assert grads == {"H0", "L3", "L4", "L5", "H1"}  # the calls inside the gradient horizon
    assert abs(float(rows[-1]["magicnorm/rms_ratio_last_first"]) - 1.0) < 1e-3
    assert float(rows[-1]["magicnorm/problems"]) == 0
    charts = [Path(p).name for p in plot(logger.log_dir)]  # the real CSVLogger file renders too
    assert charts == ["loss.png", "accuracy.png", "magicnorm_rms.png", "magicnorm_grad_norm.png"]


def test_planted_nan_raises_before_the_optimizer_step(tmp_path):
    task = _task()
    _plant_nan(task)
    before = {k: v.clone() for k, v in task.state_dict().items()}
    with pytest.raises(MagicNormError, match=r"L2: non-finite rms, max_abs.*Raised before the optimizer step"):
        _fit(tmp_path, task, 3, [MagicNormHealth(every_n_steps=1, on_problem="raise")])
    assert all(torch.equal(before[k], v) for k, v in task.state_dict().items())  # the NaN step never landed
    assert task.core._telemetry is None


def test_planted_nan_warns_or_stops(tmp_path):
    task, cb = _task(), MagicNormHealth(every_n_steps=1)
    _plant_nan(task, call=0)
    with pytest.warns(MagicNormWarning, match="L0: non-finite"):
        trainer = _fit(tmp_path, task, 2, [cb])
    assert trainer.global_step == 2 and {p.kind for p in cb.problems} == {"non-finite"}
    assert {p.call for p in cb.problems} == set(TEXT_CALLS)  # the NaN reaches every later call

    task, cb = _task(), MagicNormHealth(every_n_steps=1, on_problem="stop")
    _plant_nan(task)
    with pytest.warns(MagicNormWarning, match="Stopping training"):
        trainer = _fit(tmp_path, task, 6, [cb])
    assert trainer.global_step == 1  # the flagged step finishes, then fit stops


def test_state_exploding_during_training_is_flagged(tmp_path):
    """A pre-norm core (no exit norm): scaling the L stack's weights at step 4 blows the state up."""
    task, cb = _task("pre"), MagicNormHealth(every_n_steps=1, spike_min_history=3)
    scale = _AtStep(4, lambda m: [p.mul_(10.0) for p in m.core.L.parameters()])
    with pytest.warns(MagicNormWarning, match="state RMS .* its running median"):
        _fit(tmp_path, task, 5, [scale, cb])
    assert {p.step for p in cb.problems} == {4}
    assert {p.call for p in cb.problems if p.kind == "growth"} >= {"L0", "L1", "L2", "L3"}


def test_gradient_spike_is_flagged_in_a_magicnorm_core(tmp_path):
    """MagicNorm keeps the state at unit RMS, so a blow-up shows in the gradients: scale the head at step 4."""
    task, cb = _task(), MagicNormHealth(every_n_steps=1, spike_min_history=3)
    with pytest.warns(MagicNormWarning, match="gradient norm .* its running median"):
        _fit(tmp_path, task, 5, [_AtStep(4, lambda m: m.head.weight.mul_(100.0)), cb])
    assert {(p.step, p.kind) for p in cb.problems} == {(4, "spike")}
    assert {p.call for p in cb.problems} == {"H0", "L3", "L4", "L5", "H1"}
    state = cb.state_dict()
    assert len(state["history"]["spike/H1"]) == 5
    fresh = MagicNormHealth(spike_min_history=3)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state


@pytest.mark.parametrize("norm,kwargs,kind", [("magic", {"rms_bounds": (1.5, 2.0)}, "rms"),
                                              ("pre", {"max_drift": 5.0}, "drift"),
                                              ("pre", {}, None)])
def test_rms_bounds_and_pre_norm_drift(tmp_path, norm, kwargs, kind):
    cb = MagicNormHealth(every_n_steps=1, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MagicNormWarning)
        _fit(tmp_path, _task(norm), 1, [cb])
    assert {p.kind for p in cb.problems} == ({kind} if kind else set())


def test_arguments_are_validated():
    for bad in ({"every_n_steps": 0}, {"rms_bounds": (2.0, 1.0)}, {"spike_factor": 1.0}, {"max_drift": 0.5},
                {"spike_min_history": 40}, {"on_problem": "ignore"}):
        with pytest.raises(ValueError):
            MagicNormHealth(**bad)

"""Deep-credit warm-up (HRM-Text's "BP warm-up", specs/hrm-text.md §3.1) as a Lightning callback.

Before every training batch the callback sets ``pl_module.core.bp_steps``, the number of module calls that keep
gradients, by the reference rule::

    warmup   = total_steps · warmup_ratio
    progress = min(1, step / warmup)        (1 when warmup == 0)
    bp_steps = min_steps + ⌊progress · (max_steps − min_steps)⌋

with ``step`` the 1-based optimizer step (``trainer.global_step + 1``; micro-batches of one accumulation window
share a value). The arithmetic is the reference's floating-point one, so the boundary steps match it exactly: with
the defaults (2 → 5 over 20 %) and ``total_steps = 305_175`` (⌊60e9 / 196_608⌋, the paper's run) ``bp_steps``
becomes 3, 4 and 5 at steps 20_345, 40_690 and 61_035; with ``total_steps = 300_000`` at 20_000, 40_000 and 60_000.
``warmup_ratio = 0`` (HRM-Text SFT) gives ``max_steps`` from step 1.

Why a callback: the horizon is a training-schedule decision, not a property of the model, and it only needs
``pl_module.core`` (a :class:`~hrmkit.cores.base.RecursiveCore`), so it works with every task.

Resuming: the value is a pure function of ``trainer.global_step``, so ``fit(ckpt_path=...)`` continues the ramp
exactly. The checkpoint also stores ``min_steps``, ``max_steps``, ``warmup_ratio`` and the resolved
``total_steps``; if the resumed run's settings differ (e.g. a larger ``max_steps`` changes the estimated total), the
callback warns and uses the new settings; pin ``total_steps`` to keep the old ramp.

``bp_steps`` changes the set of calls that run with gradients, so under ``torch.compile`` each distinct value
compiles its own graph (4 variants with the defaults).
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from hrmkit.callbacks.common import module_core


def deep_credit_bp_steps(step: int, total_steps: int, min_steps: int = 2, max_steps: int = 5,
                         warmup_ratio: float = 0.2) -> int:
    """The reference ``bp_steps`` for 1-based ``step`` (float arithmetic as in ``hrm_nocarry_bp_warmup.py``)."""
    warmup = total_steps * warmup_ratio
    progress = 1.0 if warmup == 0 else min(1.0, step / warmup)
    return min_steps + math.floor(progress * (max_steps - min_steps))


class DeepCreditWarmup(Callback):
    """Linear-floor ramp of the core's gradient horizon ``bp_steps`` from ``min_steps`` to ``max_steps``.

    Args:
        min_steps: ``bp_steps`` at the start of training (HRM-Text: 2, the original HRM one-step gradient).
        max_steps: ``bp_steps`` after the warm-up window (HRM-Text: 5 of its 8 calls).
        warmup_ratio: warm-up window as a fraction of ``total_steps`` (HRM-Text pretraining 0.2, SFT 0.0).
        total_steps: optimizer steps of the whole run; ``None`` takes ``trainer.estimated_stepping_batches``.

    Values outside the core's valid range ``[core.min_bp_steps, core.num_calls]`` are clamped to it, with one
    warning. ``train/bp_steps`` is logged every step (written at the Trainer's ``log_every_n_steps`` cadence).
    """

    def __init__(self, min_steps: int = 2, max_steps: int = 5, warmup_ratio: float = 0.2,
                 total_steps: int | None = None) -> None:
        if int(min_steps) != min_steps or int(max_steps) != max_steps or not 1 <= min_steps <= max_steps:
            raise ValueError(f"DeepCreditWarmup needs integers 1 <= min_steps <= max_steps, got min_steps={min_steps}, "
                             f"max_steps={max_steps}")
        if not (math.isfinite(warmup_ratio) and warmup_ratio >= 0):
            raise ValueError(f"warmup_ratio must be a finite number >= 0, got {warmup_ratio}")
        if total_steps is not None and (int(total_steps) != total_steps or total_steps < 1):
            raise ValueError(f"total_steps must be a positive integer or None, got {total_steps}")
        self.min_steps, self.max_steps = int(min_steps), int(max_steps)
        self.warmup_ratio = float(warmup_ratio)
        self.total_steps = None if total_steps is None else int(total_steps)
        self._total: int | None = None  # resolved total of the current run
        self._loaded: dict[str, Any] | None = None  # settings found in a checkpoint, checked at train start
        self._clamp_warned = False
        self._current: int | None = None

    # ---------------------------------------------------------------------------------------------------- schedule
    def bp_steps_at(self, step: int) -> int:
        """Unclamped ``bp_steps`` for 1-based optimizer ``step`` (needs the total: set or resolved at train start)."""
        if self._total is None and self.total_steps is None:
            raise RuntimeError("DeepCreditWarmup: total_steps is resolved at train start; pass total_steps to query "
                               "the schedule before fitting")
        total = self._total if self._total is not None else self.total_steps
        return deep_credit_bp_steps(step, total, self.min_steps, self.max_steps, self.warmup_ratio)

    @property
    def current(self) -> int | None:
        """The ``bp_steps`` set before the latest training batch (None before training)."""
        return self._current

    def _resolve_total(self, trainer: pl.Trainer) -> int:
        if self.total_steps is not None:
            return self.total_steps
        estimated = trainer.estimated_stepping_batches
        if not math.isfinite(estimated):
            raise ValueError("DeepCreditWarmup: trainer.estimated_stepping_batches is infinite (no max_steps and no "
                             "max_epochs?); set Trainer(max_steps=...) or pass DeepCreditWarmup(total_steps=...)")
        return max(1, int(estimated))

    def _settings(self) -> dict[str, Any]:
        return {"min_steps": self.min_steps, "max_steps": self.max_steps, "warmup_ratio": self.warmup_ratio,
                "total_steps": self._total}

    # -------------------------------------------------------------------------------------------------------- hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        core = module_core(pl_module, "DeepCreditWarmup")
        self._total = self._resolve_total(trainer)
        if self._loaded is not None:
            old, new = self._loaded, self._settings()
            diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
            if diff:
                step = trainer.global_step + 1
                before = deep_credit_bp_steps(step, old["total_steps"], old["min_steps"], old["max_steps"],
                                              old["warmup_ratio"]) if None not in old.values() else None
                changes = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in diff.items())
                rank_zero_warn(f"DeepCreditWarmup: resumed with different settings ({changes}); the ramp follows the "
                               f"new settings (bp_steps at step {step}: {before} -> {self.bp_steps_at(step)}). Pass "
                               "the checkpoint's values (e.g. total_steps) to continue the old ramp.")
            self._loaded = None
        lo, hi = core.min_bp_steps, core.num_calls
        if not self._clamp_warned and (self.min_steps < lo or self.max_steps > hi):
            self._clamp_warned = True
            rank_zero_warn(f"DeepCreditWarmup: the ramp {self.min_steps}..{self.max_steps} leaves the valid range "
                           f"[{lo}, {hi}] of {type(core).__name__} (schedule {''.join(core.schedule())}); values are "
                           "clamped to it")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        core = module_core(pl_module, "DeepCreditWarmup")
        if self._total is None:  # a Trainer that skipped on_train_start: resolve now
            self._total = self._resolve_total(trainer)
        value = self.bp_steps_at(trainer.global_step + 1)
        value = min(max(value, core.min_bp_steps), core.num_calls)
        if value != core.bp_steps:
            core.bp_steps = value
        self._current = value
        pl_module.log("train/bp_steps", float(value), on_step=True, on_epoch=False)

    # ---------------------------------------------------------------------------------------------------- resuming
    def state_dict(self) -> dict[str, Any]:
        return self._settings()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = dict(state_dict)

"""Non-finite (NaN/Inf) detection, and a guard that keeps a bad step's gradients out of the weights.

Why: one degenerate batch or a rare gradient spike at hour 30 turns the loss into NaN; one optimizer step with those
gradients poisons the weights for good. The detection functions here are the single implementation that both
:class:`NonFiniteGuard` and :class:`~hrmkit.callbacks.magicnorm.MagicNormHealth` (its ``non-finite`` check) use.

:class:`NonFiniteGuard` checks the loss (``on_before_backward``) and, before every optimizer step, the gradients of
all parameters (one fused reduction, one host sync). A non-finite step is never applied: every ``.grad`` is dropped
(``None``: PyTorch optimizers, AdamATan2 included, then leave the parameter and its state untouched) and the sparse
puzzle-embedding gradients are cleared. Then, by ``policy``:

* ``"skip"``: count it (``train/nonfinite_skipped``, written to every logger, kept in checkpoints) and go on; after
  ``max_consecutive`` skipped steps in a row, stop as below (the run is not recovering).
* ``"stop"``: stop at the end of this step and save ``<checkpoint dir>/nonfinite-step<N>.ckpt`` (N: the bad step,
  0-based): its weights and optimizer states are the last good ones, since the bad step changed nothing.

Learning-rate schedulers still advance on a skipped step (Lightning steps them per batch), as in other frameworks.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from hrmkit.callbacks.common import is_finite, logger_step, write_metrics

Policy = Literal["skip", "stop"]


def grads_finite(params: Iterable[Tensor]) -> bool:
    """Whether every gradient of ``params`` is finite (elementwise, so a large finite low-precision gradient whose
    norm would overflow still passes), with one host sync."""
    flags = [torch.isfinite(p.grad).all() for p in params if p.grad is not None]
    if not flags:
        return True
    return bool(torch.stack([f.to(flags[0].device) for f in flags]).all())


class NonFiniteGuard(Callback):
    """Skips (and counts) or stops on a step with a NaN/Inf loss or gradient (see the module docstring).

    Args:
        policy: ``"skip"`` or ``"stop"``.
        check_grads: also check the gradients (the loss check alone misses a finite loss with overflowing
            gradients).
        max_consecutive: with ``"skip"``, stop after this many skipped steps in a row.
    """

    def __init__(self, policy: Policy = "skip", check_grads: bool = True, max_consecutive: int = 10) -> None:
        if policy not in ("skip", "stop"):
            raise ValueError(f"NonFiniteGuard.policy must be 'skip' or 'stop', got {policy!r}")
        if max_consecutive < 1:
            raise ValueError(f"NonFiniteGuard.max_consecutive must be >= 1, got {max_consecutive}")
        self.policy = policy
        self.check_grads = check_grads
        self.max_consecutive = int(max_consecutive)
        #: steps whose update was dropped, over the whole run (resumed runs continue the count).
        self.skipped = 0
        self.consecutive = 0
        #: global steps of the latest skipped steps (at most 100).
        self.skipped_steps: list[int] = []
        self._bad_loss = False
        self._bad_step = False
        self._saved: Path | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._bad_loss = self._bad_step = False

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        if not is_finite(loss.detach()):
            self._bad_loss = True

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        bad = self._bad_loss or (self.check_grads and not grads_finite(pl_module.parameters()))
        bad = trainer.strategy.reduce_boolean_decision(bad, all=False)  # every rank drops the same step
        if not bad:
            return
        self._bad_step = True
        for p in pl_module.parameters():
            p.grad = None
        for module in pl_module.modules():
            if hasattr(module, "zero_local_grad"):  # sparse puzzle-embedding copies (hrmkit.nn.puzzle_embedding)
                module.zero_local_grad()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._bad_step and not self._bad_loss:
            self.consecutive = 0
            return
        step = trainer.global_step - 1  # the bad batch's step: its (no-op) optimizer step already counted
        self.skipped += 1
        self.consecutive += 1
        self.skipped_steps = (self.skipped_steps + [step])[-100:]
        write_metrics(trainer, {"train/nonfinite_skipped": float(self.skipped)}, logger_step(trainer))
        stop = self.policy == "stop" or self.consecutive >= self.max_consecutive
        why = "policy='stop'" if self.policy == "stop" else f"{self.consecutive} non-finite steps in a row"
        warnings.warn(f"NonFiniteGuard: non-finite {'loss' if self._bad_loss else 'gradients'} at step {step}; the "
                      f"update was skipped ({self.skipped} so far){'; stopping: ' + why if stop else ''}",
                      UserWarning, stacklevel=2)
        if stop:
            trainer.should_stop = True
            self._saved = self._checkpoint_dir(trainer) / f"nonfinite-step{step}.ckpt"
            trainer.save_checkpoint(self._saved)

    @staticmethod
    def _checkpoint_dir(trainer: pl.Trainer) -> Path:
        cb = trainer.checkpoint_callback
        dirpath = getattr(cb, "dirpath", None)
        return Path(dirpath) if dirpath else Path(trainer.default_root_dir) / "checkpoints"

    @property
    def saved_checkpoint(self) -> Path | None:
        """The checkpoint written when the guard stopped the run, if it did."""
        return self._saved

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "consecutive": self.consecutive, "skipped_steps": list(self.skipped_steps)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
        self.consecutive = int(state_dict.get("consecutive", 0))
        self.skipped_steps = list(state_dict.get("skipped_steps", []))

"""The learning rate of every optimizer a task uses, under stable names, including the ones Lightning never sees.

Why: a PuzzleTask trains with two optimizers, AdamATan2 (handed to Lightning) and the puzzle embedding's sign-SGD,
which the task steps itself. Lightning's ``LearningRateMonitor`` only sees the first, and names it after the class.
This callback writes, every ``every_n_steps`` steps after the optimizer step (at the step of ``train/loss``):

* ``lr/main``: Lightning's (first) optimizer; further ones are ``lr/opt1``, ``lr/opt2``...;
* ``lr/<name>`` for every optimizer the task reports through ``extra_optimizers()`` (PuzzleTask: ``lr/puzzle_emb``);
* an optimizer with several parameter groups gets ``lr/<name>/pg<i>`` per group.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from torch.optim import Optimizer

from hrmkit.callbacks.common import logger_step, write_metrics


def learning_rates(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
    """``{"lr/<name>[/pg<i>]": lr}`` for Lightning's optimizers and the task's ``extra_optimizers()``."""
    named: dict[str, Optimizer] = {("main" if i == 0 else f"opt{i}"): opt for i, opt in enumerate(trainer.optimizers)}
    extra = getattr(pl_module, "extra_optimizers", None)
    if callable(extra):
        named.update(extra())
    out: dict[str, float] = {}
    for name, opt in named.items():
        groups = opt.param_groups
        for g, group in enumerate(groups):
            out[f"lr/{name}" if len(groups) == 1 else f"lr/{name}/pg{g}"] = float(group["lr"])
    return out


class LearningRates(Callback):
    """Write ``lr/*`` (see the module docstring) every ``every_n_steps`` training steps.

    Args:
        every_n_steps: write when the logger step is a multiple of this (step 0 included).
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        if int(every_n_steps) != every_n_steps or every_n_steps < 1:
            raise ValueError(f"LearningRates.every_n_steps must be a positive integer, got {every_n_steps}")
        self.every_n_steps = int(every_n_steps)
        #: the values written last.
        self.last_metrics: dict[str, float] = {}
        self._due: int | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        step = logger_step(trainer)
        self._due = step if step % self.every_n_steps == 0 else None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._due is None:
            return
        step, self._due = self._due, None
        self.last_metrics = learning_rates(trainer, pl_module)
        if trainer.is_global_zero:
            write_metrics(trainer, self.last_metrics, step)

"""Which per-step training metrics a step must produce: all of them only when somebody will read them.

Computing and ``self.log``-ing a dozen per-step values costs ~0.4 ms each on a CPU, yet Lightning writes them to the
loggers only every ``log_every_n_steps`` steps. A step therefore produces:

* ``"all"`` when the loggers write this step (Lightning's own rule), when it is the last step of the epoch or of the
  run (epoch-end hooks and ``trainer.callback_metrics`` after ``fit`` see fresh values), or when a callback monitors
  a metric that is not a validation/test metric (a checkpoint or early stop on ``train/loss`` reads it whenever it
  likes, so it gets it every step);
* ``"progress"`` when only the progress bar refreshes this step (at its own ``refresh_rate``): just the bar's values;
* ``"none"`` otherwise, and outside a running ``fit`` (a direct ``training_step`` call has nowhere to log to).

The decision depends only on step counters and the callback list, so every rank takes the same one (metrics logged
with ``sync_dist`` never leave a rank waiting).
"""

from __future__ import annotations

import math
from typing import Literal

import lightning as L

StepLogging = Literal["all", "progress", "none"]


def step_logging(module: L.LightningModule, batch_idx: int) -> StepLogging:
    """What ``module.training_step(batch, batch_idx)`` should log (see the module docstring)."""
    trainer = module._trainer
    if trainer is None or not trainer.training:
        return "none"
    if trainer.fast_dev_run or trainer.should_stop or trainer._logger_connector.should_update_logs:
        return "all"
    if any(_watches_training(cb) for cb in trainer.callbacks):
        return "all"
    epoch_loop = trainer.fit_loop.epoch_loop
    last_of_run = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step + 1
    if last_of_run or epoch_loop.batch_progress.is_last_batch:
        return "all"
    bar = trainer.progress_bar_callback
    rate = getattr(bar, "refresh_rate", 1) if bar is not None else 0
    if rate > 0:
        n, total = batch_idx + 1, trainer.num_training_batches
        if n % rate == 0 or (math.isfinite(total) and n == total):
            return "progress"
    return "none"


def _watches_training(callback: object) -> bool:
    """A callback with a ``monitor`` on anything but validation/test metrics (e.g. ``train/loss``)."""
    monitor = getattr(callback, "monitor", None)
    return isinstance(monitor, str) and not monitor.startswith(("val/", "val_", "test/", "test_"))


def stash_late_row(module: L.LightningModule, values: dict) -> None:
    """Keep a skipped step's cheap values (detached tensors, no host sync) in case Lightning writes a row for this
    step after all: a callback that stops the run at batch end (the Timer, a time limit) makes it a logging step only
    after ``training_step`` has run."""
    module._late_row = values


def log_late_row(module: L.LightningModule) -> None:
    """Call first in the module's ``on_train_batch_end`` (Lightning runs it after every callback's): log the stashed
    values when this step writes a row after all. Not synced across ranks (a stop decided on one rank must not wait
    for a collective on the others): the row carries this rank's values."""
    values, module._late_row = getattr(module, "_late_row", None), None
    trainer = module._trainer
    if values and trainer is not None and trainer._logger_connector.should_update_logs:
        module.log_dict(values, on_step=True, on_epoch=False)

"""ACT halting statistics: how many segments the sequences that halted used, and how good the halting head is.

Why: with adaptive computation time the loss alone hides whether the model learned to stop early, always runs to
``halt_max_steps``, or halts on the wrong puzzles. The task already computes its halting decisions; this callback
only reads them from ``pl_module.last_act`` (as :class:`~hrmkit.tasks.puzzle.PuzzleTask` fills it after every
training step: ``steps`` [B] segments run so far, ``halted`` [B] bool, ``q_halt`` [B] logits, ``seq_correct`` [B]
bool) and is a no-op for modules without it.

Every ``every_n_steps`` training steps it writes to every logger (at the step Lightning uses for ``train/loss``):

* ``act/halted_frac``: fraction of the batch that halted at this step;
* ``act/halted_at/<k>`` for k = 1..max segments: fraction of the halted sequences that halted at segment k;
* ``act/mean_segments``: mean segments used by the halted sequences;
* ``act/q_halt_acc``: how often ``q_halt >= 0`` ("my answer is right") agrees with the halted sequences' exact
  correctness (as HRM's ``q_halt_accuracy``).

The segment counts of the halted sequences also go to loggers with a histogram API (an ``experiment`` with
``add_histogram``: TensorBoard, tensorboardX) under ``act/halted_at``. Values are per rank (rank 0 writes).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from hrmkit.callbacks.common import logger_step, write_metrics


class ACTStats(Callback):
    """Log halting-segment histograms and halting-head accuracy from ``pl_module.last_act``.

    Args:
        every_n_steps: measure the training batches whose step is a multiple of this (step 0 included).
        max_segments: number of histogram bins ``act/halted_at/1..max_segments``; ``None`` takes
            ``pl_module.hparams.halt_max_steps`` when present, else the largest count seen in the batch.
    """

    def __init__(self, every_n_steps: int = 50, max_segments: int | None = None) -> None:
        if int(every_n_steps) != every_n_steps or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive integer, got {every_n_steps}")
        if max_segments is not None and max_segments < 1:
            raise ValueError(f"max_segments must be >= 1 or None, got {max_segments}")
        self.every_n_steps = int(every_n_steps)
        self.max_segments = max_segments
        #: the metrics written at the latest measured step.
        self.last_metrics: dict[str, float] = {}
        self._due: int | None = None
        self._last_measured: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_measured = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        step = logger_step(trainer)
        self._due = step if step % self.every_n_steps == 0 and step != self._last_measured else None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._due is None:
            return
        step, self._due = self._due, None
        act = getattr(pl_module, "last_act", None)
        if not isinstance(act, dict) or act.get("steps") is None or act.get("halted") is None:
            return
        self._last_measured = step
        bins = self.max_segments or _hparam(pl_module, "halt_max_steps")
        metrics, halted_at = act_metrics(act, bins)
        self.last_metrics = metrics
        write_metrics(trainer, metrics, step)
        if halted_at.numel():
            _histogram(trainer, halted_at, step, max(bins or 0, int(halted_at.max())))


def act_metrics(act: dict[str, Tensor | None], max_segments: int | None = None) -> tuple[dict[str, float], Tensor]:
    """The ``act/*`` scalars of one step's ``last_act`` and the segment counts of the sequences that halted (CPU)."""
    steps = act["steps"].detach().reshape(-1).long()
    halted = act["halted"].detach().reshape(-1).bool()
    if steps.shape != halted.shape:
        raise ValueError(f"last_act['steps'] {tuple(steps.shape)} and last_act['halted'] {tuple(halted.shape)} "
                         "must have one entry per sequence")
    halted_at = steps[halted].cpu()
    metrics: dict[str, float] = {"act/halted_frac": halted.float().mean().item() if halted.numel() else 0.0}
    if not halted_at.numel():
        return metrics, halted_at
    bins = max(max_segments or 0, int(halted_at.max()))
    counts = torch.bincount(halted_at.clamp_min(0), minlength=bins + 1)[1:bins + 1].double() / halted_at.numel()
    for k, frac in enumerate(counts.tolist(), start=1):
        metrics[f"act/halted_at/{k}"] = frac
    metrics["act/mean_segments"] = halted_at.double().mean().item()
    q_halt, correct = act.get("q_halt"), act.get("seq_correct")
    if q_halt is not None and correct is not None:
        agree = (q_halt.detach().reshape(-1) >= 0) == correct.detach().reshape(-1).bool()
        metrics["act/q_halt_acc"] = agree[halted].double().mean().item()
    return metrics, halted_at


def _hparam(pl_module: pl.LightningModule, name: str) -> int | None:
    value = getattr(pl_module, "hparams", {}).get(name)
    return int(value) if isinstance(value, int) and value >= 1 else None


def _histogram(trainer: pl.Trainer, values: Tensor, step: int, bins: int) -> None:
    """Send the halting segments to every logger whose experiment has ``add_histogram`` (unit-wide bins)."""
    edges = np.arange(0.5, bins + 1.5)
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        add = getattr(experiment, "add_histogram", None)
        if callable(add):
            add("act/halted_at", values.numpy(), step, bins=edges)

"""Training speed in the units a reader compares: tokens per second and samples (puzzles) per second.

Why not Lightning's ``ThroughputMonitor``: it needs a ``batch_size_fn`` callable, which a YAML recipe cannot name
for hrmkit's two batch layouts, and it counts padding. This callback reads the layouts itself:

* text (``cu_seqlens`` + ``num_samples``, :mod:`hrmkit.data.text.packing`): the real tokens of the packed row (the
  padding tail excluded) and its samples;
* puzzles and anything else with ``inputs`` / ``input_ids`` ``[B, L]``: ``B`` samples (puzzles, one ACT segment
  each) and ``B·L`` tokens.

Every ``every_n_steps`` optimizer steps it writes, at the step Lightning uses for ``train/loss``:

* ``perf/tokens_per_s`` and ``perf/samples_per_s``: the whole job's rate (rank 0's count × world size) over the
  wall-clock time since the previous write, data loading included;
* ``perf/step_time_s``: mean wall-clock seconds per training batch over the same window.

The counts stay on the device until a write (one host sync per window, after ``torch.cuda.synchronize`` on GPUs).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from hrmkit.callbacks.common import logger_step, write_metrics


def batch_counts(batch: Any) -> tuple[Tensor | int, int]:
    """``(tokens, samples)`` of one training batch (see the module docstring); ``(0, 0)`` for unknown layouts."""
    if not isinstance(batch, Mapping):
        return 0, 0
    cu = batch.get("cu_seqlens")
    if isinstance(cu, Tensor) and "num_samples" in batch:
        n = int(batch["num_samples"])
        return cu[n].to(torch.long), n
    for key in ("inputs", "input_ids"):
        x = batch.get(key)
        if isinstance(x, Tensor) and x.dim() >= 2:
            return int(x.shape[0] * x.shape[1]), int(x.shape[0])
    return 0, 0


class Throughput(Callback):
    """Write ``perf/tokens_per_s``, ``perf/samples_per_s`` and ``perf/step_time_s`` every ``every_n_steps`` steps.

    Args:
        every_n_steps: window length in training batches (the first window starts at the first batch).
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        if int(every_n_steps) != every_n_steps or every_n_steps < 1:
            raise ValueError(f"Throughput.every_n_steps must be a positive integer, got {every_n_steps}")
        self.every_n_steps = int(every_n_steps)
        #: the metrics written last.
        self.last_metrics: dict[str, float] = {}
        self._reset(None)

    def _reset(self, start: float | None) -> None:
        self._start = start
        self._tokens: Tensor | int = 0
        self._samples = 0
        self._batches = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset(None)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._start is None:
            self._reset(time.perf_counter())

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        tokens, samples = batch_counts(batch)
        self._tokens = self._tokens + tokens
        self._samples += samples
        self._batches += 1
        if self._batches < self.every_n_steps:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        elapsed = max(now - self._start, 1e-9)
        world = max(int(trainer.world_size), 1)
        tokens = int(self._tokens.item()) if isinstance(self._tokens, Tensor) else int(self._tokens)
        self.last_metrics = {"perf/tokens_per_s": tokens * world / elapsed,
                             "perf/samples_per_s": self._samples * world / elapsed,
                             "perf/step_time_s": elapsed / self._batches}
        if trainer.is_global_zero:
            write_metrics(trainer, self.last_metrics, logger_step(trainer))
        self._reset(now)

"""Stop every rank of a multi-process run at the same step when any of them gets SIGTERM (or SIGUSR1 outside SLURM).

Why: Lightning 2.6.6's SIGTERM handler runs a ``broadcast`` from inside the signal handler, interleaved with
whatever collective the rank was in, re-sends the signal to the launcher's children, and each rank then checks its
own flag at the end of the step. A 2-process FSDP2 run whose ranks are signalled (as a scheduler does) hangs instead
of saving and exiting 143 (measured on gloo: no checkpoint, killed by a timeout after 10 minutes).

:class:`PreemptionSync` swaps that handler for one that only records the signal, and agrees on it once per training
step (one scalar all-reduce, max over ranks, at the end of the batch): all ranks raise Lightning's SIGTERM stop at
the same point, run the on-exception checkpoint (a collective save under FSDP2) together, and ``hrmkit`` exits 143.
Single-process runs keep Lightning's handler. The ``hrmkit`` CLI adds the callback to every ``fit``.
"""

from __future__ import annotations

from types import FrameType
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback


class PreemptionSync(Callback):
    """Record SIGTERM without collectives; stop all ranks together at the end of the step in which any got it."""

    def __init__(self) -> None:
        self.pending = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning registers its signal handlers after the setup hooks, taking this bound method at that moment
        if trainer.world_size > 1:
            trainer._signal_connector._sigterm_notifier_fn = self._record

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.pending = True  # inside a signal handler: no collective, no I/O

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.world_size < 2 or not dist.is_available() or not dist.is_initialized():
            return
        flag = torch.tensor([1 if self.pending else 0], device=trainer.strategy.root_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item():
            trainer._signal_connector.received_sigterm = True  # Lightning stops every rank at the end of this batch

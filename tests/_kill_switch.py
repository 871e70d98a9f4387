"""A callback for the reliability tests' subprocesses: kill this process hard in the middle of a chosen step."""

from __future__ import annotations

import os
import signal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    """SIGKILL (or another signal) the process after the backward of training step ``step`` (0-based global step),
    before its optimizer step and before its checkpoint: the worst moment, with work done and nothing saved."""

    def __init__(self, step: int = -1, signum: int = int(signal.SIGKILL), rank: int = -1) -> None:
        self.step = step
        self.signum = signum
        self.rank = rank  # -1: every process signals itself; otherwise only that global rank

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        if trainer.global_step == self.step and self.rank in (-1, trainer.global_rank):
            os.kill(os.getpid(), self.signum)

"""Small helpers every hrmkit callback shares: finding the core, checking finiteness, writing metric rows.

A leaf of ``hrmkit.callbacks``: it imports nothing from its sibling callbacks, so they can all depend on it without
depending on each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import lightning.pytorch as pl
import torch
from torch import Tensor

from hrmkit.cores.base import RecursiveCore


def module_core(pl_module: pl.LightningModule, who: str) -> RecursiveCore:
    """``pl_module.core`` with a clear error when the module has none (callbacks rely on nothing else)."""
    core = getattr(pl_module, "core", None)
    core = getattr(core, "_orig_mod", core)  # a torch.compile'd core: its attributes and hooks live on the original
    if not isinstance(core, RecursiveCore):
        raise TypeError(f"{who} needs a LightningModule with a `core` attribute that is a hrmkit RecursiveCore; "
                        f"{type(pl_module).__name__}.core is {type(core).__name__}")
    return core


def logger_step(trainer: pl.Trainer) -> int:
    """The step Lightning writes training step metrics at (batches that stepped; equals global_step for one
    optimizer), so callback rows line up with ``train/loss`` rows."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    return int(getattr(loop, "_batches_that_stepped", trainer.global_step))


def write_metrics(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
    """Write straight to every logger (as Lightning's LearningRateMonitor does), so a callback's own sampling
    interval is not filtered again by ``log_every_n_steps``."""
    if not metrics:
        return
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)


def is_finite(value: float | Tensor | None) -> bool:
    """Whether a scalar (float or tensor) is finite; None (no value) counts as finite."""
    if value is None:
        return True
    if isinstance(value, Tensor):
        return bool(torch.isfinite(value).all())
    return math.isfinite(value)


def nonfinite_names(values: Mapping[str, float | Tensor | None]) -> list[str]:
    """The names of the values that are NaN or infinite."""
    return [name for name, value in values.items() if not is_finite(value)]

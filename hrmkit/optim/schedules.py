"""Learning-rate multipliers of the reference systems, as ``LambdaLR`` lambdas.

Both HRM/TRM (``cosine_schedule_with_warmup_lr_lambda``) and HRM-Text (``update_lr``) increment their step counter
*before* computing the lr, so the first optimizer step runs at ``t = 1`` and gets ``base / W``, never 0. ``LambdaLR``
calls its lambda with the number of scheduler steps taken so far (0 for the first optimizer step), so every function
here takes that 0-based ``step`` and uses ``t = step + 1``. One schedule scales every optimizer of a run (AdamATan2
and the puzzle-embedding SignSGD), each around its own base lr: build one ``LambdaLR`` per optimizer.
"""

from __future__ import annotations

import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 1.0) -> float:
    """Multiplier for 0-based optimizer step ``step``: linear warmup to 1, then cosine from 1 down to ``min_ratio``.

    ``t = step + 1``. For ``t < W`` the multiplier is ``t / W``; afterwards it is
    ``r + (1 - r)·½·(1 + cos(π·progress))`` with ``progress = (t - W) / (T - W)``. ``min_ratio = 1`` (the HRM/TRM and
    HRM-Text default) gives a constant lr after warmup. Past ``total_steps`` the reference never runs; here progress
    is clamped to 1 so the lr stays at ``min_ratio`` instead of rising again.
    """
    if warmup_steps < 0 or total_steps < 0:
        raise ValueError(f"warmup_steps and total_steps must be >= 0, got {warmup_steps} and {total_steps}")
    t = step + 1
    if t < warmup_steps:
        return t / warmup_steps
    progress = min(1.0, (t - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + max(0.0, (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def warmup_constant(step: int, warmup_steps: int) -> float:
    """HRM-Text pretraining: linear warmup over ``warmup_steps`` (``t / W`` with ``t = step + 1``), then constant 1."""
    return warmup_cosine(step, warmup_steps, total_steps=warmup_steps, min_ratio=1.0)


def warmup_cosine_scheduler(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 1.0
) -> LambdaLR:
    """``LambdaLR`` applying :func:`warmup_cosine` to every param group's own base lr.

    Step it once per optimizer step: ``{"scheduler": sched, "interval": "step"}`` under automatic optimization, or
    ``sched.step()`` after ``opt.step()`` in a manual-optimization ``training_step`` (Lightning does not step
    schedulers for manual optimization). The lambda is a ``functools.partial``, so the scheduler pickles (spawn
    launchers) and its ``state_dict`` round-trips.
    """
    fn = partial(warmup_cosine, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio)
    return LambdaLR(optimizer, lr_lambda=fn)

"""Adaptive computation time (ACT) carry for puzzle training.

The carry outlives a training step: each batch slot keeps working on its puzzle for up to ``halt_max_steps``
segments, and only halted slots take a new puzzle from the incoming batch (whose other rows are dropped, as in the
reference). The local batch size is therefore constant, and a sequence's segments span several optimizer steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hrmkit.cores.base import State


@dataclass
class ACTCarry:
    state: State  # detached core state per slot
    steps: Tensor  # int32 [B]: segments already run on the slot's current puzzle
    halted: Tensor  # bool [B]: slot finished; refill from the next batch
    data: dict[str, Tensor]  # the batch fields of the puzzle each slot is working on

    @classmethod
    def empty(cls, batch: dict[str, Tensor]) -> ACTCarry:
        """All slots halted, so the first step loads every row of ``batch``."""
        b = batch["inputs"].shape[0]
        device = batch["inputs"].device
        return cls(state={}, steps=torch.zeros(b, dtype=torch.int32, device=device),
                   halted=torch.ones(b, dtype=torch.bool, device=device),
                   data={k: v.clone() for k, v in batch.items()})

    def refill(self, batch: dict[str, Tensor]) -> None:
        """Halted slots take the new batch's rows; the others keep their data and step counters."""
        if batch["inputs"].shape[0] != self.halted.shape[0]:
            raise ValueError(f"ACT needs a constant local batch size: carry has {self.halted.shape[0]} slots, "
                             f"batch has {batch['inputs'].shape[0]} rows (use drop_last=True for training)")
        h = self.halted
        for key, new in batch.items():
            old = self.data.get(key)
            if old is None or old.shape != new.shape:
                self.data[key] = new.clone()
            else:
                self.data[key] = torch.where(h.view(-1, *([1] * (new.dim() - 1))), new, old)
        self.steps = torch.where(h, torch.zeros_like(self.steps), self.steps)

    def reset_state(self, fresh: State) -> State:
        """The core state to run from: fresh for halted slots, carried for the rest."""
        if not self.state:
            return fresh
        h = self.halted.view(-1, 1, 1)
        return {k: torch.where(h, fresh[k], self.state[k]) for k in fresh}


def exploration_min_steps(batch: int, prob: float, max_steps: int, device: torch.device,
                          generator: torch.Generator | None = None) -> Tensor:
    """With probability ``prob`` a sequence must run at least U{2..max_steps} segments before it may halt."""
    explore = torch.rand(batch, device=device, generator=generator) < prob
    low = min(2, max_steps)
    minimum = torch.randint(low, max_steps + 1, (batch,), device=device, generator=generator)
    return torch.where(explore, minimum, torch.zeros_like(minimum)).to(torch.int32)

"""Adaptive computation time (ACT) carry for puzzle training.

The carry outlives a training step: each batch slot keeps working on its puzzle for up to ``halt_max_steps``
segments, and only halted slots take a new puzzle from the incoming batch (whose other rows are dropped, as in the
reference). The local batch size is therefore constant, and a sequence's segments span several optimizer steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hrmkit.cores.base import State
from hrmkit.errors import HrmkitInputError


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

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue every slot's puzzle: states, step counters, halted flags
        and the current data of each slot (tensors only, so it loads with ``weights_only=True``)."""
        return {"state": dict(self.state), "steps": self.steps, "halted": self.halted, "data": dict(self.data)}

    @classmethod
    def from_state_dict(cls, state: Any, where: str) -> ACTCarry:
        """The carry saved by :meth:`state_dict`; a malformed one is rejected naming ``where`` and the field."""
        if not isinstance(state, dict) or not {"state", "steps", "halted", "data"} <= set(state):
            raise HrmkitInputError(f"{where}: expected a dict with state, steps, halted and data, got "
                                   f"{sorted(state) if isinstance(state, dict) else type(state).__name__}")
        b = state["halted"].shape[0] if isinstance(state["halted"], Tensor) else -1
        tensors = {"steps": state["steps"], "halted": state["halted"],
                   **{f"state.{k}": v for k, v in state["state"].items()},
                   **{f"data.{k}": v for k, v in state["data"].items()}}
        for name, value in tensors.items():
            if not isinstance(value, Tensor) or value.dim() < 1 or value.shape[0] != b:
                raise HrmkitInputError(f"{where}: field {name!r}: expected a tensor with {b} slots, got "
                                       f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}")
        return cls(state=dict(state["state"]), steps=state["steps"], halted=state["halted"], data=dict(state["data"]))

    def to(self, device: torch.device) -> ACTCarry:
        return ACTCarry(state={k: v.to(device) for k, v in self.state.items()}, steps=self.steps.to(device),
                        halted=self.halted.to(device), data={k: v.to(device) for k, v in self.data.items()})

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

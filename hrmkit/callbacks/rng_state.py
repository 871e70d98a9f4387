"""Random-number-generator states in the checkpoint, so a resumed CPU run continues bit for bit.

Why: Lightning 2.6 saves the model, optimizers, schedulers, loops, callbacks and stateful dataloaders, but not the
process's random generators (``seed_everything`` only reseeds them at start). A resumed run would redraw different
dropout masks, exploration choices or augmentations from a freshly seeded generator.

:class:`RNGState` saves the torch CPU (and CUDA) generators, NumPy's legacy global generator and Python's
``random`` of every process (gathered across ranks) and restores this process's states at the first training
batch after a resume: after the dataloader has been re-created (creating a torch ``DataLoader`` iterator draws
one number from the global generator) and before the first step's compute, which is where the uninterrupted run
was when the checkpoint was saved. The NumPy state is stored as a tensor so the checkpoint stays loadable with
``weights_only=True``. The ``hrmkit`` CLI adds this callback to every ``fit`` unless the recipe already has one.
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from hrmkit.distributed import gather_per_rank, pick_rank


def capture_rng() -> dict[str, Any]:
    """This process's generator states, as tensors and primitives only."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set this process's generators to a state from :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGState(Callback):
    """Saves every process's RNG states in checkpoints and restores them when a run resumes (see module doc)."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"ranks": gather_per_rank(capture_rng())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = pick_rank(state_dict.get("ranks") or [], "RNGState")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._pending is not None:
            restore_rng(self._pending)
            self._pending = None

"""Seeded synthetic sequence tasks (copy, reverse, sort) for smoke tests, the quick-start and core comparisons."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

SyntheticTask = Literal["copy", "reverse", "sort"]


def make_synthetic(task: SyntheticTask, n: int, seq_len: int, vocab_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` random token rows and their targets: the same row, reversed, or sorted."""
    if task not in ("copy", "reverse", "sort"):
        raise ValueError(f"synthetic task must be 'copy', 'reverse' or 'sort', got {task!r}")
    if vocab_size < 2 or seq_len < 1 or n < 1:
        raise ValueError(f"need vocab_size >= 2, seq_len >= 1, n >= 1; got {vocab_size}, {seq_len}, {n}")
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, vocab_size, (n, seq_len), generator=g)
    if task == "copy":
        targets = inputs.clone()
    elif task == "reverse":
        targets = inputs.flip(1)
    else:
        targets = inputs.sort(dim=1).values
    return inputs, targets


class SyntheticDataModule(L.LightningDataModule):
    """Train/validation splits drawn from disjoint seeds (validation rows are new sequences, not seen ones)."""

    def __init__(self, task: SyntheticTask = "reverse", seq_len: int = 8, vocab_size: int = 16,
                 num_train: int = 4096, num_val: int = 512, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    def setup(self, stage: str = "") -> None:
        hp = self.hparams
        self.train_set = TensorDataset(*make_synthetic(hp.task, hp.num_train, hp.seq_len, hp.vocab_size, hp.seed))
        self.val_set = TensorDataset(*make_synthetic(hp.task, hp.num_val, hp.seq_len, hp.vocab_size, hp.seed + 1))

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.hparams.seed)
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True, drop_last=True,
                          generator=g)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size)

"""Tiny puzzle / text training runs for the multi-process tests (tests/test_distributed.py).

Run as a script (``python tests/_dist_train.py --task text --strategy fsdp2 --devices 2 --out DIR``) so that
Lightning's subprocess launcher re-executes this file for rank 1 instead of forking pytest. The 1-process reference
runs in-process through :func:`run`.

Global-batch equivalence is built in: step ``s`` has one *global* batch; rank ``r`` of ``W`` gets its ``r``-th
slice (puzzles: rows; text: the samples of the ``r``-th packed row), and one process gets the whole of it (text: all
the samples packed into one row ``W`` times as long, documents never attend across, so the loss is the same).
Each epoch is ``steps`` batches and the batches depend on the epoch, so a run resumed at an epoch boundary
continues the same stream. Rank 0 writes the global loss of every step (mean over ranks of each rank's loss) to
``losses-<tag>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.distributed.tensor import DTensor
from torch.utils.data import DataLoader

from hrmkit.callbacks import EMA
from hrmkit.cores import build_core
from hrmkit.data.text.packing import pack_batch
from hrmkit.parallel import DDP, FSDP2
from hrmkit.tasks import PuzzleTask, TextTask

WORLD = 2            # batches are cut for up to this many ranks
PUZZLE_ROWS = 4      # puzzle rows per rank
PUZZLE_LEN = 12
TEXT_TOKENS = 96     # tokens of one rank's packed row
VOCAB = 40


def puzzle_batch(epoch: int, step: int, rank: int, world: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * epoch + step)
    n = PUZZLE_ROWS * WORLD
    full = {"inputs": torch.randint(1, 6, (n, PUZZLE_LEN), generator=g),
            "labels": torch.randint(1, 6, (n, PUZZLE_LEN), generator=g),
            "puzzle_identifiers": torch.randint(0, 4, (n,), generator=g)}
    rows = n // world
    return {k: v[rank * rows:(rank + 1) * rows].clone() for k, v in full.items()}


def text_batch(epoch: int, step: int, rank: int, world: int) -> dict[str, Any]:
    rng = np.random.default_rng(1000 * epoch + step)
    parts = []
    for _ in range(WORLD):  # the samples of one row of TEXT_TOKENS tokens, per notional rank
        samples, left = [], TEXT_TOKENS - int(rng.integers(0, 8))
        while left >= 8:
            n = int(rng.integers(6, min(30, left) + 1))
            samples.append((rng.integers(3, VOCAB, n).astype(np.int64), int(rng.integers(1, n - 1))))
            left -= n
        parts.append(samples)
    per = WORLD // world
    mine = [s for part in parts[rank * per:(rank + 1) * per] for s in part]
    return pack_batch(mine, TEXT_TOKENS * per, pad_id=0)


class EpochBatches(L.LightningDataModule):
    """``steps`` batches per epoch, this rank's slice of each global batch; new batches every epoch."""

    def __init__(self, task: str, steps: int) -> None:
        super().__init__()
        self.make = puzzle_batch if task == "puzzle" else text_batch
        self.steps = steps

    def train_dataloader(self) -> DataLoader:
        t = self.trainer
        batches = [self.make(t.current_epoch, s, t.global_rank, t.world_size) for s in range(self.steps)]
        return DataLoader(batches, batch_size=None, shuffle=False)


class GlobalLoss(Callback):
    """Record the mean over ranks of each step's training loss (= the global-batch loss) on rank 0."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"].detach().float()
        self.losses.append(float(trainer.strategy.reduce(loss, reduce_op="mean")))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.path.write_text(json.dumps(self.losses))


class Horizon(Callback):
    """Text runs: epoch 0 at bp_steps=2 (the deep-credit warmup's start, where the embedding gets no gradient),
    later epochs at 5, so both regimes are compared across strategies."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.core.bp_steps = 2 if trainer.current_epoch == 0 else 5


def make_task(task: str) -> L.LightningModule:
    torch.manual_seed(0)
    if task == "puzzle":
        core = build_core("hrm", "tiny", max_seq_len=PUZZLE_LEN + 1)
        return PuzzleTask(core, vocab_size=6, seq_len=PUZZLE_LEN, num_puzzle_identifiers=4, halting="none",
                          halt_max_steps=2, lr=3e-3, puzzle_emb_lr=1e-2, warmup_steps=1, loss_dtype="float32")
    core = build_core("hrm", "text-tiny", max_seq_len=TEXT_TOKENS * WORLD)
    return TextTask(core, vocab_size=VOCAB, lr=3e-3, warmup_steps=1)


def make_strategy(name: str) -> Any:
    if name == "single":
        return "auto"
    if name == "ddp":  # bp_steps=2 leaves the text embedding without gradient: DDP must be told
        return DDP(process_group_backend="gloo", find_unused_parameters=True)
    if name == "fsdp2":
        return FSDP2(param_dtype=None, process_group_backend="gloo")
    if name == "ddp_compiled":  # the whole core compiled before DDP wraps the task
        return DDP(process_group_backend="gloo", find_unused_parameters=True, compile=True,
                   compile_kwargs={"backend": "eager"})
    if name == "fsdp2_bf16":  # the hrmkit_fsdp2 preset's mixed precision: bf16 parameters, fp32 reduce-scatter
        return FSDP2(param_dtype="bfloat16", reduce_dtype="float32", process_group_backend="gloo")
    raise ValueError(f"unknown strategy {name!r}")


#: Trainer precision per strategy: the bf16 run also autocasts, as the FSDP2 recipes do (``precision: bf16-mixed``).
PRECISION = {"fsdp2_bf16": "bf16-mixed"}


def run(task: str, strategy: str, devices: int, out: Path, steps: int, epochs: int, tag: str,
        ckpt_path: str | None = None, ema: bool = False) -> list[float]:
    """Train ``epochs`` epochs of ``steps`` steps (resuming from ``ckpt_path``); keep a checkpoint per epoch."""
    recorder = GlobalLoss(out / f"losses-{tag}.json")
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=make_strategy(strategy), max_epochs=epochs,
                        precision=PRECISION.get(strategy, "32-true"),
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0,
                        callbacks=[recorder, ModelCheckpoint(dirpath=out / f"ckpt-{tag}", save_top_k=-1,
                                                             every_n_epochs=1), Horizon()]
                        + ([EMA(decay=0.9)] if ema else []))
    model = make_task(task)
    trainer.fit(model, datamodule=EpochBatches(task, steps), ckpt_path=ckpt_path)
    if ema:  # the final EMA values as full tensors (gathering shards is collective: every rank takes part)
        average = next(cb for cb in trainer.callbacks if isinstance(cb, EMA)).ema
        full = {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in average.shadow.items()}
        if trainer.is_global_zero:
            torch.save(full, out / f"ema-{tag}.pt")
    return recorder.losses


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", choices=("puzzle", "text"), required=True)
    p.add_argument("--strategy", choices=("single", "ddp", "ddp_compiled", "fsdp2", "fsdp2_bf16"), required=True)
    p.add_argument("--devices", type=int, default=WORLD)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--ema", action="store_true", help="add the EMA callback (its state must survive the resume)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    first = run(args.task, args.strategy, args.devices, args.out, args.steps, 1, "first", ema=args.ema)
    ckpt = sorted((args.out / "ckpt-first").glob("*.ckpt"))[-1]
    run(args.task, args.strategy, args.devices, args.out, args.steps, 2, "resumed", ckpt_path=str(ckpt), ema=args.ema)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        print(json.dumps({"first": first, "checkpoint": str(ckpt)}))


if __name__ == "__main__":
    main(sys.argv[1:])

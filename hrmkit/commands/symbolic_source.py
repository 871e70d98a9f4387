"""A symbolic 4x4 Sudoku source for symbolic-to-text runs.

Why: a text model can start from a core that already solves the puzzles it will read, if the core sees them the
way it learned them. reasoning-gym's ``mini_sudoku`` puzzles (one solution) become an hrmkit puzzle dataset with one
token per cell (0 pad, 1 blank, 2-5 the digits; no puzzle-embedding prefix), a :class:`~hrmkit.tasks.PuzzleTask`
trains the text model's own core on it (one full forward per step, so the source's depth is the text model's), and
:class:`CellRows` starts the text model's rows of the cell characters (``_``, ``1``-``4``) in the embedding and LM head
from the source's rows of the same cells. The core itself is copied by ``init_from`` (:mod:`hrmkit.transfer`).
Used by ``hrmkit demo --task text`` (``TextCpuConfig.source_steps``) and ``benchmarks/experiments/transfer.py``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from hrmkit.cores import RecursiveCore
from hrmkit.data.modules import PuzzleDataModule
from hrmkit.data.puzzles.format import PuzzleGroup, PuzzleMetadata, write_puzzle_dataset
from hrmkit.data.text.reasoning_gym_tasks import gym_dataset, unique_mini_sudoku
from hrmkit.data.text.tokenizer import load_tokenizer
from hrmkit.tasks import PuzzleTask
from hrmkit.transfer import read_source, save_task_checkpoint

#: Source puzzles come from reasoning-gym seeds from here on, far from text-cpu's (which draws from seed 0).
SOURCE_SEED0 = 10_000_000
#: Difficulty = blank cells (reasoning-gym blanks 8-12; with one solution 11 and 12 are rare, so they share a tag).
TAGS = ("8 blanks", "9 blanks", "10 blanks", "11-12 blanks")
#: Text characters of the cells; the symbolic token of character ``c`` is ``1 + CELL_CHARS.index(c)``.
CELL_CHARS = "_1234"


def tag_of(blanks: int) -> int:
    return min(max(blanks - 8, 0), len(TAGS) - 1)


def cells(grid: Sequence[Sequence[int]]) -> str:
    """A 4x4 grid (0 = blank) as 16 characters, one per cell."""
    return "".join(CELL_CHARS[v] for row in grid for v in row)


def blanks(grid: Sequence[Sequence[int]]) -> int:
    return sum(v == 0 for row in grid for v in row)


def build_source_data(out: str | os.PathLike, n_train: int, n_test: int, exclude: Iterable[str] = ()) -> Path:
    """Symbolic 4x4 Sudoku with one solution from reasoning-gym seeds ``SOURCE_SEED0..``, without the puzzles in
    ``exclude`` (as :func:`cells` strings: a text run's held-out set). Reused when already built."""
    target = Path(out)
    if (target / "metadata.json").is_file():
        return target
    excluded, seen, groups, i = set(exclude), set(), [], 0
    wanted = n_train + n_test
    limit = 60 * wanted + 100
    ds = gym_dataset("mini_sudoku", SOURCE_SEED0, limit)
    while len(groups) < wanted:
        if i == limit:
            raise ValueError(f"mini_sudoku: only {len(groups)} new puzzles with one solution among {limit} seeds")
        example = ds[i]
        i += 1
        meta = example["metadata"]
        key = cells(meta["puzzle"])
        if key in excluded or key in seen or not unique_mini_sudoku(example):
            continue
        seen.add(key)
        tokens = [np.asarray(g, np.uint8).reshape(1, 1, 16) + 1 for g in (meta["puzzle"], meta["solution"])]
        groups.append(PuzzleGroup(*tokens, np.ones(1, np.int16), np.zeros(1, np.int32),
                                  tag_of(blanks(meta["puzzle"]))))
    meta = PuzzleMetadata(task="mini_sudoku", vocab_size=len(CELL_CHARS) + 1, seq_len=16, tag_names=list(TAGS),
                          builder={"name": "hrmkit.commands.symbolic_source", "version": 1},
                          source="reasoning-gym mini_sudoku", seed=SOURCE_SEED0,
                          build_args={"train": n_train, "test": n_test, "seeds_drawn": i})
    write_puzzle_dataset(target, meta, {"train": groups[:n_train], "test": groups[n_train:]}, overwrite=True)
    return target


def train_source(make_core: Callable[[], RecursiveCore], data_dir: str | os.PathLike, out: str | os.PathLike,
                 steps: int, batch_size: int = 64, lr: float = 1e-3, seed: int = 0) -> dict[str, Any]:
    """Train a core (``make_core()``, built after seeding, so ``seed`` fixes its initialisation) in a PuzzleTask on
    the symbolic puzzles, then write ``<out>/source.ckpt`` (weights only, what ``init_from`` reads) and
    ``<out>/source.json`` (the held-out figures). Reused when both exist."""
    folder = Path(out)
    ckpt, summary = folder / "source.ckpt", folder / "source.json"
    if ckpt.is_file() and summary.is_file():
        return json.loads(summary.read_text())
    L.seed_everything(seed, verbose=False)
    model = PuzzleTask(make_core(), puzzle_emb_len=0, puzzle_emb_ndim=0, halting="none", halt_max_steps=1,
                       loss="softmax", loss_dtype="float32", lr=lr, warmup_steps=100, lr_min_ratio=0.1,
                       tag_names=list(TAGS), num_tags=len(TAGS))
    data = PuzzleDataModule(str(data_dir), batch_size=batch_size, eval_batch_size=500, seed=seed)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    load_before, start = round(os.getloadavg()[0], 2), time.perf_counter()
    trainer.fit(model, data)
    minutes = (time.perf_counter() - start) / 60
    metrics = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False).validate(model, datamodule=data, verbose=False)[0]
    save_task_checkpoint(model, ckpt)
    res = {"steps": trainer.global_step, "batch_size": batch_size, "lr": lr, "seed": seed,
           "minutes": round(minutes, 2), "threads": torch.get_num_threads(), "load_before": load_before,
           "load_after": round(os.getloadavg()[0], 2), "params": sum(p.numel() for p in model.parameters()),
           "exact": round(float(metrics["val/exact_acc"]), 4), "token_acc": round(float(metrics["val/token_acc"]), 4),
           "exact_by_tag": {t: round(float(metrics[f"val/exact_acc_by_tag/{t}"]), 4) for t in TAGS
                            if f"val/exact_acc_by_tag/{t}" in metrics},
           "checkpoint": str(ckpt)}
    tmp = summary.with_name(f".{summary.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    os.replace(tmp, summary)
    return res


class CellRows(L.Callback):
    """At fit start, copy the source's embedding and LM-head rows of the cells into the text model's rows of the cell
    characters (both tasks scale embeddings by sqrt(d), so the core sees the inputs it learned on)."""

    def __init__(self, source_ckpt: str | os.PathLike, tokenizer_dir: str | os.PathLike) -> None:
        self.source_ckpt, self.tokenizer_dir = str(source_ckpt), tokenizer_dir

    def on_fit_start(self, trainer: L.Trainer | None, pl_module: Any) -> None:
        state = read_source(self.source_ckpt).state
        tok = load_tokenizer(self.tokenizer_dir)
        with torch.no_grad():
            for i, ch in enumerate(CELL_CHARS):
                ids = tok.encode(ch)
                if len(ids) != 1:
                    raise ValueError(f"{self.tokenizer_dir}: cell character {ch!r} is not one token ({ids})")
                pl_module.embed_tokens.weight[ids[0]] = state["embed_tokens.weight"][1 + i]
                pl_module.lm_head.weight[ids[0]] = state["lm_head.weight"][1 + i]

"""``hrmkit demo``: generate Sudoku, train a small recursive model on the CPU, and show it solving unseen puzzles.

Everything is the real stack: the generator and LitData dataset of ``hrmkit data sudoku``, :class:`PuzzleTask` with
TRM halting and deep supervision, AdamATan2 + SignSGD, the EMA callback, and Lightning's Trainer. The model is a
TRM with the token-mixing MLP (d=128, 2 layers, T=2, n=2, 8 supervision segments), computed in bf16 where the CPU
has bf16 matrix units (fp32 masters either way). The held-out puzzles were never seen in training, in any
augmentation.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hrmkit.callbacks import EMA
from hrmkit.cores import build_core
from hrmkit.data.modules import PuzzleDataModule
from hrmkit.data.puzzles.format import iter_groups, read_metadata
from hrmkit.data.puzzles.sudoku import build_sudoku
from hrmkit.eval.scaling_runner import depth_line, puzzle_scaling
from hrmkit.pictures.boards import render_sudoku, save_png
from hrmkit.tasks.puzzle import PuzzleTask

#: Segments of the depth curve printed at the end (the model trains with 8).
DEPTH_CURVE = (1, 2, 4, 8, 16)


def fastest_cpu_dtype(size: int = 512, trials: int = 7) -> str:
    """``bfloat16`` if this CPU multiplies bf16 matrices faster than fp32 (AVX512-BF16/AMX), else ``float32``.

    Each dtype is timed ``trials`` times, alternating, and the best time of each counts, so a busy machine does not
    flip the choice (bf16 is ~4-5x faster where the CPU has bf16 units, far slower where it is emulated).
    """
    a = torch.randn(size, size)
    mats = {"float32": a, "bfloat16": a.to(torch.bfloat16)}
    best = {name: float("inf") for name in mats}
    for x in mats.values():
        x @ x  # warm-up
    for _ in range(trials):
        for name, x in mats.items():
            start = time.perf_counter()
            x @ x
            best[name] = min(best[name], time.perf_counter() - start)
    return "bfloat16" if best["bfloat16"] < 0.7 * best["float32"] else "float32"


class TimeBudgetProgressBar(RichProgressBar):
    """Rich bar without the meaningless "/-2" epoch total of a run bounded only by time."""

    def _get_train_description(self, current_epoch: int) -> str:
        return f"Epoch {current_epoch}"


class EvalPrinter(Callback):
    """After each validation: one line with held-out exact accuracy per difficulty (EMA weights)."""

    def __init__(self, console: Console, tag_names: list[str]) -> None:
        self.console, self.tag_names, self.start = console, tag_names, time.perf_counter()
        self.history: list[dict[str, float]] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn != "fit":  # the final stand-alone evaluation gets its own table
            return
        m = trainer.callback_metrics
        row = {"step": trainer.global_step, "minutes": (time.perf_counter() - self.start) / 60}
        row.update({t: float(m.get(f"val/exact_acc_by_tag/{t}", float("nan"))) for t in self.tag_names})
        self.history.append(row)
        levels = "  ".join(f"{t} {row[t]:6.1%}" for t in self.tag_names)
        self.console.print(f"step {row['step']:5d} {row['minutes']:5.1f} min  exact: {levels}")


def _board(puzzle: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> Text:
    """A 9×9 board: givens dim, cells the model filled green (right) or red (wrong)."""
    text = Text()
    for r in range(9):
        if r and r % 3 == 0:
            text.append("------+-------+------\n", style="dim")
        for c in range(9):
            if c and c % 3 == 0:
                text.append("| ", style="dim")
            i = r * 9 + c
            if puzzle[i]:
                text.append(f"{puzzle[i]} ", style="bold white")
            else:
                digit = str(pred[i]) if pred[i] else "."
                text.append(f"{digit} ", style="green" if pred[i] == truth[i] else "bold red")
        text.append("\n")
    return text


def _examples(data_dir: str, per_tag: int) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    found: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for g in iter_groups(data_dir, "test"):
        rows = found.setdefault(int(g["tag"]), [])
        if len(rows) < per_tag:
            rows.append((g["inputs"][0, 0].astype(np.int64), g["labels"][0, 0].astype(np.int64)))
    return found


def demo(minutes: float | None = None, out_dir: str = "runs/demo", seed: int = 0, max_steps: int = -1,
         task: Literal["sudoku", "text"] = "sudoku", n_train: int | None = None, n_test: int | None = None,
         source_steps: int = 0, text_task: str | None = None) -> None:
    """Generate Sudoku, train a small recursive model (TRM) on the CPU, and show it solving held-out puzzles.

    Args:
        minutes: training time budget (default 12; with ``--task text`` a wall-clock cap, default 15).
        out_dir: dataset, checkpoints, metrics and pictures go here (the dataset is reused when present).
        seed: seeds data, initialisation and order.
        max_steps: optional step limit (-1: only the time budget).
        task: ``sudoku`` (this demo) or ``text``: the text-cpu experiment (HRM-Text on a reasoning-gym task, its
            fixed step count; see docs/experiments/text-cpu.md).
        n_train: text only: training problems (default: the experiment's).
        n_test: text only: held-out problems judged (default: the experiment's).
        source_steps: text only: first train the core on symbolic 4x4 Sudoku for this many steps and start the
            text model from it (symbolic-to-text transfer; its minutes count in the budget). 0: from scratch.
        text_task: text only: the reasoning-gym preset (default: the experiment's ``mini_sudoku_waves``, worked
            solutions; ``mini_sudoku`` asks for the answer alone).
    """
    if task == "text":
        from hrmkit.commands.text_demo import run_text_demo

        run_text_demo(task=text_task, steps=max_steps if max_steps > 0 else None, minutes=minutes, seed=seed,
                      n_train=n_train, n_test=n_test,
                      out_dir=None if out_dir == "runs/demo" else out_dir, source_steps=source_steps)
        return
    run_demo(minutes=12.0 if minutes is None else minutes, out_dir=out_dir, seed=seed, max_steps=max_steps)


def _demo_dataset(console: Console, out: Path, train_size: int, test_size: int, num_aug: int, seed: int) -> Path:
    """The demo's Sudoku dataset under ``out``, built once (its name spells its settings, so a rerun reuses it)."""
    data_dir = out / f"sudoku-{train_size}x3-aug{num_aug}-test{test_size}-seed{seed}"
    if not (data_dir / "metadata.json").is_file():
        with console.status(f"generating {3 * train_size:,} training and {3 * test_size:,} held-out puzzles"):
            t0 = time.perf_counter()
            build_sudoku(str(data_dir), train_size=train_size, test_size=test_size, num_aug=num_aug, seed=seed)
        console.print(f"built {data_dir} in {time.perf_counter() - t0:.0f} s")
    return data_dir


def _show_solved(console: Console, model: PuzzleTask, data_dir: Path, tags: list[str], out: Path) -> None:
    """One held-out puzzle per level solved by the model: side by side in the terminal and as PNGs under ``out``."""
    examples = _examples(str(data_dir), 1)
    model.eval()
    as_digits = lambda a: np.where(a >= 2, a - 1, 0)  # noqa: E731  (tokens: 1 = blank, 2..10 = digits 1..9)
    boards, images = Table(box=None, padding=(0, 2)), []
    for tag in sorted(examples):
        puzzle, truth = examples[tag][0]
        pred = model.solve(torch.from_numpy(puzzle)[None]).squeeze(0).numpy()
        p, y, t = as_digits(puzzle), as_digits(pred), as_digits(truth)
        if np.any((p > 0) & (y != p)):
            console.print(f"[red]{tags[tag]}: the model overwrote a given digit (counted wrong above)[/]")
        y = np.where(p > 0, p, y)  # boards show the givens as given and the model's digits in the blanks
        boards.add_column(f"{tags[tag]}: {int((p > 0).sum())} givens", no_wrap=True, min_width=22)
        images.append(_board(p, y, t))
        save_png(render_sudoku(p, y, t), out / f"solved-{tags[tag]}.png")
    boards.add_row(*images)
    console.print(boards)
    console.print(f"[dim]givens in white; cells the model filled: green = right, red = wrong. Pictures: "
                  f"{out}/solved-*.png; last checkpoint: {out}/checkpoints/last.ckpt[/]")


def run_demo(minutes: float = 12.0, out_dir: str = "runs/demo", train_size: int = 3000, test_size: int = 500,
             num_aug: int = 8, batch_size: int = 64, lr: float = 1e-3, eval_every: int = 500, seed: int = 0,
             max_steps: int = -1, dtype: str | None = None) -> dict[str, float]:
    """Train TRM on generated Sudoku for ``minutes`` and report held-out exact accuracy per difficulty.

    Args:
        minutes: training time budget (the dataset build and final evaluation come on top).
        out_dir: where the dataset, checkpoints, metrics and pictures go (the dataset is reused if present).
        train_size: generated training puzzles per difficulty level (easy 40 givens, medium 30, hard minimal).
        test_size: held-out puzzles per level.
        num_aug: augmented versions stored per training puzzle.
        batch_size: puzzles in flight (ACT slots).
        lr: AdamATan2 learning rate (constant after a 100-step warmup).
        eval_every: validate every this many steps.
        seed: seeds data, initialisation and order.
        max_steps: optional step limit (-1: only the time budget).
        dtype: ``bfloat16`` or ``float32`` compute (default: whichever this CPU multiplies faster).
    """
    console = Console()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    out = Path(out_dir)
    data_dir = _demo_dataset(console, out, train_size, test_size, num_aug, seed)
    meta = read_metadata(data_dir)
    tags = meta.tag_names

    dtype = dtype or fastest_cpu_dtype()
    L.seed_everything(seed, verbose=False)
    core = build_core("trm", "demo", compute_dtype=dtype)
    model = PuzzleTask(core, vocab_size=meta.vocab_size, seq_len=meta.seq_len,
                       num_puzzle_identifiers=meta.num_puzzle_identifiers, puzzle_emb_len=1, halting="trm",
                       halt_max_steps=8, lr=lr, weight_decay=0.1, warmup_steps=100, puzzle_emb_lr=lr,
                       puzzle_emb_weight_decay=0.1, loss="softmax", loss_dtype="float32", tag_names=tags)
    data = PuzzleDataModule(str(data_dir), batch_size=batch_size, eval_batch_size=250, seed=seed)
    n_params = sum(p.numel() for p in model.parameters())
    console.print(f"[bold]hrmkit demo[/]: TRM (token-mixing MLP, d={core.hidden_size}, {n_params:,} parameters, "
                  f"{dtype} compute) on Sudoku, {minutes:g} min on {torch.get_num_threads()} CPU threads; "
                  f"held-out levels: {', '.join(tags)}")
    printer = EvalPrinter(console, tags)
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, save_top_k=0)
    trainer = L.Trainer(max_time={"minutes": minutes}, max_steps=max_steps, accelerator="cpu", devices=1,
                        logger=L.pytorch.loggers.CSVLogger(out, name="logs"), num_sanity_val_steps=0,
                        val_check_interval=eval_every, check_val_every_n_epoch=None, enable_model_summary=False,
                        callbacks=[EMA(0.995), printer, ckpt, TimeBudgetProgressBar(leave=False)], log_every_n_steps=50)
    start = time.perf_counter()
    trainer.fit(model, data)
    elapsed = (time.perf_counter() - start) / 60
    ema = next(cb for cb in trainer.callbacks if isinstance(cb, EMA))
    ema.ema.copy_to(model)  # evaluate and show the EMA weights
    # One pass over the held-out puzzles gives the table (8 segments, equal to `hrmkit validate`) and the depth curve.
    curve = puzzle_scaling(model, str(data_dir), segments=DEPTH_CURVE, batch_size=250,
                           progress="evaluating held-out puzzles")
    final = next(r for r in curve["rows"] if r["segments"] == model.eval_segments and r["samples"] == 1)

    table = Table(title=f"held-out Sudoku after {trainer.global_step} steps ({elapsed:.1f} min, EMA weights)")
    for col in ("difficulty", "givens", "puzzles", f"exact (fixed {model.eval_segments} segments)"):
        table.add_column(col, justify="right")
    givens = {"easy": "40", "medium": "30", "hard": "~24 (minimal)"}
    for t in tags:
        table.add_row(t, givens.get(t, "?"), f"{test_size}", f"{final['per_tag'][t]['exact_acc']:.1%}")
    console.print(table)

    _show_solved(console, model, data_dir, tags, out)
    console.print(f"thinking longer (held-out, all levels): {depth_line(curve, DEPTH_CURVE)}  [dim](trained with "
                  f"{model.eval_segments}; full curves: hrmkit eval scaling --checkpoint {out}/checkpoints/last.ckpt "
                  f"--data_dir {data_dir})[/]")
    return {"steps": trainer.global_step, "minutes": elapsed, "exact_acc": final["exact_acc"],
            **{f"exact_acc/{t}": final["per_tag"][t]["exact_acc"] for t in tags},
            **{f"depth/{r['segments']}": r["exact_acc"] for r in curve["rows"]}}

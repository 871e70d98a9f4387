"""``hrmkit show``: render puzzles of a built dataset, and optionally a checkpoint's answers, as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hrmkit.data.puzzles.format import iter_groups, read_metadata
from hrmkit.pictures.boards import render_arc, render_maze, render_sudoku, save_png


def _sudoku_digits(tokens: np.ndarray) -> np.ndarray:
    return np.where(tokens >= 2, tokens - 1, 0)  # 1 = blank, 2..10 = digits 1..9


def _arc_grid(tokens: np.ndarray) -> np.ndarray:
    from hrmkit.eval.arc import crop

    return np.asarray(crop(tokens))


def _render(task: str, inputs: np.ndarray, labels: np.ndarray, pred: np.ndarray | None, side: int):
    if task == "sudoku":
        given = _sudoku_digits(inputs)
        shown = _sudoku_digits(labels) if pred is None else np.where(given > 0, given, _sudoku_digits(pred))
        return render_sudoku(given, shown, _sudoku_digits(labels))
    if task == "maze":
        grid = (labels if pred is None else pred).reshape(side, side)
        return render_maze(grid)
    if task == "arc":
        return render_arc(_arc_grid(inputs), _arc_grid(labels), None if pred is None else _arc_grid(pred))
    raise ValueError(f"don't know how to draw task {task!r} (sudoku, maze, arc)")


def show(data_dir: str, out_dir: str = "runs/show", split: str = "test", count: int = 4,
         checkpoint: str | None = None, segments: int | None = None) -> list[str]:
    """Write PNG pictures of the first ``count`` puzzles of a dataset split, with a model's answers if given.

    Args:
        data_dir: a dataset built by ``hrmkit data ...``.
        out_dir: folder for the PNG files.
        split: ``train`` or ``test``.
        count: how many puzzles (first example of the first version of each group).
        checkpoint: a PuzzleTask checkpoint; its answers are drawn instead of the labels (wrong cells marked).
        segments: reasoning segments for the model (default: the checkpoint's eval_segments).
    """
    meta = read_metadata(data_dir)
    side = int(round(meta.seq_len ** 0.5))
    model = None
    if checkpoint is not None:
        from hrmkit.loading import load
        from hrmkit.tasks.puzzle import PuzzleTask

        model = load(checkpoint, PuzzleTask).eval()
    written = []
    for i, group in enumerate(iter_groups(data_dir, split)):
        if i >= count:
            break
        inputs, labels = group["inputs"][0, 0].astype(np.int64), group["labels"][0, 0].astype(np.int64)
        pred = None
        if model is not None:
            ids = torch.tensor([int(group["puzzle_identifiers"][0])])
            pred = model.solve(torch.from_numpy(inputs)[None], ids, segments).squeeze(0).numpy()
        tag = meta.tag_names[int(group["tag"])] if int(group["tag"]) < len(meta.tag_names) else str(group["tag"])
        path = Path(out_dir) / f"{meta.task}-{split}-{i:03d}-{tag}.png"
        save_png(_render(meta.task, inputs, labels, pred, side), path)
        written.append(str(path))
    print("\n".join(written))
    return written

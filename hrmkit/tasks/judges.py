"""Answer judges: task-specific checks that accept every correct answer, not only the one the label shows.

A judge takes the question rows and the predicted rows (``[B, L]`` token arrays) and returns ``[B]`` booleans. It
is chosen by the dataset's ``metadata.task``; tasks without a judge are scored against the label only.

``maze``: an exact BFS check that the prediction marks *a* shortest S→G path (most looped mazes have several; the
label marks one of them), :func:`hrmkit.data.puzzles.maze.judge_predictions`. It covers generated mazes, imported
Maze-Hard CSVs (``hrmkit data maze --source csv``) and HRM-built maze folders imported with ``--task maze``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hrmkit.data.puzzles.maze import judge_predictions as judge_maze

Judge = Callable[[np.ndarray, np.ndarray], np.ndarray]

JUDGES: dict[str, Judge] = {"maze": judge_maze}


def judge_for(task: str | None) -> Judge | None:
    """The judge of a dataset's ``metadata.task`` (None: score against the label only)."""
    return JUDGES.get(task) if task else None

"""Maze scoring accepts every shortest path: the BFS judge, path counting, unique-path generation, and the
validation metric next to the label metric (generated and imported CSV mazes alike)."""

from __future__ import annotations

import itertools
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from hrmkit.cores import build_core
from hrmkit.data import PuzzleDataModule
from hrmkit.data.puzzles.format import DatasetFormatError
from hrmkit.data.puzzles.maze import (
    GOAL,
    PATH,
    START,
    WALL,
    build_maze,
    count_shortest_paths,
    decode_grid,
    encode_grid,
    generate_mazes,
    judge_predictions,
    read_maze_csv,
    solve,
)
from hrmkit.tasks.puzzle import PuzzleTask

nx = pytest.importorskip("networkx")

# Two shortest S->G paths of 4 moves: along the top and right, or along the left and bottom.
LOOP = "#####" "#S  #" "# # #" "#  G#" "#####"


def _other_path(q: np.ndarray, label: np.ndarray) -> np.ndarray:
    """The LOOP maze's shortest path that the label did not mark."""
    other = q.copy()
    cells = [(1, 2), (1, 3), (2, 3)] if label[2, 1] == PATH else [(2, 1), (3, 1), (3, 2)]
    for r, c in cells:
        other[r, c] = PATH
    return other


def _nx_count(q: np.ndarray) -> int:
    graph = nx.grid_2d_graph(*q.shape)
    graph.remove_nodes_from(map(tuple, np.argwhere(q == WALL)))
    s, g = tuple(np.argwhere(q == START)[0]), tuple(np.argwhere(q == GOAL)[0])
    return sum(1 for _ in itertools.islice(nx.all_shortest_paths(graph, s, g), 3))


def test_judge_accepts_any_shortest_path_and_rejects_the_rest():
    q = encode_grid(LOOP)
    label = solve(q)
    other = _other_path(q, label)
    assert not np.array_equal(label, other)
    rows_q = np.stack([q, q, q, q, np.zeros_like(q)]).reshape(5, -1)
    rows_p = np.stack([label, other, q, np.zeros_like(q), label]).reshape(5, -1)
    # label, the other shortest path, nothing marked, PAD tokens, a padding row (no maze)
    assert judge_predictions(rows_q, rows_p).tolist() == [True, True, False, False, False]
    with pytest.raises(ValueError, match="equal"):
        judge_predictions(rows_q, rows_p[:, :-1])


def test_path_counts_agree_with_networkx():
    assert count_shortest_paths(LOOP) == 2 and count_shortest_paths(LOOP, cap=5) == 2
    for maze in generate_mazes(20, seed=5, size=10, min_path_len=4, num_loops=3):
        assert count_shortest_paths(maze.question) == min(_nx_count(maze.question), 2)


def test_unique_path_generator_keeps_only_single_answer_mazes():
    mazes = list(generate_mazes(6, seed=1, size=10, min_path_len=6, num_loops=2, unique_path=True))
    assert len(mazes) == 6 and all(_nx_count(m.question) == 1 for m in mazes)
    plain = list(generate_mazes(30, seed=1, size=10, min_path_len=6, num_loops=2))
    assert any(_nx_count(m.question) > 1 for m in plain)  # without the option, ties are common


def test_two_starts_are_reported_in_the_question_field(tmp_path):
    two = LOOP.replace(" ", "S", 1)
    path = tmp_path / "train.csv"
    path.write_text(f'source,question,answer,rating\nsrc,"{two}","{two}",1\n')
    with pytest.raises(DatasetFormatError, match=r"train\.csv:2: field 'question': .*start.*found 2"):
        list(read_maze_csv(path))


def _loop_csv_dataset(tmp_path: Path) -> Path:
    """An imported Maze-Hard-style CSV dataset of LOOP mazes (every test maze has two shortest paths)."""
    src = tmp_path / "csv"
    src.mkdir()
    row = f'src,"{LOOP}","{decode_grid(solve(encode_grid(LOOP)))}",4\n'
    for name in ("train.csv", "test.csv"):
        (src / name).write_text("source,question,answer,rating\n" + row * 3)
    build_maze(str(tmp_path / "ds"), source="csv", data_dir=str(src), train_size=None, test_size=None)
    return tmp_path / "ds"


def test_validation_logs_the_judge_next_to_the_label_metric(tmp_path, monkeypatch):
    data = _loop_csv_dataset(tmp_path)
    dm = PuzzleDataModule(str(data), batch_size=2, eval_batch_size=2)
    task = PuzzleTask(build_core("hrm", "tiny", max_seq_len=64), halt_max_steps=2)
    real = task._evaluate

    def answers_the_other_path(batch):  # a model that finds the shortest path the label did not mark
        r = real(batch)
        q = batch["inputs"].view(-1, 5, 5).numpy()
        other = [_other_path(x, solve(x)).reshape(-1) if (x == START).any() else x.reshape(-1) for x in q]
        r["pred"] = torch.from_numpy(np.stack(other)).long()
        return r

    monkeypatch.setattr(task, "_evaluate", answers_the_other_path)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(task, dm)
    assert metrics["val/exact_acc"] == 0.0  # against the label: wrong
    assert metrics["val/exact_acc_judge"] == 1.0  # against the maze: solved


def test_no_judge_metric_for_sudoku(tmp_path):
    from hrmkit.data.puzzles.sudoku import build_sudoku

    build_sudoku(str(tmp_path / "s"), train_size=4, test_size=2, levels=["easy"], num_aug=0, seed=0)
    task = PuzzleTask(build_core("hrm", "tiny", max_seq_len=128), halt_max_steps=2)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(task, PuzzleDataModule(str(tmp_path / "s"), batch_size=2))
    assert "val/exact_acc" in metrics and "val/exact_acc_judge" not in metrics

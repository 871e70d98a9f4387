"""Fuzz the readers: every mutated JSONL / Sudoku CSV / Maze CSV / ARC JSON file is either read into valid data or
rejected with the project's input error (:class:`hrmkit.errors.HrmkitInputError`); no other exception escapes."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hrmkit.data.puzzles.arc import GRID_SIZE, load_arc_source
from hrmkit.data.puzzles.maze import decode_grid, generate_maze, read_maze_csv
from hrmkit.data.puzzles.sudoku import format_grid, generate, read_sudoku_csv
from hrmkit.data.text.jsonl import iter_records
from hrmkit.errors import HrmkitInputError

MUTANTS_PER_FORMAT = 60  # 4 formats: 240 malformed files
PALETTE = ['"', ",", "{", "}", "[", "]", ":", "0", "9", "1", ".", "\n", "\r", " ", "é", "\x00", "\\", "-", "#", "x"]


def _mutate_text(text: str, rng: random.Random) -> bytes:
    """One to three random edits: delete, insert, duplicate or replace a span, truncate, or add an invalid byte."""
    data = text
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(data) + 1) if data else 0
        j = min(len(data), i + rng.randint(1, 12))
        op = rng.choice(["delete", "insert", "duplicate", "replace", "truncate", "bytes"])
        if op == "delete":
            data = data[:i] + data[j:]
        elif op == "insert":
            data = data[:i] + "".join(rng.choice(PALETTE) for _ in range(rng.randint(1, 4))) + data[i:]
        elif op == "duplicate":
            data = data[:j] + data[i:j] + data[j:]
        elif op == "replace" and data:
            data = data[:i] + rng.choice(PALETTE) + data[i + 1:]
        elif op == "truncate":
            data = data[:i]
        elif op == "bytes":
            return (data[:i].encode() + bytes([rng.choice([0xFF, 0xC3, 0x80, 0xFE])]) + data[i:].encode())
    return data.encode("utf-8")


_ODD_VALUES: list[Any] = [None, -1, 10, 3.5, "x", "", [], {}, True, [[1] * (GRID_SIZE + 1)] * 2,
                          [[0] * 3] * (GRID_SIZE + 1), [[1, 2], [3]], [[]], {"input": [[1]]}]


def _mutate_json(obj: Any, rng: random.Random) -> Any:
    """Replace or delete one randomly chosen node of a decoded JSON value."""
    obj = json.loads(json.dumps(obj))
    paths: list[list[Any]] = []

    def walk(node: Any, path: list[Any]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + [k])
        elif isinstance(node, list):
            for k, v in enumerate(node):
                walk(v, path + [k])

    walk(obj, [])
    path = rng.choice(paths[1:])
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    if rng.random() < 0.25:
        del parent[path[-1]]
    else:
        parent[path[-1]] = rng.choice(_ODD_VALUES)
    return obj


def _jsonl_base() -> str:
    records = [{"instruction": f"What is {a} plus {b}?", "response": f"{a + b}", "condition": "cot"}
               for a, b in ((1, 2), (3, 4), (5, 6))]
    return "".join(json.dumps(r) + "\n" for r in records)


def _sudoku_base() -> str:
    rows = ["source,question,answer,rating"]
    for seed in range(2):
        puzzle, solution = generate(random.Random(seed), "easy")
        rows.append(f"src{seed},{format_grid(puzzle)},{format_grid(solution)},{seed + 1}")
    return "\n".join(rows) + "\n"


def _maze_base() -> str:
    rows = ["source,question,answer,rating"]
    for seed in range(2):
        maze = generate_maze(np.random.default_rng(seed), size=6, num_loops=1)
        rows.append(f"gen,{decode_grid(maze.question)},{decode_grid(maze.answer)},{seed}")
    return "\n".join(rows) + "\n"


def _arc_base() -> dict:
    return {"train": [{"input": [[0, 1], [2, 3]], "output": [[3, 2], [1, 0]]},
                      {"input": [[4]], "output": [[5]]}],
            "test": [{"input": [[1, 1, 1]], "output": [[2, 2, 2]]}]}


def _check_jsonl(path: Path) -> None:
    for r in iter_records([path]):
        assert isinstance(r.instruction, str) and isinstance(r.response, str) and isinstance(r.condition, tuple)


def _check_sudoku(path: Path) -> None:
    ps, names = read_sudoku_csv(path)
    assert ps.puzzles.shape == ps.solutions.shape and ps.puzzles.shape[1:] == (81,)
    assert ps.puzzles.max() <= 9 and 1 <= ps.solutions.min() and ps.solutions.max() <= 9
    assert len(ps.tags) == len(ps.puzzles) and all(0 <= t < len(names) for t in ps.tags)


def _check_maze(path: Path) -> None:
    for maze in read_maze_csv(path):
        assert maze.question.shape == maze.answer.shape and maze.question.shape[0] == maze.question.shape[1]


def _check_arc(path: Path) -> None:
    for task in load_arc_source(str(path.parent)):
        assert task.train
        for grid_in, grid_out in task.train + task.test:
            for g in (grid_in, grid_out):
                if g is not None:
                    assert g.ndim == 2 and 1 <= min(g.shape) and max(g.shape) <= GRID_SIZE and g.max() <= 9


FORMATS: dict[str, tuple[str, Callable[[], Any], Callable[[Path], None]]] = {
    "jsonl": ("data.jsonl", _jsonl_base, _check_jsonl),
    "sudoku-csv": ("train.csv", _sudoku_base, _check_sudoku),
    "maze-csv": ("train.csv", _maze_base, _check_maze),
    "arc-json": ("task0.json", _arc_base, _check_arc),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_malformed_records_are_read_or_rejected_with_the_project_error(fmt, tmp_path):
    name, base, check = FORMATS[fmt]
    rng = random.Random(f"hrmkit-fuzz-{fmt}")
    original = base()
    path = tmp_path / name
    path.write_text(original if isinstance(original, str) else json.dumps(original))
    check(path)  # the unmutated file is valid
    accepted = rejected = 0
    for k in range(MUTANTS_PER_FORMAT):
        if isinstance(original, dict):
            mutant = (json.dumps(_mutate_json(original, rng)).encode() if k % 2 == 0
                      else _mutate_text(json.dumps(original), rng))
        else:
            mutant = _mutate_text(original, rng)
        path.write_bytes(mutant)
        try:
            check(path)
        except HrmkitInputError as e:
            assert str(path) in str(e), f"mutant {k}: the error does not name the file: {e}"
            rejected += 1
        except Exception as e:  # noqa: BLE001 - the point of the test: nothing else may escape
            pytest.fail(f"{fmt} mutant {k} ({mutant[:200]!r}) raised {type(e).__name__}: {e}")
        else:
            accepted += 1
    assert rejected >= MUTANTS_PER_FORMAT // 3, (accepted, rejected)  # the mutations really break most files

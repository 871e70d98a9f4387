"""Puzzles as text: render → parse → judge round trips, rejected answers, the dataset builder and the evaluator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hrmkit.cli import main
from hrmkit.data.puzzles import maze as maze_lib
from hrmkit.data.puzzles.sudoku import build_sudoku, generate_many
from hrmkit.data.text import read_text_metadata
from hrmkit.data.text.puzzles_as_text import (
    PuzzleTextError,
    judge,
    kind_of,
    parse_answer,
    parse_colour_grid,
    puzzle_records,
    render_arc,
    render_maze,
    render_sudoku,
)


@pytest.fixture(scope="module")
def sudokus():
    return generate_many(6, "easy", seed=3, key="t", num_workers=1)


@pytest.fixture(scope="module")
def mazes():
    return list(maze_lib.generate_mazes(4, seed=5, size=12, min_path_len=12))


def _arc_tasks(root) -> list[tuple[list, np.ndarray, np.ndarray]]:
    """Three small ARC-like tasks (flip, recolour, tile) with demonstrations and a test pair."""
    rng = np.random.default_rng(0)
    tasks = []
    for rule in (np.fliplr, lambda g: np.where(g == 1, 2, g), lambda g: np.tile(g, (1, 2))):
        grids = [rng.integers(0, 10, (rng.integers(1, 5), rng.integers(1, 5))) for _ in range(3)]
        tasks.append(([(g, rule(g)) for g in grids[:2]], grids[2], rule(grids[2])))
    return tasks


def test_sudoku_round_trip_returns_the_original_solution(sudokus):
    puzzles, solutions = sudokus
    for p, s in zip(puzzles, solutions):
        rec = render_sudoku(p, s)
        assert kind_of(rec["instruction"]) == "sudoku" and rec["puzzle"] == "sudoku"
        assert np.array_equal(parse_answer(rec["instruction"], rec["response"]), s)
        assert judge(rec["instruction"], rec["response"], rec["response"]).correct
        # whitespace is free: the whole answer on one line is the same answer
        assert judge(rec["instruction"], rec["response"], " ".join(rec["response"].split())).correct


def test_sudoku_judge_rejects_invalid_answers_and_accepts_any_valid_completion(sudokus):
    puzzles, solutions = sudokus
    p, s = puzzles[0], solutions[0]
    rec = render_sudoku(p, s)
    ins = rec["instruction"]
    given = int(np.flatnonzero(p)[0])
    # relabelling digits keeps a valid grid but breaks the givens
    relabelled = render_sudoku(p, (s % 9) + 1)["response"]
    assert judge(ins, rec["response"], relabelled).reason == "changes a given digit"
    broken = s.copy()
    blank = int(np.flatnonzero(p == 0)[0])
    broken[blank] = broken[blank] % 9 + 1
    assert "repeats a digit" in judge(ins, rec["response"], render_sudoku(p, broken)["response"]).reason
    assert "expected 81 cells, got 80" in judge(ins, rec["response"], " ".join(rec["response"].split()[:-1])).reason
    assert "expected 1-9 or '.'" in judge(ins, rec["response"], rec["response"].replace(str(s[0]), "x", 1)).reason
    assert not judge(ins, rec["response"], "").correct
    assert p[given] == s[given]
    # any valid completion counts: swapping digits 1 and 2 of the solution gives a second valid grid, and a puzzle
    # that only gives the cells where both grids agree has both as completions
    other = np.where(s == 1, 2, np.where(s == 2, 1, s))
    both = np.where(s == other, s, 0)
    rec2 = render_sudoku(both, s)
    assert judge(rec2["instruction"], rec2["response"], render_sudoku(both, other)["response"]).correct
    assert not judge(ins, rec["response"], render_sudoku(p, other)["response"]).correct  # p gives 1s or 2s


def test_maze_round_trip_returns_the_original_path(mazes):
    for m in mazes:
        rec = render_maze(m.question, m.answer)
        assert kind_of(rec["instruction"]) == "maze"
        assert np.array_equal(parse_answer(rec["instruction"], rec["response"]), m.answer)
        assert judge(rec["instruction"], rec["response"], rec["response"]).correct
        assert len(rec["response"].split()) == m.path_len


def test_maze_judge_rejects_invalid_paths(mazes):
    m = mazes[0]
    rec = render_maze(m.question, m.answer)
    ins, moves = rec["instruction"], rec["response"].split()
    back = {"U": "D", "D": "U", "L": "R", "R": "L"}
    detour = " ".join([moves[0], back[moves[0]], *moves])  # reaches G, but not by a shortest path
    assert not judge(ins, rec["response"], detour).correct
    assert "not at G" in judge(ins, rec["response"], " ".join(moves[:-1])).reason
    assert "expected one of U D L R" in judge(ins, rec["response"], " ".join(["X", *moves])).reason
    # a hand-made maze: S at (1,1), G at (2,2); U from S walks into the wall
    small = maze_lib.encode_grid("#####S ###G#####")
    rec = render_maze(small, maze_lib.solve(small))
    assert rec["response"] == "R D"
    assert "leaves the grid or enters a wall at row 0, col 1" in judge(rec["instruction"], "R D", "U R D").reason


def test_arc_round_trip_and_exact_match(tmp_path):
    for train, test_in, test_out in _arc_tasks(tmp_path):
        rec = render_arc(train, test_in, test_out)
        assert kind_of(rec["instruction"]) == "arc"
        assert np.array_equal(parse_answer(rec["instruction"], rec["response"]), test_out)
        assert judge(rec["instruction"], rec["response"], rec["response"]).correct
        wrong = test_out.copy()
        wrong[0, 0] = (wrong[0, 0] + 1) % 10
        assert judge(rec["instruction"], rec["response"], render_arc(train, test_in, wrong)["response"]).reason \
            == "cells differ"
        assert "differs from the reference" in judge(rec["instruction"], rec["response"], "0\n0\n0\n0\n0").reason
    with pytest.raises(PuzzleTextError, match="rows have different numbers of cells"):
        parse_colour_grid("1 2\n3")
    with pytest.raises(PuzzleTextError, match="does not start with a puzzle header"):
        kind_of("What is 2 + 3?")


def test_arc_records_from_a_task_directory(tmp_path):
    for subset, tasks in (("training", _arc_tasks(tmp_path)[:2]), ("evaluation", _arc_tasks(tmp_path)[2:])):
        (tmp_path / subset).mkdir()
        for i, (train, test_in, test_out) in enumerate(tasks):
            task = {"train": [{"input": a.tolist(), "output": b.tolist()} for a, b in train],
                    "test": [{"input": test_in.tolist(), "output": test_out.tolist()}]}
            (tmp_path / subset / f"t{i}.json").write_text(json.dumps(task))
    train = puzzle_records("arc", "train", 10, arc_sources=[str(tmp_path)])
    test = puzzle_records("arc", "test", 10, arc_sources=[str(tmp_path)])
    assert len(train) == 2 and len(test) == 1
    assert all(judge(r["instruction"], r["response"], r["response"]).correct for r in train + test)


def test_built_puzzle_dataset_renders_and_builds_a_text_dataset(tmp_path):
    build_sudoku(str(tmp_path / "sudoku"), train_size=3, test_size=2, levels=["easy"], num_aug=1, num_workers=1)
    recs = puzzle_records("sudoku", "train", 100, puzzle_dir=str(tmp_path / "sudoku"))
    assert len(recs) == 6  # 3 puzzles x (original + 1 augmented version)
    assert all(judge(r["instruction"], r["response"], r["response"]).correct for r in recs)
    main(["data", "text", "--out_dir", str(tmp_path / "text"), "--from_puzzles", "sudoku",
          "--puzzle_dir", str(tmp_path / "sudoku"), "--max_len", "512"])
    meta = read_text_metadata(tmp_path / "text")
    assert meta.split("train").samples == 6 and meta.split("val").samples == 2
    assert meta.builder["name"] == "hrmkit.data.text.puzzles_as_text"
    lines = (tmp_path / "text" / "jsonl" / "test.jsonl").read_text().splitlines()
    assert [json.loads(x)["puzzle"] for x in lines] == ["sudoku", "sudoku"]
    with pytest.raises(SystemExit):
        main(["data", "text", "--out_dir", str(tmp_path / "x"), "--from_puzzles", "maze",
              "--puzzle_dir", str(tmp_path / "sudoku")])


def test_eval_text_scores_puzzles_with_the_judges(tmp_path, sudokus):
    from hrmkit.cores import build_core
    from hrmkit.data.text import load_tokenizer, write_jsonl
    from hrmkit.eval.text import evaluate_text
    from hrmkit.tasks import TextTask

    puzzles, solutions = sudokus
    data = write_jsonl(tmp_path / "s.jsonl", [render_sudoku(p, s) for p, s in zip(puzzles[:2], solutions[:2])])
    tok = load_tokenizer("gpt2")
    task = TextTask(build_core("hrm", "tiny"), vocab_size=tok.padded_vocab_size)  # untrained: wrong answers
    out = evaluate_text(task, str(data), "puzzle", tokenizer="gpt2", max_new_tokens=4, out_dir=str(tmp_path / "e"))
    assert out["kind"] == "puzzle" and out["n"] == 2 and out["judge"] == "puzzle"
    rows = [json.loads(x) for x in (tmp_path / "e" / "predictions.jsonl").read_text().splitlines()]
    assert out["accuracy"] == 0.0 and len(rows) == 2
    assert all(r["reason"].startswith("sudoku answer: ") for r in rows)  # the Sudoku parser judged them

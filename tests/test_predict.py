"""`hrmkit predict -c recipe --ckpt_path ...` end to end: Sudoku, maze and text write one record per example."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from hrmkit.callbacks.predictions import prediction_rows
from hrmkit.cli import main
from hrmkit.data.puzzles.maze import build_maze, decode_grid, is_valid_shortest_path
from hrmkit.data.puzzles.sudoku import build_sudoku
from hrmkit.data.text import build_text

ROOT = Path(__file__).resolve().parents[1]


def _fit(recipe: str, data: Path, run: Path) -> Path:
    main(["fit", "-c", str(ROOT / recipe), "--data.init_args.data_dir", str(data), "--trainer.default_root_dir",
          str(run), "--trainer.enable_model_summary", "false"])
    (ckpt,) = run.rglob("*.ckpt")
    return ckpt


def _predict(recipe: str, data: Path, ckpt: Path, *extra: str) -> None:
    main(["predict", "-c", str(ROOT / recipe), "--data.init_args.data_dir", str(data), "--ckpt_path", str(ckpt),
          "--trainer.enable_model_summary", "false", *extra])


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sudoku_predict_writes_jsonl_next_to_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "sudoku"
    build_sudoku(str(data), train_size=8, test_size=5, levels=["easy"], num_aug=1, seed=0)
    ckpt = _fit("tests/recipes/sudoku-hrm.yaml", data, tmp_path / "run")
    _predict("tests/recipes/sudoku-hrm.yaml", data, ckpt)
    out = ckpt.parent.parent / f"predictions-{ckpt.stem}.jsonl"
    rows = _records(out)
    assert len(rows) == 5  # the padded rows of the last evaluation batch are left out
    for row in rows:
        assert len(row["pred"]) == len(row["inputs"]) == len(row["labels"]) == 81
        assert 1 <= row["halted_segment"] <= 2 and isinstance(row["q_halt"], float)
        assert row["exact"] == (row["pred"] == row["labels"])
        assert "judge" not in row  # Sudoku has one answer: no judge
    assert not list(out.parent.glob(".predictions*"))  # the temporary file was renamed into place

    _predict("tests/recipes/sudoku-hrm.yaml", data, ckpt, "--trainer.callbacks+=hrmkit.callbacks.PredictionWriter",
             "--trainer.callbacks.format", "csv", "--trainer.callbacks.output_dir", str(tmp_path / "csv"))
    with (tmp_path / "csv" / f"predictions-{ckpt.stem}.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 5 and [int(v) for v in table[0]["pred"].split()] == rows[0]["pred"]


def test_maze_predict_records_the_shortest_path_judge(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "maze"
    build_maze(str(data), train_size=8, test_size=4, size=10, min_path_len=4, num_loops=2, seed=0)
    ckpt = _fit("tests/recipes/maze-hrm.yaml", data, tmp_path / "run")
    _predict("tests/recipes/maze-hrm.yaml", data, ckpt)
    rows = _records(ckpt.parent.parent / f"predictions-{ckpt.stem}.jsonl")
    assert len(rows) == 4
    for row in rows:
        q, p = np.array(row["inputs"]).reshape(10, 10), np.array(row["pred"]).reshape(10, 10)
        valid_tokens = p.min() >= 1
        assert row["judge"] == (valid_tokens and is_valid_shortest_path(decode_grid(q), decode_grid(p)))
        labels = np.array(row["labels"]).reshape(10, 10)
        assert is_valid_shortest_path(decode_grid(q), decode_grid(labels))  # the label always passes the judge


def test_text_predict_writes_generations_with_text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    records = [{"instruction": f"What is {a} plus {b}?", "response": f"{a + b}", "condition": "direct"}
               for a in range(4) for b in range(4)]
    (tmp_path / "tiny.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    data = tmp_path / "text"
    build_text(str(data), [str(tmp_path / "tiny.jsonl")], tokenizer="gpt2", val_fraction=0.25, max_len=32)
    ckpt = _fit("tests/recipes/text-hrm-B.yaml", data, tmp_path / "run")
    _predict("tests/recipes/text-hrm-B.yaml", data, ckpt, "--data.init_args.predict_max_new_tokens", "3",
             "--data.init_args.predict_batch_size", "3")
    rows = _records(ckpt.parent.parent / f"predictions-{ckpt.stem}.jsonl")
    meta = json.loads((data / "metadata.json").read_text())
    assert len(rows) == meta["splits"]["val"]["samples"] and [r["index"] for r in rows] == list(range(len(rows)))
    for row in rows:
        assert 1 <= len(row["generated_ids"]) <= 3 and isinstance(row["generated"], str)
        assert "plus" in row["prompt"] and row["reference"].strip()


def test_prediction_rows_drop_padding_and_check_lengths():
    import torch

    rows = prediction_rows({"a": torch.tensor([1, 2, 3]), "b": [[1], [2], [3]], "valid": torch.tensor([1, 1, 0])})
    assert rows == [{"a": 1, "b": [1]}, {"a": 2, "b": [2]}]
    with pytest.raises(ValueError, match="different lengths"):
        prediction_rows({"a": [1, 2], "b": [1]})

"""The experiment scripts of benchmarks/experiments/ stay runnable: each runs at toy size in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _scripts import load_script

pytest.importorskip("reasoning_gym")

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    return load_script(ROOT / "benchmarks" / "experiments" / f"{name}.py", f"exp_{name}")


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_char_level_tokenizer_round_trips_and_survives_save(tmp_path):
    from hrmkit.data.text import char_level, load_tokenizer

    tok = char_level(["Solve this:\n1 _ 2", "-12 + 3 ="])
    text = "1 _ 2\n-3 ="
    ids = tok.encode(text)
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok.pad_id == 0 and tok.encode("x") == [31]  # specials first, then <|unk|> for characters not seen
    again = load_tokenizer(tok.save(tmp_path / "tokenizer.json"))
    assert again.encode(text) == ids and again.decode(again.encode_prompt("1 2")) == "<|im_start|>1 2<|im_end|>"


def test_gym_splits_are_disjoint_and_scored_by_the_task():
    from hrmkit.data.text.reasoning_gym_tasks import scorer, task_records

    train, held_out = task_records("chain_sum", 200, 50, seed=3)
    assert len(train) == 200 and 0 < len(held_out) <= 50
    assert not {r["instruction"] for r in train} & {r["instruction"] for r in held_out}
    score = scorer("chain_sum")
    assert score(held_out[0]["response"], held_out[0]) == 1.0
    assert score("not a number", held_out[0]) < 1.0
    with pytest.raises(ValueError, match="not a text-cpu preset"):
        task_records("no_such_task", 1, 1)


def test_mini_sudoku_preset_keeps_only_puzzles_with_one_solution():
    from hrmkit.data.text.reasoning_gym_tasks import mini_sudoku_solutions, task_records

    assert mini_sudoku_solutions([[0] * 4] * 4, cap=1000) == 288  # every 4x4 Sudoku grid
    solved = [[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]]
    assert mini_sudoku_solutions(solved) == 1
    solved[0][0] = 0
    assert mini_sudoku_solutions(solved) == 1  # one blank: its digit is forced
    train, held_out = task_records("mini_sudoku", 20, 30, seed=5)
    assert len(train) == 20
    for r in train + held_out:
        assert mini_sudoku_solutions(r["entry"]["metadata"]["puzzle"]) == 1
    raw, _ = task_records("mini_sudoku_any", 60, 1, seed=5)
    assert any(mini_sudoku_solutions(r["entry"]["metadata"]["puzzle"]) > 1 for r in raw)


def test_text_cpu_script_writes_report_and_json_at_toy_size(tmp_path, one_thread):
    report = tmp_path / "report"
    args = ["--stage", "all", "--pilot_tasks", "number_sorting", "--pilot_steps", "2", "--task", "chain_sum",
            "--steps", "3", "--seeds", "0,1", "--n_train", "32", "--n_test", "8", "--eval_every", "2",
            "--curve_n", "4", "--max_new_tokens", "6", "--work_dir", str(tmp_path / "work"), "--report_dir",
            str(report)]
    _script("text_cpu").main(args)
    data = json.loads((report / "text-cpu.json").read_text())
    assert data["task"] == "chain_sum" and data["seeds"] == [0, 1] and data["steps"] == 3
    assert 0.0 <= data["exact"] <= 1.0 and data["minutes"] > 0
    assert [p["step"] for p in data["curve"]] == [2, 3]
    assert [p["task"] for p in data["pilots"]] == ["number_sorting"]
    assert data["summary"]["exact_min"] <= data["exact"] <= data["summary"]["exact_max"]
    assert all(r["threads"] == 1 and len(r["load_before"]) == 3 for r in data["runs"])
    md = (report / "text-cpu.md").read_text()
    assert "benchmarks/experiments/text_cpu.py --stage all" in md and "| number_sorting |" in md
    assert "![held-out exact during training](text-cpu.png)" in md and (report / "text-cpu.png").stat().st_size
    # a later final-only run keeps the pilots and the command that produced them
    _script("text_cpu").main(["--stage", "final", *args[6:10], "--seeds", "0", *args[12:]])
    again = json.loads((report / "text-cpu.json").read_text())
    assert [p["task"] for p in again["pilots"]] == ["number_sorting"] and len(again["commands"]) == 2


def test_demo_task_text_runs_at_toy_size(tmp_path, capsys, one_thread):
    from hrmkit.cli import main

    main(["demo", "--task", "text", "--max_steps", "2", "--n_train", "32", "--n_test", "12",
          "--out_dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "hrmkit demo --task text" in out and "held-out mini_sudoku" in out and "exact over" in out


def test_demo_task_rejects_unknown_names(capsys):
    from hrmkit.cli import main

    with pytest.raises(SystemExit):
        main(["demo", "--task", "chess"])
    assert "chess" in capsys.readouterr().err


def test_core_ablation_script_writes_every_row_and_resumes(tmp_path, one_thread):
    script = _script("core_ablation")
    report = tmp_path / "report"
    toy = ["--steps", "3", "--n_train", "32", "--n_test", "8", "--judge_n", "4", "--eval_every", "2", "--curve_n",
           "3", "--max_new_tokens", "6", "--work_dir", str(tmp_path / "work"), "--report_dir", str(report)]
    script.main(["--seeds", "0", *toy])
    data = json.loads((report / "core-ablation.json").read_text())
    keys = [f"{r['core']}/{r['variant']}" for r in data["runs"]]
    assert keys == [row.key for row in script.ROWS] and len(keys) == 8
    params = {k: r["params"] for k, r in zip(keys, data["runs"])}
    for run in data["runs"]:
        assert set(run) >= {"core", "variant", "seed", "exact", "val_loss", "params", "tokens_per_s"}
        assert 0.0 <= run["exact"] <= 1.0 and run["val_loss"] > 0 and run["tokens_per_s"] > 0
        assert run["steps"] == 3 and run["judged"] == 4 and len(run["load_before"]) == 3
        assert abs(run["params"] / params["hrm/text-cpu"] - 1) <= 0.10  # the parameter budget the rows share
    health = {k: r["magicnorm"] for k, r in zip(keys, data["runs"])}
    assert all(abs(v - 1) < 0.05 for v in health["hrm/text-cpu"]["rms"].values())  # MagicNorm: unit RMS per call
    assert len(health["hrm/no-magicnorm"]["rms"]) == 8 and health["hrm/no-magicnorm"]["ratio_last_first"] > 0
    md = (report / "core-ablation.md").read_text()
    assert "benchmarks/experiments/core_ablation.py --seeds 0" in md and "(core-ablation.png)" in md
    assert all(f"| {row.label} |" in md for row in script.ROWS)
    verdicts = ("**not established**", "**consistent", "**supports", "**contradicts", "**mixed")
    assert sum(md.count(v) for v in verdicts) == len(script.CLAIMS)
    assert (report / "core-ablation.png").stat().st_size
    # a rerun with the same setup keeps the stored runs and trains only the missing ones
    script.main(["--seeds", "0,1", "--rows", "hrm/bp2", *toy])
    again = json.loads((report / "core-ablation.json").read_text())
    assert len(again["runs"]) == 9 and [r["seed"] for r in again["runs"] if r["variant"] == "bp2"] == [0, 1]
    assert again["runs"][0] == data["runs"][0] and len(again["commands"]) == 2
    with pytest.raises(SystemExit):
        script.main(["--rows", "hrm/nope", *toy])

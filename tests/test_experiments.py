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


def test_worked_mini_sudoku_steps_are_singles_that_replay_to_the_stored_answer():
    from hrmkit.data.text.reasoning_gym_tasks import mini_sudoku_steps, scorer, task_records

    train, held_out = task_records("mini_sudoku_worked", 30, 30, seed=5)
    direct, direct_held_out = task_records("mini_sudoku", 30, 30, seed=5)
    assert [r["instruction"] for r in held_out] == [r["instruction"] for r in direct_held_out]  # same puzzles
    for r in train + held_out:
        assert r["condition"] == "cot" and r["response"].endswith("\\boxed{" + r["entry"]["answer"] + "}")
        board = [list(row) for row in r["entry"]["metadata"]["puzzle"]]
        lines = r["response"].split("\n\\boxed{")[0].split("\n")
        assert len(lines) == sum(row.count(0) for row in board)
        for line, (row, col, value) in zip(lines, mini_sudoku_steps(board)):
            assert line == f"r{row + 1}c{col + 1}={value}" and board[row][col] == 0
            board[row][col] = value
        assert "\n".join(" ".join(map(str, row)) for row in board) == r["entry"]["answer"]
    score, first = scorer("mini_sudoku_worked"), held_out[0]
    assert score(first["response"], first) == 1.0
    assert score("r1c1=1\n\\boxed{" + first["entry"]["answer"] + "}", first) == 1.0  # the box is judged
    assert score(first["entry"]["answer"], first) == 0.0  # no box, no answer
    assert scorer("mini_sudoku")(direct_held_out[0]["response"], direct_held_out[0]) == 1.0  # direct: no box
    with pytest.raises(ValueError, match="no blank with a single candidate"):
        mini_sudoku_steps([[0] * 4] * 4)


def test_worked_mini_sudoku_waves_fill_every_naked_single_of_the_board_before():
    from hrmkit.data.text.reasoning_gym_tasks import mini_sudoku_solutions, mini_sudoku_waves, scorer, task_records

    train, held_out = task_records("mini_sudoku_waves", 30, 30, seed=5)
    for r in train + held_out:
        *boards, last = r["response"].split("\n\n")
        assert last == "\\boxed{" + r["entry"]["answer"] + "}" and r["condition"] == "cot"
        board = [list(row) for row in r["entry"]["metadata"]["puzzle"]]
        for text in [*boards, r["entry"]["answer"]]:
            grid = [[0 if v == "_" else int(v) for v in row.split(" ")] for row in text.split("\n")]
            for i in range(4):
                for j in range(4):  # a cell is filled exactly when the board before left it one candidate
                    if board[i][j]:
                        assert grid[i][j] == board[i][j]
                    else:
                        box = {board[a][b] for a in range(i - i % 2, i - i % 2 + 2)
                               for b in range(j - j % 2, j - j % 2 + 2)}
                        left = {1, 2, 3, 4} - {board[i][k] for k in range(4)} - {board[k][j] for k in range(4)} - box
                        assert grid[i][j] == (left.pop() if len(left) == 1 else 0)
            board = grid
        assert mini_sudoku_solutions(board) == 1 and all(all(row) for row in board)
    assert scorer("mini_sudoku_waves")(held_out[0]["response"], held_out[0]) == 1.0
    with pytest.raises(ValueError, match="no blank with a single candidate"):
        mini_sudoku_waves([[0] * 4] * 4)


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
    # a final of another task: seeds run apart join by --runs_from, and the earlier final stays in the report
    waves = ["--task", "mini_sudoku_waves", "--steps", "2", "--n_train", "32", "--n_test", "30", "--eval_every", "2",
             "--curve_n", "2", "--max_new_tokens", "6", "--work_dir", str(tmp_path / "work")]
    side = tmp_path / "side"
    _script("text_cpu").main(["--stage", "final", *waves, "--seeds", "1", "--report_dir", str(side)])
    _script("text_cpu").main(["--stage", "final", *waves, "--seeds", "0", "--runs_from", str(side / "text-cpu.json"),
                              "--report_dir", str(report)])
    merged = json.loads((report / "text-cpu.json").read_text())
    assert merged["task"] == "mini_sudoku_waves" and merged["seeds"] == [0, 1]
    assert [e["task"] for e in merged["earlier_finals"]] == ["chain_sum"]
    assert (report / "text-cpu-chain_sum-0.png").is_file() and (report / "text-cpu.png").is_file()
    md = (report / "text-cpu.md").read_text()
    assert "## Earlier final: chain_sum" in md and "Against the earlier final, chain_sum" in md
    with pytest.raises(SystemExit, match="no run with this final's task and config"):
        _script("text_cpu").main(["--stage", "final", *waves[:2], "--steps", "3", *waves[4:], "--seeds", "",
                                  "--runs_from", str(side / "text-cpu.json"), "--report_dir", str(report)])


def test_demo_task_text_runs_at_toy_size(tmp_path, capsys, one_thread):
    from hrmkit.cli import main

    main(["demo", "--task", "text", "--max_steps", "2", "--n_train", "32", "--n_test", "12",
          "--out_dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "hrmkit demo --task text" in out and "held-out mini_sudoku_waves" in out and "exact over" in out
    main(["demo", "--task", "text", "--text_task", "chain_sum", "--max_steps", "1", "--n_train", "16", "--n_test",
          "4", "--out_dir", str(tmp_path)])
    assert "held-out chain_sum" in capsys.readouterr().out


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


def test_transfer_script_runs_every_arm_and_starts_the_cell_rows_from_the_source(tmp_path, one_thread):
    import torch as th

    from hrmkit.transfer import read_source

    mod = _script("transfer")
    report, work = tmp_path / "report", tmp_path / "work"
    args = ["--steps", "2", "--cells_steps", "2", "--seeds", "0", "--source_steps", "2", "--source_batch", "16",
            "--source_train", "48", "--source_test", "16",
            "--n_train", "48", "--n_test", "40", "--eval_every", "2", "--curve_n", "3", "--max_new_tokens", "18",
            "--hidden_size", "32", "--source_threads", "1", "--work_dir", str(work), "--report_dir", str(report)]
    out = mod.main(args)
    data = json.loads((report / "transfer.json").read_text())
    assert {(r["target"], r["arm"]) for r in data["runs"]} == {(t, a) for t in mod.TARGETS for a in mod.ARMS}
    for r in data["runs"]:
        assert 0.0 <= r["exact"] <= 1.0 and r["steps"] == 2 and set(r["exact_by_tag"]) <= set(mod.TAGS)
        assert r["trainable"] < r["params"] if r["arm"] == "frozen" else r["trainable"] == r["params"]
    md = (report / "transfer.md").read_text()
    assert "## History" in md and "Target `cells`" in md and "steps to 50 %" in md
    (report / "transfer.md").unlink()
    mod.main(["--report_only", "--report_dir", str(report)])  # re-renders from the JSON alone
    assert (report / "transfer.md").read_text() == md
    # the source never saw a target held-out puzzle, and its checkpoint holds the cell rows the arms start from
    from hrmkit.commands.symbolic_source import CELL_CHARS
    from hrmkit.commands.text_demo import TextCpuConfig, text_core
    from hrmkit.data.puzzles.format import iter_groups, read_metadata
    from hrmkit.data.text.tokenizer import load_tokenizer
    from hrmkit.tasks import TextTask

    cfg = TextCpuConfig(task="mini_sudoku", n_train=48, n_test=40, hidden_size=32)
    cells = mod.target_data(cfg, work, "cells")
    held = {r["instruction"] for r in cells.held_out}
    src_dir = next(work.glob("source-train*"))
    assert read_metadata(src_dir).split("train").total_groups == 48
    seen = {"".join(CELL_CHARS[int(v) - 1] for v in g["inputs"][0, 0]) for g in iter_groups(src_dir, "train")}
    assert held and not held & seen
    src = read_source(out["source"]["checkpoint"]).state
    tok = load_tokenizer(cells.data_dir)
    model = TextTask(text_core(cfg), vocab_size=tok.vocab_size)
    mod.CellRows(out["source"]["checkpoint"], cells.data_dir).on_fit_start(None, model)
    for i, ch in enumerate(CELL_CHARS):
        assert th.equal(model.embed_tokens.weight[tok.encode(ch)[0]], src["embed_tokens.weight"][1 + i])
        assert th.equal(model.lm_head.weight[tok.encode(ch)[0]], src["lm_head.weight"][1 + i])


def test_cells_rendering_is_one_character_per_cell():
    mod = _script("transfer")
    rec = {"entry": {"metadata": {"puzzle": [[0, 0, 0, 4], [0, 4, 0, 1], [0, 3, 0, 0], [0, 0, 0, 3]],
                                  "solution": [[3, 1, 2, 4], [2, 4, 3, 1], [4, 3, 1, 2], [1, 2, 4, 3]]}}}
    r = mod.cells_record(rec)
    assert r["instruction"] == "___4_4_1_3_____3" and r["response"] == "3124243143121243"
    assert mod.blanks(rec) == 11 and mod.TAGS[mod.tag_of(11)] == "11-12 blanks"
    assert mod.exact_cells("3124243143121243\n", r) == 1.0 and mod.exact_cells("3124243143121234", r) == 0.0


def test_text_cpu_with_symbolic_pretraining_counts_the_source_in_its_minutes(tmp_path, one_thread):
    from hrmkit.commands.text_demo import TextCpuConfig, run_text_cpu

    cfg = TextCpuConfig(task="mini_sudoku", steps=2, n_train=32, n_test=40, hidden_size=32, eval_every=2, curve_n=3,
                        max_new_tokens=40, source_steps=2, source_batch=8, source_train=16, source_test=8)
    res = run_text_cpu(cfg, seed=0, work_dir=str(tmp_path), log=lambda _: None)
    assert res["steps"] == 2 and res["source"]["steps"] == 2
    assert res["minutes"] == pytest.approx(res["source"]["minutes"] + res["text_minutes"], abs=0.02)
    assert (tmp_path / "source-train16-test8" / "metadata.json").is_file()
    with pytest.raises(ValueError, match="symbolic pretraining is for mini_sudoku"):
        run_text_cpu(TextCpuConfig(task="chain_sum", steps=1, n_train=8, n_test=4, source_steps=1), 0,
                     str(tmp_path), log=lambda _: None)

"""hrmkit eval scaling: one pass over depths equals separate runs, the model's own eval_segments equals validation,
width voting equals PuzzleTask's sampled evaluation, ARC pass@K equals hrmkit eval arc, text depth curves, report."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from hrmkit.cores import build_core
from hrmkit.cores.flops import call_params, core_forward_flops_per_token
from hrmkit.data import PuzzleDataModule
from hrmkit.data.puzzles.arc import build_arc
from hrmkit.data.puzzles.sudoku import build_sudoku
from hrmkit.eval.arc_runner import evaluate_arc
from hrmkit.eval.scaling import PuzzleScaling, dataset_judge, parse_ints
from hrmkit.eval.scaling_runner import depth_line, evaluate_scaling, puzzle_scaling
from hrmkit.eval.scaling_text import depth_attribute
from hrmkit.eval.text import evaluate_text
from hrmkit.loading import load
from hrmkit.tasks.puzzle import PuzzleTask
from hrmkit.tasks.text import TextTask
from hrmkit.transfer import save_task_checkpoint

METRICS = ("exact_acc", "token_acc", "exact_acc_halted", "segments_halted", "q_halt_acc")


def _quiet_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kwargs)


@pytest.fixture(scope="module")
def sudoku(tmp_path_factory) -> Path:
    """Two difficulty tags (79 and 77 givens), 4 held-out puzzles each (two evaluation batches of 5, one padded)."""
    out = tmp_path_factory.mktemp("scaling") / "sudoku"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_sudoku(str(out), train_size=16, test_size=4, levels=["79", "77"], num_aug=0, seed=0, num_workers=1)
    return out


def _save(task: PuzzleTask, path: Path) -> Path:
    """A random model with a random halting head (sequences halt at different segments), saved weights-only."""
    with torch.no_grad():
        torch.nn.init.normal_(task.q_head.weight, std=0.5)
        task.q_head.bias.zero_()
    return save_task_checkpoint(task, path)


@pytest.fixture(scope="module")
def checkpoint(sudoku, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    meta = PuzzleDataModule(str(sudoku)).metadata
    task = PuzzleTask(build_core("hrm", "tiny", max_seq_len=96), vocab_size=meta.vocab_size, seq_len=meta.seq_len,
                      num_puzzle_identifiers=meta.num_puzzle_identifiers, halting="hrm", halt_max_steps=4,
                      eval_segments=3, tag_names=meta.tag_names)
    return _save(task, tmp_path_factory.mktemp("run") / "model.ckpt")


def _validate(task: PuzzleTask, data: Path, eval_segments: int, num_samples: int = 1, seed: int = 0) -> dict:
    task.eval_segments, task.hparams.num_samples = eval_segments, num_samples
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _quiet_trainer().validate(task, PuzzleDataModule(str(data), eval_batch_size=5), verbose=False)[0]


def _row(result: dict, segments: int, samples: int = 1) -> dict:
    return next(r for r in result["rows"] if r["segments"] == segments and r["samples"] == samples)


def test_eval_segments_equal_validate_and_one_pass_equals_separate_runs(checkpoint, sudoku):
    task = load(checkpoint, PuzzleTask)
    result = puzzle_scaling(task, str(sudoku), segments=[1, 2, 4], batch_size=5)
    assert result["segments"] == [1, 2, 3, 4], "the model's own eval_segments (3) is added"
    assert result["examples"] == 8 and result["tags"] == ["79", "77"]
    for depth in (1, 3):  # 3: the recipe's eval_segments, what `hrmkit validate` reports
        row = _row(result, depth)
        val = _validate(load(checkpoint, PuzzleTask), sudoku, depth)
        for metric in METRICS:
            assert row[metric] == pytest.approx(val[f"val/{metric}"], abs=1e-6), (depth, metric)
        for tag in ("79", "77"):
            assert row["per_tag"][tag]["exact_acc"] == pytest.approx(val[f"val/exact_acc_by_tag/{tag}"], abs=1e-6)
    for depth in (1, 2, 3, 4):
        alone = _row(puzzle_scaling(task, str(sudoku), segments=[depth], batch_size=5), depth)
        row = _row(result, depth)
        for metric in METRICS:
            assert alone[metric] == row[metric], (depth, metric)
        assert alone["per_tag"] == row["per_tag"]
    halted = [_row(result, d)["segments_halted"] for d in (1, 2, 3, 4)]
    assert halted[0] == 1.0 and 1.0 < halted[-1] < 4.0, "the random halting head stops some sequences early"
    assert 0 < _row(result, 4)["token_acc"] < 1


def test_compute_is_counted_with_app_a_flops(checkpoint, sudoku):
    task = load(checkpoint, PuzzleTask)
    result = puzzle_scaling(task, str(sudoku), segments=[1, 4], batch_size=5)
    per_token = sum(2 * n for n in call_params(task.core))
    assert per_token == core_forward_flops_per_token(task.core) > 0
    tokens = 81 + task.prefix_len
    for depth in (1, 3, 4):
        row = _row(result, depth)
        assert row["core_passes"] == depth and row["module_calls"] == depth * len(task.core.schedule())
        assert row["flops_per_example"] == depth * tokens * per_token
        assert row["flops"] == row["flops_per_example"] * 8
    seconds = [_row(result, d)["seconds"] for d in (1, 3, 4)]
    assert 0 < seconds[0] <= seconds[1] <= seconds[2], "seconds are cumulative along the pass"


def test_a_judge_counts_answers_the_label_does_not_show(checkpoint, sudoku):
    accept_all = lambda inputs, pred: np.ones(len(pred), dtype=bool)  # noqa: E731
    result = puzzle_scaling(load(checkpoint, PuzzleTask), str(sudoku), segments=[2], judge=accept_all)
    row = _row(result, 2)
    assert row["judge_acc"] == 1.0 and row["judge_acc_halted"] == 1.0 and result["judge"] == "<lambda>"
    exact = puzzle_scaling(load(checkpoint, PuzzleTask), str(sudoku), segments=[2], judge="exact")
    assert "judge_acc" not in _row(exact, 2) and exact["judge"] is None
    assert dataset_judge("sudoku") is None, "Sudoku answers are scored against the label"
    assert dataset_judge("maze") is not None, "maze answers: any shortest path"


def test_width_needs_a_stochastic_core_and_bad_lists_are_refused(checkpoint, sudoku):
    task = load(checkpoint, PuzzleTask)
    with pytest.raises(ValueError, match="stochastic core"):
        puzzle_scaling(task, str(sudoku), segments=[1], samples=[1, 4])
    with pytest.raises(ValueError, match="segments: expected"):
        parse_ints("1,two", "segments")
    with pytest.raises(ValueError, match="positive"):
        parse_ints([0, 2], "samples")
    assert parse_ints("[4, 1,2,2]", "segments") == [1, 2, 4] and parse_ints(8, "x") == [8]


def test_sampled_width_equals_the_tasks_own_sampled_evaluation(sudoku, tmp_path):
    """GRAM (the stochastic plugin core): N trajectories voted in the scaling pass equal num_samples=N validation
    with the same seed; the any-of-N line never falls below the voted one."""
    pytest.importorskip("hrmkit_gram")
    torch.manual_seed(0)
    meta = PuzzleDataModule(str(sudoku)).metadata
    task = PuzzleTask(build_core("gram", "tiny", max_seq_len=96), vocab_size=meta.vocab_size, seq_len=meta.seq_len,
                      num_puzzle_identifiers=meta.num_puzzle_identifiers, halt_max_steps=2, eval_segments=2,
                      tag_names=meta.tag_names)
    path = _save(task, tmp_path / "gram.ckpt")
    result = puzzle_scaling(load(path, PuzzleTask), str(sudoku), segments=[2], samples=[4], batch_size=5, seed=3)
    val = _validate(load(path, PuzzleTask), sudoku, 2, num_samples=4, seed=3)
    row = _row(result, 2, 4)
    for metric in (*METRICS, "exact_acc_any", "exact_acc_single"):
        assert row[metric] == pytest.approx(val[f"val/{metric}"], abs=1e-6), metric
    grid = puzzle_scaling(load(path, PuzzleTask), str(sudoku), segments=[1, 2], samples=[1, 2, 4], batch_size=5)
    assert {(r["segments"], r["samples"]) for r in grid["rows"]} == {(s, n) for s in (1, 2) for n in (1, 2, 4)}
    for r in grid["rows"]:
        assert r.get("exact_acc_any", r["exact_acc"]) >= r["exact_acc_single" if r["samples"] > 1 else "exact_acc"]
        assert r["flops_per_example"] == r["segments"] * r["samples"] * grid["tokens_per_example"] * \
            grid["flops_per_token_pass"]


def test_command_writes_json_table_and_charts(checkpoint, sudoku, tmp_path, capsys):
    out = tmp_path / "report"
    report = evaluate_scaling([str(checkpoint)], str(sudoku), out_dir=str(out), segments="1,2,4", batch_size=5,
                              limit_per_tag=3)
    printed = capsys.readouterr().out
    assert "exact" in printed and "scaling.json" in printed
    saved = json.loads((out / "scaling.json").read_text())
    result = saved["checkpoints"][0]
    assert result["segments"] == [1, 2, 3, 4] and result["name"] == "model.ckpt"
    assert result["examples"] == 6, "the first 3 test examples of each tag (the split is stored tag by tag)"
    assert all(r["per_tag"].keys() == {"79", "77"} for r in result["rows"])
    table = (out / "scaling.md").read_text()
    assert "| 3* | 1 |" in table and "exact 79" in table
    for name in ("accuracy_vs_depth.png", "accuracy_vs_compute.png"):
        img = Image.open(out / name)
        assert img.size == (960, 540) and np.asarray(img.convert("L")).std() > 10
    assert not (out / "accuracy_vs_width.png").exists(), "no width chart for a deterministic core"
    assert report["files"][0].endswith("scaling.json")
    line = depth_line(report["checkpoints"][0], [1, 2, 4])
    assert line.startswith("exact at 1 / 2 / 4 segments: ") and line.count("%") == 3


def test_one_pass_accumulator_rejects_empty_settings(checkpoint):
    with pytest.raises(ValueError, match="positive"):
        PuzzleScaling(load(checkpoint, PuzzleTask), segments=[], samples=[1])


def test_arc_pass_at_k_at_each_depth_equals_hrmkit_eval_arc(tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    pair = lambda h, w: {"input": rng.integers(0, 10, (h, w)).tolist(), "output": rng.integers(0, 10, (w, h)).tolist()}  # noqa: E731
    for name, task in {"training/aaa": {"train": [pair(3, 4)], "test": [pair(2, 3)]},
                       "evaluation/eee": {"train": [pair(3, 3)], "test": [pair(4, 3), pair(2, 2)]}}.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / f"{name}.json").write_text(json.dumps(task))
    data = tmp_path / "arc"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_arc(str(data), [str(src)], num_aug=2, seed=0)
    meta = PuzzleDataModule(str(data)).metadata
    task = PuzzleTask(build_core("hrm", "tiny", max_seq_len=1024), vocab_size=meta.vocab_size, seq_len=900,
                      num_puzzle_identifiers=meta.num_puzzle_identifiers, halt_max_steps=2)
    path = _save(task, tmp_path / "arc.ckpt")
    result = puzzle_scaling(load(path, PuzzleTask), str(data), segments=[1, 2], batch_size=4, pass_ks=(1, 2))
    assert result["pass_ks"] == [1, 2]
    for depth in (1, 2):
        arc = evaluate_arc(str(path), str(data), segments=depth, batch_size=4, pass_ks=(1, 2), quiet=True)
        assert _row(result, depth)["pass_at_k"] == arc["pass_at_k"], depth


def test_text_depth_curve_scores_each_depth_with_the_text_scorer(tmp_path):
    torch.manual_seed(0)
    task = TextTask(build_core("hrm", "text-tiny"), vocab_size=50432, pad_id=50257)
    data = tmp_path / "m.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {a}+1?", "answer": str(a + 1)}) + "\n" for a in range(2)))
    path = save_task_checkpoint(task, tmp_path / "text.ckpt")
    report = evaluate_scaling(str(path), str(data), out_dir=str(tmp_path / "out"), cycles="1,3", kind="math",
                              tokenizer="gpt2", max_new_tokens=3, quiet=True)
    result = report["checkpoints"][0]
    assert result["kind"] == "text" and result["depth_attr"] == "H_cycles" and result["trained_depth"] == 2
    assert [r["cycles"] for r in result["rows"]] == [1, 3]
    for row in result["rows"]:
        model = load(path, TextTask)
        model.core.H_cycles = row["cycles"]
        assert row["accuracy"] == evaluate_text(model, str(data), "math", "gpt2", max_new_tokens=3)["accuracy"]
        assert row["flops"] == row["tokens"] * core_forward_flops_per_token(model.core) > 0
        assert row["module_calls"] == row["core_passes"] * len(model.core.schedule())
    one, three = result["rows"]
    assert three["flops"] / three["tokens"] > one["flops"] / one["tokens"], "a deeper pass costs more per token"
    assert "| 1 |" in (tmp_path / "out/scaling.md").read_text()
    assert (tmp_path / "out/accuracy_vs_depth.png").is_file()
    with pytest.raises(ValueError, match="fixed"):
        depth_attribute(build_core("transformer", "tiny"))

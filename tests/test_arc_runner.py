"""ARC evaluation runner end to end on CPU: build a tiny ARC dataset, train one step through the E > 1 loader, save
a checkpoint, evaluate it with voting, and prove the row collection scores a perfect oracle at pass@1 = 1."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from hrmkit.cores import build_core
from hrmkit.data import PuzzleDataModule
from hrmkit.data.puzzles.arc import build_arc, read_test_puzzles
from hrmkit.eval.arc import ArcVoter
from hrmkit.eval.arc_runner import collect_votes, evaluate_arc
from hrmkit.tasks.puzzle import PuzzleTask

TEST_EXAMPLES = 4 * 3  # (1 + num_aug) versions x 3 held-out test pairs


def _pair(rng: np.random.Generator, shape_in: tuple[int, int], shape_out: tuple[int, int]) -> dict:
    return {"input": rng.integers(0, 10, size=shape_in).tolist(),
            "output": rng.integers(0, 10, size=shape_out).tolist()}


@pytest.fixture(scope="module")
def arc_data(tmp_path_factory) -> Path:
    """One training task and two evaluation tasks (2 + 1 held-out test pairs), 1 + 3 versions each."""
    src = tmp_path_factory.mktemp("arc-src")
    rng = np.random.default_rng(7)
    tasks = {"training/aaa": {"train": [_pair(rng, (3, 4), (5, 2)), _pair(rng, (2, 2), (3, 3))],
                              "test": [_pair(rng, (4, 4), (1, 3))]},
             "evaluation/eee": {"train": [_pair(rng, (3, 3), (3, 3)), _pair(rng, (2, 5), (5, 2))],
                                "test": [_pair(rng, (4, 3), (3, 4)), _pair(rng, (2, 2), (4, 4))]},
             "evaluation/fff": {"train": [_pair(rng, (5, 5), (2, 2))], "test": [_pair(rng, (3, 3), (1, 1))]}}
    for name, task in tasks.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / f"{name}.json").write_text(json.dumps(task))
    out = tmp_path_factory.mktemp("arc") / "data"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_arc(str(out), [str(src)], num_aug=3, seed=0)
    return out


@pytest.fixture(scope="module")
def checkpoint(arc_data, tmp_path_factory) -> Path:
    """A PuzzleTask (tiny HRM core) after one training step on the E > 1 stream, saved by the Trainer."""
    root = tmp_path_factory.mktemp("run")
    dm = PuzzleDataModule(str(arc_data), batch_size=4, eval_batch_size=8)
    meta = dm.metadata
    core = build_core("hrm", "tiny", max_seq_len=1024)
    task = PuzzleTask(core, vocab_size=meta.vocab_size, seq_len=900, num_puzzle_identifiers=meta.num_puzzle_identifiers,
                      halt_max_steps=2)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task, datamodule=dm)
    assert trainer.global_step == 1 and task.carry is not None and task.carry.halted.shape == (4,)
    path = root / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_evaluate_arc_end_to_end(arc_data, checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    result = evaluate_arc(str(checkpoint), str(arc_data), out_dir=str(out), batch_size=8, pass_ks=(1, 2, 10))
    assert "%" in capsys.readouterr().out  # the pass@K table
    assert (result["num_votes"], result["num_tasks"], result["num_test_inputs"]) == (TEST_EXAMPLES, 2, 3)
    assert result["segments"] == 2 and result["pooled"] is False and result["checkpoints"] == [str(checkpoint)]
    for scoring in ("task", "fraction"):
        scores = result["pass_at_k"][scoring]
        assert list(scores) == ["pass@1", "pass@2", "pass@10"] and all(0.0 <= v <= 1.0 for v in scores.values())
        assert scores["pass@1"] <= scores["pass@2"] <= scores["pass@10"]
    assert result["per_checkpoint"] == {checkpoint.name: result["pass_at_k"]}

    submission = json.loads((out / "submission.json").read_text())
    assert result["submission"] == str(out / "submission.json")
    assert sorted(submission) == ["eee", "fff"] and [len(submission[t]) for t in ("eee", "fff")] == [2, 1]
    for entries in submission.values():
        for entry in entries:
            assert sorted(entry) == ["attempt_1", "attempt_2"]
            for grid in entry.values():
                assert grid and all(isinstance(row, list) and all(0 <= c <= 9 for c in row) for row in grid)
    assert json.loads((out / "metrics.json").read_text()) == result
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "submission.json"]  # no temporary files left

    # Two checkpoints pooled (the same weights twice: same ranking, twice the votes), one segment, nothing written.
    second = tmp_path / "again.ckpt"
    shutil.copy(checkpoint, second)
    pooled = evaluate_arc([str(checkpoint), str(second)], str(arc_data), segments=1, batch_size=5, pooled=True,
                          pass_ks=(1, 2, 10), quiet=True)
    assert pooled["num_votes"] == 2 * TEST_EXAMPLES and pooled["segments"] == 1 and pooled["submission"] is None
    assert list(pooled["per_checkpoint"]) == ["model.ckpt", "again.ckpt"]
    assert pooled["per_checkpoint"]["model.ckpt"] == pooled["per_checkpoint"]["again.ckpt"] == pooled["pass_at_k"]


def test_oracle_predictions_through_the_row_collection_score_one(arc_data):
    """The voter fed the true labels of every augmented version (same loader, same collection code) solves all."""
    dm = PuzzleDataModule(str(arc_data), batch_size=4, eval_batch_size=5)
    voter = ArcVoter.from_dataset(arc_data, pooled=False, pass_ks=(1, 2))

    def oracle(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["labels"].clamp_min(0), torch.full((len(batch["inputs"]),), 3.0)  # -100 (ignored) → PAD

    assert collect_votes(voter, dm.test_dataloader(), oracle) == TEST_EXAMPLES
    for scoring in ("task", "fraction"):
        assert voter.pass_at_k(scoring) == {1: 1.0, 2: 1.0}
    truth = read_test_puzzles(arc_data)
    submission = voter.submission()
    for task, entry in truth.items():
        assert [e["attempt_1"] for e in submission[task]] == [pair["output"] for pair in entry["test"]]
    # every augmented version voted for the one true answer
    assert [votes for _, votes, _ in voter.ranked("eee", 0)] == [4]


def test_evaluate_arc_errors(arc_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        evaluate_arc(str(tmp_path / "missing.ckpt"), str(arc_data), quiet=True)
    with pytest.raises(ValueError, match="at least one checkpoint"):
        evaluate_arc([], str(arc_data), quiet=True)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_arc("x.ckpt", str(arc_data), batch_size=0, quiet=True)

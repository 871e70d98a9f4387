"""End to end: ``hrmkit fit`` on a tiny recipe writes a checkpoint and bp_steps / per-call RMS logs, then resumes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

from hrmkit.cli import main
from hrmkit.data.puzzles.sudoku import build_sudoku

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "tests/recipes/sudoku-hrm.yaml"


@pytest.fixture(scope="module")
def sudoku_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli-fit") / "sudoku"
    build_sudoku(str(out), train_size=8, test_size=4, levels=["easy"], num_aug=2, seed=0)
    return out


def fit_args(data: Path, run: Path, max_steps: int) -> list[str]:
    """The tiny Sudoku HRM recipe with deep-credit warmup, MagicNorm health, a CSV logger and a fixed checkpoint dir."""
    return ["fit", "-c", str(RECIPE), "--data.init_args.data_dir", str(data),
            "--trainer.max_steps", str(max_steps), "--trainer.log_every_n_steps", "1",
            "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(run),
            # the tiny HRM core makes 6 module calls; bp_steps ramps 2 -> 3 over a fixed 8-step horizon
            "--trainer.callbacks+=hrmkit.callbacks.DeepCreditWarmup", "--trainer.callbacks.min_steps", "2",
            "--trainer.callbacks.max_steps", "3", "--trainer.callbacks.total_steps", "8",
            "--trainer.callbacks+=hrmkit.callbacks.MagicNormHealth", "--trainer.callbacks.every_n_steps", "1",
            "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath", str(run / "checkpoints"),
            "--trainer.callbacks.save_last", "true",
            "--trainer.logger=CSVLogger", "--trainer.logger.save_dir", str(run / "logs")]


def metrics(run: Path, version: int) -> list[dict[str, str]]:
    with open(run / f"logs/lightning_logs/version_{version}/metrics.csv") as f:
        return list(csv.DictReader(f))


def test_fit_logs_checkpoints_and_resumes(sudoku_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert main(fit_args(sudoku_dir, run, max_steps=4)) is None

    last = run / "checkpoints/last.ckpt"
    assert last.is_file()
    first = torch.load(last, map_location="cpu", weights_only=False)
    assert first["global_step"] == 4
    assert first["hyper_parameters"]["vocab_size"] == 11  # linked from the dataset, not written in the recipe

    rows = metrics(run, 0)
    columns = set(rows[0])
    assert "train/bp_steps" in columns
    assert any(c.startswith("magicnorm/rms/") for c in columns), sorted(columns)
    bp = {float(r["train/bp_steps"]) for r in rows if r["train/bp_steps"]}
    assert bp and bp <= {2.0, 3.0}

    assert main(fit_args(sudoku_dir, run, max_steps=6) + ["--ckpt_path", "last"]) is None
    second = torch.load(last, map_location="cpu", weights_only=False)
    assert second["global_step"] == 6 > first["global_step"]
    # The resumed run logs into the same version (its checkpoints live elsewhere: the checkpoint records it); the
    # first segment's metrics.csv is kept as metrics.part-0.csv, and plot draws one curve over both.
    version = run / "logs/lightning_logs/version_0"
    assert not (run / "logs/lightning_logs/version_1").exists()
    steps = [int(r["step"]) for r in metrics(run, 0) if r.get("train/loss")]
    assert steps and min(steps) >= 4, steps  # the resumed run continued from step 4, it did not start over
    with open(version / "metrics.part-0.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")] == [0, 1, 2, 3]
    from hrmkit.pictures.charts import read_metrics, stitch_runs

    [(first_file, series)] = stitch_runs([version / "metrics.part-0.csv", version / "metrics.csv"])
    assert [x for x, _ in series["train/loss"]] == [0, 1, 2, 3, 4, 5]
    assert read_metrics(version / "metrics.csv")["train/loss"][0][0] == 4

    # validate --ckpt_path logs beside that checkpoint's run (not into the recipe's default_root_dir), and a
    # command-line eval_segments wins over the value stored in the checkpoint
    assert main(["validate", "-c", str(RECIPE), "--data.init_args.data_dir", str(sudoku_dir),
                 "--trainer.enable_model_summary", "false", "--ckpt_path", str(last),
                 "--model.init_args.eval_segments", "5"]) is None
    assert not (tmp_path / "runs").exists()
    evaluated = run / "logs/lightning_logs/version_1"
    assert yaml.safe_load((evaluated / "hparams.yaml").read_text())["eval_segments"] == 5
    with open(evaluated / "metrics.csv") as f:
        row = next(r for r in csv.DictReader(f) if r.get("val/segments_halted"))
    assert 1.0 <= float(row["val/segments_halted"]) <= 5.0


def test_text_task_takes_its_vocabulary_from_the_datamodule():
    from types import SimpleNamespace

    from hrmkit.cores import build_core
    from hrmkit.tasks import TextTask

    task = TextTask(build_core("hrm", "text-tiny"), warmup_steps=1)
    assert task.embed_tokens is None and task.lm_head is None
    task._trainer = SimpleNamespace(datamodule=SimpleNamespace(vocab_size=40))
    task.configure_model()
    assert task.embed_tokens.num_embeddings == 40 and task.hparams.vocab_size == 40
    reloaded = TextTask(**dict(task.hparams))  # what load_from_checkpoint does with the saved hyper-parameters
    assert reloaded.embed_tokens.num_embeddings == 40
    task._trainer = SimpleNamespace(datamodule=SimpleNamespace(vocab_size=41))
    with pytest.raises(ValueError, match="vocab_size=40"):
        task.configure_model()
    bare = TextTask(build_core("hrm", "text-tiny"))
    bare._trainer = SimpleNamespace(datamodule=None)
    with pytest.raises(ValueError, match="without vocab_size"):
        bare.configure_model()

"""A checkpoint written before the package moves of issue #15 (commit 394e8be: the tiny Sudoku HRM config, one step)
still loads, validates and initialises a new run with today's code: class paths in checkpoints and YAML keep working."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import hrmkit
from hrmkit.cli import main
from hrmkit.data.puzzles.sudoku import build_sudoku
from hrmkit.tasks import PuzzleTask

ROOT = Path(__file__).resolve().parents[1]
OLD = ROOT / "tests/data/sudoku-hrm-step1-394e8be.ckpt"
RECIPE = ROOT / "tests/recipes/sudoku-hrm.yaml"


@pytest.fixture(scope="module")
def sudoku_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("old-ckpt") / "sudoku"
    build_sudoku(str(out), train_size=8, test_size=4, levels=["easy"], num_aug=1, seed=0)  # what it was trained on
    return out


def test_the_old_checkpoint_loads_with_its_weights():
    task = hrmkit.load(OLD)
    assert isinstance(task, PuzzleTask)
    saved = torch.load(OLD, map_location="cpu", weights_only=True)["state_dict"]
    loaded = task.state_dict()
    assert saved.keys() == loaded.keys()
    for name, value in saved.items():
        assert torch.equal(loaded[name], value), name


def test_the_old_checkpoint_validates_and_starts_a_new_run(sudoku_dir, tmp_path, capsys):
    """``validate --ckpt_path`` and ``init_from`` (a resume needs the dataset at its recorded path: LitData's state)."""
    common = ["-c", str(RECIPE), "--data.init_args.data_dir", str(sudoku_dir), "--trainer.default_root_dir",
              str(tmp_path), "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    main(["validate", *common, "--ckpt_path", str(OLD)])
    assert "val/exact_acc" in capsys.readouterr().out
    main(["fit", *common, "--trainer.max_steps", "1", "--model.init_args.init_from", str(OLD),
          "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath", str(tmp_path / "ckpt"),
          "--trainer.callbacks.every_n_train_steps", "1"])
    (new,) = (tmp_path / "ckpt").glob("*step=1.ckpt")
    assert torch.load(new, map_location="cpu", weights_only=True)["global_step"] == 1

"""Corruption: torn/truncated checkpoints, interrupted writes, truncated data chunks, wrong metadata and unsafe pickles
give the project's clear error, the previous checkpoint is used, and nothing already saved is lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import torch

from hrmkit import checkpointing
from hrmkit.checkpointing import (
    AtomicCheckpointIO,
    atomic_torch_save,
    check_checkpoint,
    latest_valid_checkpoint,
    load_checkpoint_file,
)
from hrmkit.cli import main
from hrmkit.data import PuzzleDataModule
from hrmkit.data.puzzles.sudoku import build_sudoku
from hrmkit.errors import CheckpointError, HrmkitInputError

ROOT = Path(__file__).resolve().parents[1]


def fit_args(data: Path, run: Path, max_steps: int) -> list[str]:
    return ["fit", "-c", str(ROOT / "tests/recipes/sudoku-hrm.yaml"), "--data.init_args.data_dir", str(data),
            "--trainer.max_steps", str(max_steps), "--trainer.default_root_dir", str(run),
            "--trainer.logger", "false", "--trainer.enable_model_summary", "false",
            "--trainer.num_sanity_val_steps", "0", "--trainer.limit_val_batches", "0",
            "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath", str(run / "checkpoints"),
            "--trainer.callbacks.every_n_train_steps", "1", "--trainer.callbacks.save_top_k", "-1",
            "--trainer.callbacks.save_last", "true", "--trainer.callbacks.filename", "step{step}",
            "--trainer.callbacks.auto_insert_metric_name", "false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny Sudoku dataset and a 3-step run with a checkpoint after every step."""
    root = tmp_path_factory.mktemp("corruption")
    data = root / "sudoku"
    build_sudoku(str(data), train_size=8, test_size=4, levels=["easy"], num_aug=2, seed=0)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(fit_args(data, root / "run", 3)) is None
    finally:
        os.chdir(cwd)
    return data, root / "run"


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_checkpoint_is_detected_and_the_previous_one_resumes(trained, tmp_path, monkeypatch):
    data, original = trained
    run = tmp_path / "run"
    shutil.copytree(original, run)
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("*.ckpt")) == ["last.ckpt", "step1.ckpt", "step2.ckpt", "step3.ckpt"]
    kept = {name: (ckpts / name).read_bytes() for name in ("step1.ckpt", "step2.ckpt")}
    for name in ("last.ckpt", "step3.ckpt"):
        truncate(ckpts / name)
        os.utime(ckpts / name)  # the torn files are the newest
        with pytest.raises(CheckpointError, match=f"{name}: checkpoint is truncated or corrupt"):
            check_checkpoint(ckpts / name)
        with pytest.raises(CheckpointError, match=name):
            AtomicCheckpointIO().load_checkpoint(ckpts / name)
    with pytest.warns(UserWarning, match="skipping an unusable checkpoint"):
        assert latest_valid_checkpoint([ckpts]) == (ckpts / "step2.ckpt").resolve()

    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(fit_args(data, run, 4) + ["--ckpt_path", "last"]) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the torn files are still there (Lightning never overwrites a file it
        newest = latest_valid_checkpoint([ckpts])  # did not write: the resumed run saved *-v1.ckpt beside them)
    assert load_checkpoint_file(newest)["global_step"] == 4
    for name, content in kept.items():
        assert (ckpts / name).read_bytes() == content, f"{name} changed"


def test_every_checkpoint_torn_is_a_clear_error_not_a_fresh_start(trained, tmp_path, capsys):
    data, original = trained
    run = tmp_path / "run"
    shutil.copytree(original, run)
    for path in (run / "checkpoints").glob("*.ckpt"):
        truncate(path, 0.1)
    with pytest.raises(SystemExit) as exit_info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(fit_args(data, run, 4) + ["--ckpt_path", "last"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "CheckpointError" in err and "is torn or corrupt" in err, err


def test_a_write_interrupted_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"global_step": 1, "w": torch.ones(3)}, target)
    before = target.read_bytes()

    def torn_save(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpointing.torch, "save", torn_save)
    with pytest.raises(OSError, match="No space left"):
        atomic_torch_save({"global_step": 2, "w": torch.zeros(3)}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind
    assert load_checkpoint_file(target)["global_step"] == 1


class _Payload:
    """Unpickling this would create a file: a stand-in for code execution from a checkpoint."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_checkpoint_holding_code_is_refused(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hook": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_checkpoint_file(path)
    assert not marker.exists()


def test_newest_valid_checkpoint_wins(tmp_path):
    for step in (1, 2, 3):
        atomic_torch_save({"global_step": step}, tmp_path / f"s{step}.ckpt")
        os.utime(tmp_path / f"s{step}.ckpt", (step, step))
    (tmp_path / ".s4.ckpt.tmp-1").write_bytes(b"partial")  # a killed writer's temp file is never a candidate
    assert latest_valid_checkpoint([tmp_path]) == (tmp_path / "s3.ckpt").resolve()
    assert latest_valid_checkpoint([tmp_path / "missing"]) is None


def test_truncated_data_chunk_is_named(trained, tmp_path):
    data = tmp_path / "sudoku"
    shutil.copytree(trained[0], data)
    chunk = sorted((data / "train").glob("*.bin"))[0]
    truncate(chunk)
    with pytest.raises(HrmkitInputError, match=f"{chunk.name}.*truncated"):
        PuzzleDataModule(str(data), batch_size=4).setup("fit")


def test_wrong_vocab_size_in_metadata_is_a_clear_error_and_checkpoints_survive(trained, tmp_path, monkeypatch,
                                                                                capsys):
    data, original = trained
    edited = tmp_path / "sudoku"
    shutil.copytree(data, edited)
    meta = json.loads((edited / "metadata.json").read_text())
    meta["vocab_size"] = 9  # Sudoku tokens go up to 10
    (edited / "metadata.json").write_text(json.dumps(meta))
    run = tmp_path / "run"
    shutil.copytree(original, run)
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").glob("*.ckpt")}
    dm = PuzzleDataModule(str(edited), batch_size=4)
    dm.setup("fit")
    with pytest.raises(HrmkitInputError, match=r"metadata.json: field 'vocab_size' is 9 .* token id 10"):
        next(iter(dm.train_dataloader()))

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(fit_args(edited, tmp_path / "fresh", 4))
    assert exit_info.value.code == 2
    assert "field 'vocab_size' is 9" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").glob("*.ckpt")} == before


def test_torn_hf_weights_and_config_are_input_errors(tmp_path):
    from hrmkit.interop.hf_hrm_text import _read_config, _read_tensors

    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(HrmkitInputError, match="model.safetensors: not a readable safetensors file"):
        _read_tensors(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(HrmkitInputError, match="config.json: expected a JSON object"):
        _read_config(tmp_path)


def test_a_killed_writers_temp_file_is_cleaned_up_by_the_next_save(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / f".last.ckpt.tmp-{gone.pid}"  # its writer was killed mid-write
    busy = tmp_path / f".last.ckpt.tmp-{os.getppid()}"  # another writer, still alive
    stale.write_bytes(b"PK partial")
    busy.write_bytes(b"PK partial")
    atomic_torch_save({"global_step": 1}, tmp_path / "last.ckpt")
    assert not stale.exists() and busy.exists()
    assert load_checkpoint_file(tmp_path / "last.ckpt")["global_step"] == 1


def test_validate_with_a_torn_checkpoint_is_a_clear_error(trained, tmp_path, monkeypatch, capsys):
    data, original = trained
    torn = tmp_path / "torn.ckpt"
    torn.write_bytes((original / "checkpoints/step1.ckpt").read_bytes()[:1000])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(["validate", "-c", str(ROOT / "tests/recipes/sudoku-hrm.yaml"), "--data.init_args.data_dir", str(data),
              "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", str(torn)])
    assert exit_info.value.code == 2
    assert "torn.ckpt: checkpoint is truncated or corrupt" in capsys.readouterr().err

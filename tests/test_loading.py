"""``hrmkit.loading.load``: the one reader of trained models (task class from the checkpoint, HF directories)."""

from __future__ import annotations

import pytest
import torch

from hrmkit.cores import build_core
from hrmkit.errors import HrmkitInputError
from hrmkit.interop.hf_hrm_text import export_hf
from hrmkit.loading import load
from hrmkit.tasks import PuzzleTask, TextTask
from hrmkit.transfer import save_task_checkpoint

CORE = dict(hidden_size=32, num_heads=2, expansion=2.0, H_cycles=2, L_cycles=2, H_layers=1, L_layers=1)


def _text() -> TextTask:
    core = build_core("hrm", "text-tiny", **{**CORE, "max_seq_len": 64})
    return TextTask(core, vocab_size=64, warmup_steps=0)


@pytest.fixture
def checkpoints(tmp_path):
    torch.manual_seed(0)
    puzzle = PuzzleTask(build_core("hrm", max_seq_len=82, **CORE), vocab_size=11, seq_len=81, num_puzzle_identifiers=1)
    text = _text()
    return (save_task_checkpoint(puzzle, tmp_path / "puzzle.ckpt"), puzzle,
            save_task_checkpoint(text, tmp_path / "text.ckpt"), text)


def test_the_task_class_comes_from_the_checkpoint(checkpoints):
    puzzle_path, puzzle, text_path, text = checkpoints
    for path, original in ((puzzle_path, puzzle), (text_path, text)):
        loaded = load(path)
        assert type(loaded) is type(original)
        for key, value in original.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key


def test_a_command_that_needs_one_task_refuses_another(checkpoints):
    puzzle_path, _, text_path, _ = checkpoints
    assert isinstance(load(text_path, TextTask), TextTask)
    with pytest.raises(HrmkitInputError, match=r"puzzle\.ckpt: holds a PuzzleTask, but this command needs a TextTask"):
        load(puzzle_path, TextTask)
    with pytest.raises(FileNotFoundError, match="nothing.ckpt does not exist"):
        load(puzzle_path.parent / "nothing.ckpt")


def test_an_hf_directory_loads_with_its_layout_and_dtype_recorded(tmp_path):
    task = _text()
    out = export_hf(task, tmp_path / "hf", layout="transformers", dtype="float32")
    loaded = load(out)
    assert isinstance(loaded, TextTask)
    assert (loaded.hf_layout, loaded.hf_dtype) == ("transformers", "float32")
    for key, value in task.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

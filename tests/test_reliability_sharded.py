"""Sharded (FSDP2, DCP directory) checkpoints inside guarantees #1-#4 of docs/reliability.md, on 2 gloo processes.

One chain of ``hrmkit fit`` runs of the tiny FSDP2 text recipe (recipes/tiny/text-hrm-L-8xH100.yaml, 2 processes,
a checkpoint every step) shares its processes between the assertions, beside an uninterrupted reference run:

1. sharded checkpoints with ``save_last``, SIGKILLed in the middle of a step: every checkpoint on disk is complete;
2. the newest (``last.ckpt``) gets a truncated shard and the one before it loses ``.metadata``; ``--ckpt_path last``
   under other checkpoint settings (no ``save_last``, ``save_distributed_checkpoint: false``, no periodic saves)
   skips both with a warning naming the file, resumes from the newest intact one, and gets SIGTERM on rank 1 only:
   both ranks stop after that step, the on-exception save writes a single file, exit 143;
3. ``--ckpt_path last`` resumes from that file to the end: weights, optimizer, schedulers and EMA are bitwise those
   of the uninterrupted run (which saved single files on 2 processes throughout);
   an intact sharded checkpoint read on one process (``init_from``'s ``read_source``, ``hrmkit.load``) holds the
   uninterrupted run's tensors at that step;
4. an explicit ``--ckpt_path`` to the torn checkpoint ends in one ``hrmkit: error:`` naming the shard, exit 2, no
   traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from hrmkit.checkpointing import check_checkpoint, load_checkpoint_file
from hrmkit.data.text import build_text
from hrmkit.data.text.tokenizer import train_bpe
from hrmkit.errors import CheckpointError
from hrmkit.loading import load
from hrmkit.sharded_checkpoints import COMPLETE_MARKER
from hrmkit.transfer import read_source

sys.path.insert(0, str(Path(__file__).parent))
from test_reliability_resume import assert_equal  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TWIN = ROOT / "recipes/tiny/text-hrm-L-8xH100.yaml"
RECIPE = Path(tempfile.mkdtemp(prefix="hrmkit-sharded-")) / "text-hrm-L-8xH100.yaml"


def _recipe_with_the_test_checkpoints() -> None:
    """The generated CPU run of the FSDP2 recipe, with its own ModelCheckpoint left out: each command below adds
    one with the checkpoint settings under test (two would share a state key)."""
    config = yaml.safe_load(TWIN.read_text())
    config["trainer"]["callbacks"] = [cb for cb in config["trainer"].get("callbacks") or []
                                      if not str(cb.get("class_path", "")).endswith("ModelCheckpoint")]
    RECIPE.write_text(yaml.safe_dump(config, sort_keys=False))


_recipe_with_the_test_checkpoints()
MAX_STEPS = 6
FIRST_KILL, SECOND_KILL = 3, 4  # 0-based global steps, SIGKILLed after their backward


@pytest.fixture(scope="module")
def text_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sharded-data")
    records = [{"instruction": f"What is {a} plus {b}?", "response": f"{a} + {b} = {a + b}.", "condition": "cot"}
               for a in range(12) for b in range(12)]  # enough for one multipack step of 2 ranks
    (root / "tiny.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    train_bpe([root / "tiny.jsonl"], vocab_size=300).save(root / "tokenizer.json")
    build_text(str(root / "text"), [str(root / "tiny.jsonl")], tokenizer=str(root / "tokenizer.json"),
               val_fraction=0.2, max_len=256)
    return root / "text"


def fit_command(data: Path, run: Path, *, sharded: bool, save_last: bool = False, every: int = 1, kill_step: int = -1,
                signum: int = signal.SIGKILL, rank: int = -1) -> list[str]:
    """The tiny FSDP2 recipe on 2 gloo processes, a checkpoint every ``every`` steps (all kept), the kill switch
    armed (``signum`` at ``kill_step``, sent by ``rank`` to itself, or by every rank)."""
    return [sys.executable, "-m", "hrmkit.cli", "fit", "-c", str(RECIPE), "--data.init_args.data_dir", str(data),
            "--model.init_args.vocab_size", "null", "--model.init_args.pad_id", "0",
            "--trainer.devices", "2", "--trainer.max_steps", str(MAX_STEPS), "--trainer.default_root_dir", str(run),
            "--trainer.deterministic", "true", "--trainer.logger", "false", "--trainer.enable_model_summary", "false",
            "--trainer.num_sanity_val_steps", "0", "--trainer.limit_val_batches", "0",
            "--trainer.strategy.init_args.save_distributed_checkpoint", str(sharded).lower(),
            "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath", str(run / "checkpoints"),
            "--trainer.callbacks.every_n_train_steps", str(every), "--trainer.callbacks.save_top_k", "-1",
            "--trainer.callbacks.save_last", str(save_last).lower(),
            "--trainer.callbacks+=_kill_switch.KillAtStep", "--trainer.callbacks.step", str(kill_step),
            "--trainer.callbacks.signum", str(int(signum)), "--trainer.callbacks.rank", str(rank)]


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), PYTHONHASHSEED="0",
               LITDATA_DISABLE_VERSION_CHECK="1", OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, expected: int) -> str:
    try:
        out, _ = proc.communicate(timeout=300)
    finally:  # rank 1 is rank 0's child: never leave it behind (it also kills itself at the same step)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == expected, f"exit {proc.returncode}, expected {expected}:\n{out[-4000:]}"
    return out


def step_checkpoint(folder: Path, step: int) -> Path:
    (found,) = folder.glob(f"*-step={step}.ckpt")
    return found


def test_sharded_checkpoints_resume_exactly_and_torn_ones_are_skipped(text_data, tmp_path):
    reference = start(fit_command(text_data, tmp_path / "reference", sharded=False), tmp_path)
    run = tmp_path / "killed"
    ckpts = run / "checkpoints"
    try:
        # 1. sharded saves with save_last, killed mid-step: the directories on disk are complete checkpoints
        finish(start(fit_command(text_data, run, sharded=True, save_last=True, kill_step=FIRST_KILL), tmp_path),
               -signal.SIGKILL)
        saved = {step: step_checkpoint(ckpts, step) for step in range(1, FIRST_KILL + 1)}
        for path in [*saved.values(), ckpts / "last.ckpt"]:
            assert path.is_dir() and (path / COMPLETE_MARKER).is_file(), path
            check_checkpoint(path)
        assert {p.name for p in saved[1].glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}
        assert not [p for p in ckpts.iterdir() if p.name.startswith(".")], "a temporary directory was left behind"

        # 2. tear the two newest; the intact one before them is where the resume must start
        shard = ckpts / "last.ckpt" / "__1_0.distcp"
        os.truncate(shard, shard.stat().st_size // 2)
        (saved[FIRST_KILL] / ".metadata").unlink()
        torn = tmp_path / "torn.ckpt"
        shutil.copytree(ckpts / "last.ckpt", torn)
        explicit = start(fit_command(text_data, tmp_path / "explicit", sharded=True) + ["--ckpt_path", str(torn)],
                         tmp_path)
        out = finish(start(fit_command(text_data, run, sharded=False, every=100, kill_step=SECOND_KILL,
                                       signum=signal.SIGTERM, rank=1) + ["--ckpt_path", "last"], tmp_path), 143)
        assert f"skipping an unusable checkpoint: {shard}" in out, out[-3000:]
        assert f"{saved[FIRST_KILL] / '.metadata'}: missing" in out, out[-3000:]
        assert "no last checkpoint" not in out
        # SIGTERM on rank 1 alone: both ranks finished that step and saved together (periodic saves are off here)
        assert out.count("hrmkit: stopped by SIGTERM/SIGUSR1 after saving a checkpoint") == 2, out[-3000:]
        assert load_checkpoint_file(step_checkpoint(ckpts, SECOND_KILL + 1))["global_step"] == SECOND_KILL + 1

        # 3. from that single file to the end: bitwise the uninterrupted run
        finish(start(fit_command(text_data, run, sharded=False) + ["--ckpt_path", "last"], tmp_path), 0)
        finish(reference, 0)
        expected = load_checkpoint_file(step_checkpoint(tmp_path / "reference/checkpoints", MAX_STEPS))
        got = load_checkpoint_file(step_checkpoint(ckpts, MAX_STEPS))
        assert expected["global_step"] == got["global_step"] == MAX_STEPS
        assert "ema" in expected and expected["state_dict"] and expected["optimizer_states"][0]["state"]
        for key in ("state_dict", "optimizer_states", "lr_schedulers", "ema"):
            assert_equal(expected[key], got[key], key)

        # a sharded checkpoint read on one process (init_from, hrmkit.load): the reference's tensors at that step
        at_two = load_checkpoint_file(step_checkpoint(tmp_path / "reference/checkpoints", 2))["state_dict"]
        source = read_source(saved[2])
        assert source.task == "TextTask" and source.core_config == load_checkpoint_file(
            step_checkpoint(tmp_path / "reference/checkpoints", 2))["hyper_parameters"]["core"]
        assert_equal(at_two, source.state, "read_source")
        assert_equal(at_two, load(saved[2]).state_dict(), "hrmkit.load")

        # 4. the torn checkpoint named explicitly: one clear error on every rank, nothing else
        out = finish(explicit, 2)
        assert f"hrmkit: error: CheckpointError: {torn / '__1_0.distcp'}: shard is" in out, out[-3000:]
        assert "Traceback" not in out, out[-3000:]
    finally:
        if reference.poll() is None:
            os.killpg(reference.pid, signal.SIGKILL)
            reference.wait()


def _sharded(path: Path, step: int) -> Path:
    """A real one-process DCP checkpoint (no process group needed) with Lightning's ``meta.pt`` beside it."""
    import torch
    import torch.distributed.checkpoint as dcp

    dcp.save({"state_dict": {"w": torch.arange(25.0)}}, checkpoint_id=path)
    torch.save({"global_step": step}, path / "meta.pt")
    return path


def test_sharded_checkpoint_check_names_what_is_wrong(tmp_path):
    """The completeness check and the candidate list on hand-made directories (no processes)."""
    from hrmkit.checkpointing import candidate_checkpoints, latest_valid_checkpoint
    from hrmkit.sharded_checkpoints import write_completion_marker

    old = _sharded(tmp_path / "epoch=0-step=1.ckpt", 1)
    write_completion_marker(old)
    new = _sharded(tmp_path / "epoch=0-step=2.ckpt", 2)
    _sharded(tmp_path / ".epoch=0-step=3.ckpt.tmp-1-ab", 3)  # a save in progress: never a candidate
    assert candidate_checkpoints([tmp_path]) == [new.resolve(), old.resolve()]
    with pytest.raises(CheckpointError, match="no completion marker"):
        check_checkpoint(new)
    with pytest.warns(UserWarning, match="no completion marker"):
        assert latest_valid_checkpoint([tmp_path]) == old.resolve()
    write_completion_marker(new)
    assert latest_valid_checkpoint([tmp_path]) == new.resolve()
    shard = new / "__0_0.distcp"
    size = shard.stat().st_size
    os.truncate(shard, 40)
    with pytest.raises(CheckpointError, match=rf"__0_0.distcp: shard is 40 bytes, the checkpoint's marker says {size}"):
        check_checkpoint(new)
    (old / "meta.pt").unlink()
    with pytest.raises(CheckpointError, match=r"meta.pt: missing from the sharded checkpoint"):
        check_checkpoint(old)
    bad = _sharded(tmp_path / "bad-index.ckpt", 5)
    (bad / ".metadata").write_bytes(b"garbage")
    write_completion_marker(bad)
    with pytest.raises(CheckpointError, match=r"\.metadata: unreadable sharded checkpoint index"):
        check_checkpoint(bad)
    with pytest.raises(CheckpointError, match=r"sharded \(DCP\) checkpoint directory"):
        _sharded(tmp_path / "fresh.ckpt", 4)
        write_completion_marker(tmp_path / "fresh.ckpt")
        load_checkpoint_file(tmp_path / "fresh.ckpt")


def test_a_finished_directory_replaces_the_old_one_whole(tmp_path):
    from hrmkit.sharded_checkpoints import replace_directory, temp_name

    target = tmp_path / "last.ckpt"
    for generation in range(2):
        tmp = temp_name(target, f"{os.getpid()}-{generation}")
        tmp.mkdir()
        (tmp / "gen").write_text(str(generation))
        replace_directory(tmp, target)
        assert (target / "gen").read_text() == str(generation)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


class _RunsCode:
    """Pickles to a call of ``os.system``: what a crafted checkpoint index would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_sharded_checkpoints_are_read_without_running_code(tmp_path):
    """DCP's own reader unpickles ``.metadata`` and non-tensor entries without restriction; hrmkit's does not."""
    import pickle

    import torch
    import torch.distributed.checkpoint as dcp

    from hrmkit.sharded_checkpoints import dcp_load, write_completion_marker

    ckpt = tmp_path / "epoch=0-step=1.ckpt"
    saved = {"w": torch.arange(6.0), "param_groups": [{"lr": 0.1, "betas": (0.9, 0.95), "params": ["w"]}]}
    dcp.save(saved, checkpoint_id=ckpt)  # no process group: one process
    torch.save({"global_step": 1}, ckpt / "meta.pt")
    write_completion_marker(ckpt)
    check_checkpoint(ckpt)
    loaded = {"w": torch.zeros(6), "param_groups": [{"lr": 0.0, "betas": (0.0, 0.0), "params": [""]}]}
    dcp_load(loaded, ckpt)
    assert torch.equal(loaded["w"], saved["w"]) and loaded["param_groups"] == saved["param_groups"]

    ran = tmp_path / "code-ran"
    (ckpt / ".metadata").write_bytes(pickle.dumps(_RunsCode(ran)))
    write_completion_marker(ckpt)  # sizes match: only the index's contents are wrong
    with pytest.raises(CheckpointError, match=r"\.metadata: refused to read the sharded checkpoint's index: "
                                              r"global posix.system is not allowed"):
        check_checkpoint(ckpt)
    with pytest.raises(BaseException, match="global posix.system is not allowed"):  # DCP wraps it (a BaseException)
        dcp_load(loaded, ckpt)
    assert not ran.exists()

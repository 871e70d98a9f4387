"""Crash and preemption: ``hrmkit fit`` subprocesses killed mid-step resume bit-exactly with ``--ckpt_path last``;
SIGTERM and SIGUSR1 exit 143 and leave a loadable checkpoint."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from hrmkit.checkpointing import load_checkpoint_file
from hrmkit.data.puzzles.sudoku import build_sudoku
from hrmkit.data.text import build_text
from hrmkit.data.text.tokenizer import train_bpe

ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS = 6
KILLS = 2  # SIGKILLs per run, at steps drawn from a seeded RNG


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reliability-data")
    build_sudoku(str(root / "sudoku"), train_size=8, test_size=4, levels=["easy"], num_aug=2, seed=0)
    records = [{"instruction": f"What is {a} plus {b}?", "response": f"{a} + {b} = {a + b}.", "condition": "cot"}
               for a in range(6) for b in range(6)]
    (root / "tiny.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    train_bpe([root / "tiny.jsonl"], vocab_size=300).save(root / "tokenizer.json")  # small vocab: small checkpoints
    build_text(str(root / "text"), [str(root / "tiny.jsonl")], tokenizer=str(root / "tokenizer.json"),
               val_fraction=0.2, max_len=256)
    return {"puzzle": root / "sudoku", "text": root / "text"}


TEXT_VOCAB = ["--model.init_args.vocab_size", "null", "--model.init_args.pad_id", "0"]  # from the dataset
RECIPES = {"puzzle": "tests/recipes/sudoku-hrm.yaml", "text": "tests/recipes/text-hrm-B.yaml"}


def fit_command(kind: str, data: Path, run: Path, kill_step: int = -1, signum: int = signal.SIGKILL,
                every_n_steps: int = 1) -> list[str]:
    """The tiny recipe (the puzzle one trains with ACT carry across steps) with a checkpoint every step,
    deterministic algorithms, and the test's kill switch armed at ``kill_step`` (-1: never)."""
    return [sys.executable, "-m", "hrmkit.cli", "fit", "-c", str(ROOT / RECIPES[kind]),
            "--data.init_args.data_dir", str(data), "--trainer.max_steps", str(MAX_STEPS),
            "--trainer.default_root_dir", str(run), "--trainer.deterministic", "true",
            "--trainer.logger", "false", "--trainer.enable_model_summary", "false",
            "--trainer.num_sanity_val_steps", "0", "--trainer.limit_val_batches", "0",
            "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath", str(run / "checkpoints"),
            "--trainer.callbacks.every_n_train_steps", str(every_n_steps), "--trainer.callbacks.save_last", "true",
            "--trainer.callbacks+=_kill_switch.KillAtStep", "--trainer.callbacks.step", str(kill_step),
            "--trainer.callbacks.signum", str(int(signum))] + TEXT_VOCAB * (kind == "text")


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), PYTHONHASHSEED="0",
               LITDATA_DISABLE_VERSION_CHECK="1", CUBLAS_WORKSPACE_CONFIG=":4096:8")
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, expected: int) -> str:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == expected, f"exit {proc.returncode}, expected {expected}:\n{out[-3000:]}"
    return out


def assert_equal(a: Any, b: Any, where: str) -> None:
    """Exact equality of nested checkpoint values (tensors bitwise)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b) if isinstance(b, dict) else b)
        for k in a:
            assert_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


@pytest.fixture(scope="module")
def uninterrupted(datasets, tmp_path_factory):
    """``reference(kind)``: the last checkpoint of an uninterrupted run, started on first request in the background
    (so it runs alongside a killed chain) and awaited by ``reference(kind, wait=True)``."""
    root = tmp_path_factory.mktemp("uninterrupted")
    procs: dict[str, subprocess.Popen] = {}

    def reference(kind: str, wait: bool = False) -> Path | None:
        if kind not in procs:
            procs[kind] = start(fit_command(kind, datasets[kind], root / kind), root)
        if not wait:
            return None
        if procs[kind].returncode is None:
            finish(procs[kind], 0)
        return root / kind / "checkpoints/last.ckpt"

    yield reference
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def assert_resumed_exactly(reference: dict[str, Any], resumed: dict[str, Any]) -> None:
    assert reference["global_step"] == resumed["global_step"] == MAX_STEPS
    for key in RESUMED_STATE:
        assert (key in reference) == (key in resumed), key
        if key in reference:
            assert_equal(reference[key], resumed[key], key)


RESUMED_STATE = ("state_dict", "optimizer_states", "lr_schedulers", "puzzle_emb_optimizer", "puzzle_emb_scheduler",
                 "act_carry", "act_rng", "ema")


@pytest.mark.parametrize("kind", ["puzzle", "text"])
def test_sigkilled_runs_resume_to_the_same_weights(kind, datasets, uninterrupted, tmp_path):
    steps = sorted(random.Random(f"kill-{kind}").sample(range(1, MAX_STEPS - 1), KILLS))
    uninterrupted(kind)
    run = tmp_path / "killed"
    for i, step in enumerate(steps):
        cmd = fit_command(kind, datasets[kind], run, kill_step=step)
        finish(start(cmd + (["--ckpt_path", "last"] if i else []), tmp_path), -signal.SIGKILL)
        saved = load_checkpoint_file(run / "checkpoints/last.ckpt")
        assert saved["global_step"] == step, f"killed during step {step} but last.ckpt is at {saved['global_step']}"
    finish(start(fit_command(kind, datasets[kind], run) + ["--ckpt_path", "last"], tmp_path), 0)

    reference = load_checkpoint_file(uninterrupted(kind, wait=True))
    assert_resumed_exactly(reference, load_checkpoint_file(run / "checkpoints/last.ckpt"))
    if kind == "puzzle":
        assert "act_carry" in reference and "act_rng" in reference
    else:
        assert "ema" in reference  # the text recipe's EMA: raw weights here, EMA weights in state_dict
        assert "DeepCreditWarmup" in reference["callbacks"], sorted(reference["callbacks"])
    assert "RNGState" in reference["callbacks"], sorted(reference["callbacks"])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_preemption_signal_exits_143_with_a_loadable_checkpoint(signum, datasets, uninterrupted, tmp_path):
    run = tmp_path / "run"
    # checkpoints every 100 steps: only the on-exception save can leave a file behind
    cmd = fit_command("puzzle", datasets["puzzle"], run, kill_step=2, signum=signum, every_n_steps=100)
    out = finish(start(cmd, tmp_path), 143)
    assert "stopped by SIGTERM" in out
    saved = load_checkpoint_file(run / "checkpoints/last.ckpt")
    assert saved["global_step"] == 3  # the signalled step finished, the loop stopped at the next batch
    assert "act_carry" in saved and saved["state_dict"]
    if signum == signal.SIGTERM:  # the same command resumes from it, exactly
        resume = fit_command("puzzle", datasets["puzzle"], run, every_n_steps=100) + ["--ckpt_path", "last"]
        finish(start(resume, tmp_path), 0)
        reference = load_checkpoint_file(uninterrupted("puzzle", wait=True))
        assert_resumed_exactly(reference, load_checkpoint_file(run / "checkpoints/last.ckpt"))


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    import random as pyrandom

    import numpy as np

    from hrmkit.callbacks import RNGState
    from hrmkit.checkpointing import atomic_torch_save

    torch.manual_seed(1)
    np.random.seed(2)
    pyrandom.seed(3)
    atomic_torch_save({"rng": RNGState().state_dict()}, tmp_path / "rng.ckpt")
    expected = torch.rand(3), np.random.rand(3), pyrandom.random()
    torch.manual_seed(9)
    np.random.seed(9)
    pyrandom.seed(9)
    restored = RNGState()
    restored.load_state_dict(load_checkpoint_file(tmp_path / "rng.ckpt")["rng"])
    restored.on_train_batch_start(None, None, None, 0)  # type: ignore[arg-type]
    got = torch.rand(3), np.random.rand(3), pyrandom.random()
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]

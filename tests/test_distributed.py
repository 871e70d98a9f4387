"""2-process CPU (gloo) DDP and FSDP2 training of tiny puzzle and text models against 1 process on the same global
batches: same loss curve, a checkpoint (sharded DCP directory for FSDP2), and a resume that continues the curve.

The 2-process runs are subprocesses (tests/_dist_train.py) so Lightning's launcher never forks pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _dist_train  # noqa: E402

HELPER = Path(__file__).parent / "_dist_train.py"
ROOT = Path(__file__).resolve().parents[1]
STEPS = 3  # odd: with halt_max_steps=2 the resume happens mid-ACT, so every rank must get its own carry back


def _two_process(task: str, strategy: str, out: Path, ema: bool) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    args = [sys.executable, str(HELPER), "--task", task, "--strategy", strategy, "--devices", "2", "--steps",
            str(STEPS), "--out", str(out)] + (["--ema"] if ema else [])
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, the whole global batch, 2 epochs straight through (no resume), per task."""
    def straight(task: str) -> tuple[list[float], dict]:
        out = tmp_path_factory.mktemp(f"ref-{task}")
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            losses = _dist_train.run(task, "single", 1, out, STEPS, 2, "straight", ema=True)
        finally:
            torch.set_num_threads(threads)
        return losses, torch.load(out / "ema-straight.pt")
    return {task: straight(task) for task in ("puzzle", "text")}


FSDP2_COMPILE_GAP = pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "torch.compile under FSDP2 drifts ~1e-3 from the second step on gloo CPU processes (docs/scaling.md); "
    "strict, so the day it becomes exact this test says so"))


@pytest.mark.parametrize(("task", "strategy"), [
    ("puzzle", "ddp"), ("puzzle", "fsdp2"), ("text", "ddp"), ("text", "fsdp2"), ("text", "ddp_compiled"),
    pytest.param("text", "fsdp2_compiled", marks=FSDP2_COMPILE_GAP)])
def test_two_processes_match_one_and_resume(task, strategy, reference, tmp_path):
    _two_process(task, strategy, tmp_path, ema=True)
    ref_losses, ref_ema = reference[task]
    first = json.loads((tmp_path / "losses-first.json").read_text())
    resumed = json.loads((tmp_path / "losses-resumed.json").read_text())
    assert len(first) == len(resumed) == STEPS
    assert first == pytest.approx(ref_losses[:STEPS], rel=1e-5, abs=1e-6)
    assert resumed == pytest.approx(ref_losses[STEPS:], rel=1e-5, abs=1e-6)
    initial = dict(_dist_train.make_task(task).named_parameters())
    assert any((ref_ema[n] - p.detach()).abs().max() > 1e-4 for n, p in initial.items())  # training moved the weights

    ckpt = tmp_path / "ckpt-first" / f"epoch=0-step={STEPS}.ckpt"
    if strategy.startswith("fsdp2"):  # a DCP directory: one shard per rank, rank-0 metadata, and the EMA's own shards
        assert ckpt.is_dir()
        assert {p.name for p in ckpt.glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}
        assert (ckpt / "meta.pt").is_file() and (ckpt / "ema" / ".metadata").is_file()
    else:
        assert ckpt.is_file()
    ema = torch.load(tmp_path / "ema-resumed.pt")
    assert ema.keys() == ref_ema.keys()
    for name, value in ref_ema.items():
        torch.testing.assert_close(ema[name], value, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"EMA {n}: {m}")

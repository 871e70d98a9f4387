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

from hrmkit.checkpointing import check_checkpoint  # noqa: E402

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


#: bf16 tolerance of the FSDP2 preset's mixed precision (bf16 parameters and autocast, fp32 masters and reduce)
#: against the fp32 1-process curve: the loss within 4e-3 relative (bf16 rounds at 2^-8 = 3.9e-3; measured 3.8e-4 on
#: the 6 steps), the fp32 EMA weights (magnitude ~0.5) within 1e-2 (measured 3.4e-3; AdamATan2 updates are
#: sign-like, so a bf16-rounded gradient near zero moves a weight by up to lr = 3e-3 the other way).
BF16 = {"loss_rel": 4e-3, "weight_abs": 1e-2}


@pytest.mark.parametrize(("task", "strategy"), [
    ("puzzle", "ddp"), ("puzzle", "fsdp2"), ("text", "ddp"), ("text", "fsdp2"), ("text", "ddp_compiled"),
    ("text", "fsdp2_bf16")])
def test_two_processes_match_one_and_resume(task, strategy, reference, tmp_path):
    _two_process(task, strategy, tmp_path, ema=True)
    ref_losses, ref_ema = reference[task]
    first = json.loads((tmp_path / "losses-first.json").read_text())
    resumed = json.loads((tmp_path / "losses-resumed.json").read_text())
    assert len(first) == len(resumed) == STEPS
    bf16 = strategy == "fsdp2_bf16"
    tol = {"rel": BF16["loss_rel"], "abs": 0} if bf16 else {"rel": 1e-5, "abs": 1e-6}
    assert first == pytest.approx(ref_losses[:STEPS], **tol)
    assert resumed == pytest.approx(ref_losses[STEPS:], **tol)
    if bf16:  # it did compute in bf16: further from the fp32 curve than fp32 rounding ever is
        assert first + resumed != pytest.approx(ref_losses, rel=1e-5, abs=1e-6)
    initial = dict(_dist_train.make_task(task).named_parameters())
    assert any((ref_ema[n] - p.detach()).abs().max() > 1e-4 for n, p in initial.items())  # training moved the weights

    ckpt = tmp_path / "ckpt-first" / f"epoch=0-step={STEPS}.ckpt"
    if strategy.startswith("fsdp2"):  # a DCP directory: one shard per rank, rank-0 metadata, and the EMA's own shards
        assert ckpt.is_dir()
        assert {p.name for p in ckpt.glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}
        assert (ckpt / "meta.pt").is_file() and (ckpt / "ema" / ".metadata").is_file()
        check_checkpoint(ckpt)  # complete: the marker, written last, lists every shard with its size
    else:
        assert ckpt.is_file()
    ema = torch.load(tmp_path / "ema-resumed.pt")
    assert ema.keys() == ref_ema.keys()
    tol = {"rtol": 0, "atol": BF16["weight_abs"]} if bf16 else {"rtol": 1e-5, "atol": 1e-6}
    for name, value in ref_ema.items():
        assert ema[name].dtype == torch.float32  # fp32 masters and EMA, whatever the compute dtype
        torch.testing.assert_close(ema[name], value, **tol, msg=lambda m, n=name: f"EMA {n}: {m}")


def test_compiled_fsdp2_is_refused_with_the_alternatives_named():
    import lightning as L

    from hrmkit.errors import HrmkitInputError
    from hrmkit.parallel import FSDP2

    names = r"strategy: hrmkit_fsdp2.*FSDP2 without compile.*strategy: hrmkit_ddp_compiled"
    with pytest.raises(HrmkitInputError, match=names):
        FSDP2(compile=True)
    with pytest.raises(HrmkitInputError, match=names):
        L.Trainer(accelerator="cpu", devices=1, strategy="hrmkit_fsdp2_compiled", logger=False)

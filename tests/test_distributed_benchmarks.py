"""The scale-out benchmark tools: App. A FLOP accounting and the GPU check's no-GPU dry run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from flops import call_params, core_flops_per_token, memory_budget  # noqa: E402

from hrmkit.cores import build_core  # noqa: E402


def test_app_a_flops_of_hrm_text_xl_are_18_n_per_token():
    """Spec §3.4: 8 calls × N/2 × 2 forward + 5 calls × N/2 × 4 backward = 18·N_core per token at bp_steps=5."""
    with torch.device("meta"):
        core = build_core("hrm", "text-XL", bp_steps=5)
    n = core.num_parameters()
    assert call_params(core) == [n // 2] * 8
    assert core_flops_per_token(core) == 18 * n
    assert 17.5e9 < core_flops_per_token(core) < 17.8e9  # N_core ≈ 0.98B
    assert core_flops_per_token(core, bp_steps=2) == 8 * n + 2 * (n // 2) * 4


def test_memory_budget_shards_model_states_but_not_activations():
    one = memory_budget(1000, 200, 16, 2, 5, tokens=64, vocab=100, world=1)
    four = memory_budget(1000, 200, 16, 2, 5, tokens=64, vocab=100, world=4)
    assert four.weights == one.weights / 4 and four.optimizer == 2 * four.weights
    assert four.activations == one.activations and four.gathered == one.gathered == 2 * 1000


@pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run is what happens without a GPU")
def test_gpu_check_says_there_is_no_gpu_and_dry_runs_on_the_cpu(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               PYTHON=sys.executable)
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--json", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "no CUDA GPU detected" in proc.stdout and "dry run OK" in proc.stdout
    assert "sdpa (usable)" in proc.stdout
    results = {r["check"]: r for r in json.loads(out.read_text())["results"]}
    # the same checks as on a GPU, at tiny sizes: every CPU attention path against sdpa, and no graph break
    assert results["attention varlen (CPU reference kernel)"]["status"] == "PASS"
    assert results["attention flex"]["status"] == "PASS"
    for path in ("sdpa", "flex", "varlen (CPU reference kernel)"):
        assert results[f"compile {path}"]["figures"] == {"graphs": 1, "graph_breaks": 0}
    assert results["recipe text-hrm-XL-16xH100"]["status"] == "SKIP"
    table = proc.stdout[proc.stdout.index("check "):]
    assert all(name in table for name in results) and " FAIL " not in table


def test_cpu_memory_benchmark_measures_a_step_peak():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/memory_cpu.py"), "--configs", "text-tiny",
                           "--steps", "2"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = proc.stdout.strip().splitlines()[-1].split()
    assert row[0] == "text-tiny" and row[1] == "75,776" and float(row[3]) > 0

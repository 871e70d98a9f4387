"""The acceptance checks of benchmarks/gpu_check.py: attention backends against sdpa, the compiled core's graph
breaks, and shipped recipes run through the project's recipe derivation with a save and a resume.

Each check returns :class:`Result` rows (PASS / FAIL / SKIP with a one-line detail and its figures). Every check
runs on the CPU too, at tiny sizes, so the dry run exercises the same code as the GPU run.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor

from hrmkit.cores import build_core
from hrmkit.data.text.packing import pack_batch
from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.backends import ATTENTION, base, get_backend, with_plan
from hrmkit.nn.backends.varlen import VarlenBackend, reference_kernel
from hrmkit.tasks import TextTask
from hrmkit.testing.graph_breaks import trace_report

ROOT = Path(__file__).resolve().parents[1]
TENSORS = ("out", "dq", "dk", "dv")


@dataclass
class Result:
    check: str
    status: str  # PASS, FAIL or SKIP
    detail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return asdict(self)


def packed_prefixlm_batch(tokens: int, vocab: int, seed: int = 0, longest: int = 2048) -> dict[str, Any]:
    """One packed row of ``tokens`` tokens: instruction/response samples of 64..``longest`` tokens (instruction
    10-60 %), the padding tail as its own document."""
    rng = np.random.default_rng(seed)
    samples, left = [], tokens
    while left >= 64:
        n = int(rng.integers(64, min(longest, left) + 1))
        samples.append((rng.integers(3, vocab, n).astype(np.int64), int(n * rng.uniform(0.1, 0.6))))
        left -= n
    return pack_batch(samples, tokens, pad_id=0)


@contextlib.contextmanager
def cpu_reference_varlen() -> Iterator[None]:
    """On the CPU, ``varlen`` runs its production plan through the reference kernel (its real kernel is CUDA-only)."""
    saved = base._INSTANCES.get("varlen")
    base._INSTANCES["varlen"] = VarlenBackend(kernel=reference_kernel)
    try:
        yield
    finally:
        if saved is None:
            base._INSTANCES.pop("varlen", None)
        else:
            base._INSTANCES["varlen"] = saved


def _label(name: str, device: torch.device) -> str:
    return f"{name} (CPU reference kernel)" if name == "varlen" and device.type == "cpu" else name


def _serviceable(name: str, device: torch.device, spec: AttnSpec, tokens: int, x: Tensor) -> tuple[bool, str | None]:
    """(whether ``name`` can run backward here, why it cannot run at all or None)."""
    impl = get_backend(name)
    grad = impl.unavailable_reason(device.type, spec, True, tokens, tokens) is None
    return grad, impl.unavailable_reason(device.type, spec, grad, tokens, tokens) or impl.input_reason(x)


def failed_result(label: str, exc: Exception) -> Result:
    """A kernel or tracing error is the check's finding, not the end of the run."""
    return Result(label, "FAIL", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")


# ------------------------------------------------------------------------------------------ backends vs sdpa
def _run(name: str, q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec, g: Tensor, grad: bool) -> dict[str, Tensor]:
    leaves = [t.detach().clone().requires_grad_(grad) for t in (q, k, v)]
    with torch.set_grad_enabled(grad):
        out = get_backend(name)(*leaves, spec)
    result = {"out": out.detach().float()}
    if grad:
        for key, grad_t in zip(TENSORS[1:], torch.autograd.grad((out.float() * g).sum(), leaves)):
            result[key] = grad_t.float()
    return result


def check_attention(device: torch.device, dtype: torch.dtype, tokens: int, heads: int, head_dim: int) -> list[Result]:
    """Every registered backend against sdpa on one packed PrefixLM row, forward and backward, in ``dtype``.

    Pass: for each of out, dq, dk, dv the backend's max error against an fp32 sdpa reference is at most twice
    sdpa's own error in ``dtype`` plus 0.1 % of the reference's largest value (fp32 on the CPU: 1e-4 absolute).
    """
    batch = packed_prefixlm_batch(tokens, 1000)
    spec = with_plan(AttnSpec("prefixlm", batch["cu_seqlens"], batch["prefix_lens"]), 1, tokens).to(device)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, tokens, heads, head_dim, generator=gen).to(device, dtype) for _ in range(3))
    g = torch.randn(1, tokens, heads, head_dim, generator=gen).to(device)
    reference = _run("sdpa", q.float(), k.float(), v.float(), spec, g, True)
    sdpa = _run("sdpa", q, k, v, spec, g, True)
    sdpa_err = {key: (sdpa[key] - reference[key]).abs().max().item() for key in TENSORS}
    results = [Result("attention sdpa", "PASS", f"{dtype} vs fp32: max error " +
                      ", ".join(f"{k} {e:.2e}" for k, e in sdpa_err.items()), {"max_error_vs_fp32": sdpa_err})]
    for name in ATTENTION.names():
        if name == "sdpa":
            continue
        label = f"attention {_label(name, device)}"
        try:
            with cpu_reference_varlen() if device.type == "cpu" else contextlib.nullcontext():
                grad, reason = _serviceable(name, device, spec, tokens, q)
                if reason is not None:
                    results.append(Result(label, "SKIP", reason))
                    continue
                got = _run(name, q, k, v, spec, g, grad)
        except Exception as exc:
            results.append(failed_result(label, exc))
            continue
        errors, vs_sdpa, bad = {}, {}, []
        for key in got:
            errors[key] = (got[key] - reference[key]).abs().max().item()
            vs_sdpa[key] = (got[key] - sdpa[key]).abs().max().item()
            floor = 1e-4 if dtype == torch.float32 else 1e-3 * reference[key].abs().max().item()
            if not errors[key] <= 2 * sdpa_err[key] + floor:  # also catches NaN
                bad.append(key)
        what = "forward and backward" if grad else "forward only (no backward here)"
        detail = f"{what}; max error vs sdpa " + ", ".join(f"{k} {e:.2e}" for k, e in vs_sdpa.items())
        if bad:
            detail += f"; beyond 2x sdpa's own error in {', '.join(bad)}"
        results.append(Result(label, "FAIL" if bad else "PASS", detail,
                              {"max_error_vs_sdpa": vs_sdpa, "max_error_vs_fp32": errors, "backward": grad}))
    return results


# ------------------------------------------------------------------------------------------- compiled core
def check_compile(device: torch.device, dtype: torch.dtype, tokens: int) -> list[Result]:
    """The HRM-Text core (tiny width, three calls, the last two with gradient) traced on a packed PrefixLM batch,
    with the spec the task builds (varlen plan included): one graph, 0 graph breaks, on every backend it can run."""
    results = []
    rows = packed_prefixlm_batch(tokens, 512, seed=1, longest=128)
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in rows.items()}
    for name in ("sdpa", "flex", "varlen"):
        label = f"compile {_label(name, device)}"
        with cpu_reference_varlen() if device.type == "cpu" else contextlib.nullcontext():
            try:
                torch.manual_seed(0)
                core = build_core("hrm", "text-tiny", attn_backend=name, H_cycles=1, L_cycles=2, bp_steps=2)
                task = TextTask(core, vocab_size=512).to(device, dtype)
                spec = task.attn_spec(batch)
                x = task.embed(batch["input_ids"]).detach()
                grad, reason = _serviceable(name, device, spec, tokens, x)
                if reason is not None:
                    results.append(Result(label, "SKIP", reason))
                    continue
                with torch.set_grad_enabled(grad):
                    report = trace_report(task.core, x.requires_grad_(grad), task.core.initial_state(x), spec)
            except Exception as exc:
                results.append(failed_result(label, exc))
                continue
            finally:
                torch._dynamo.reset()
        detail = f"{report.graphs} graph(s), {report.breaks} graph break(s){'' if grad else ', no grad'}"
        if report.reasons:
            detail += f": {report.reasons[0]}"
        results.append(Result(label, "PASS" if report.clean else "FAIL", detail,
                              {"graphs": report.graphs, "graph_breaks": report.breaks}))
    return results


# ------------------------------------------------------------------------------------------------- recipes
def derive_recipe_run(recipe_path: Path, *, steps: int, data_dir: str, on_gpu: bool,
                      depth: int | None = 2) -> dict[str, Any]:
    """``recipe_path`` as one run on this machine, through the project's one recipe derivation,
    :func:`hrmkit.recipes.derive_cpu_run`.

    On a GPU the width, sequence and token budgets, batch, strategy preset, precision and callbacks stay as shipped;
    the run gets 1 GPU, ``steps`` steps, the vocabulary of the tiny dataset and ``depth`` blocks per stack (None: as
    shipped). Two blocks keep XL's sharded saves small enough for the 8-minute budget; the throughput check measures
    the full XL stack. Without a GPU it is the CPU derivation itself, in one process.
    """
    from hrmkit.recipes import derive_cpu_run, load_recipe

    recipe = load_recipe(recipe_path)
    if not on_gpu:
        derived = derive_cpu_run(recipe, steps=steps, data_dir=data_dir)
        derived["trainer"]["devices"] = 1
        return derived
    core = recipe["model"]["init_args"]["core"]["init_args"]
    data = recipe["data"]["init_args"]
    shipped_depth = max(int(core[k]) for k in ("H_layers", "L_layers", "num_layers") if k in core)
    depth = shipped_depth if depth is None else min(depth, shipped_depth)
    derived = derive_cpu_run(recipe, steps=steps, seq_len=int(core.get("max_seq_len", 4096)),
                             rows=int(data.get("batch_size", 64)), width=int(core["hidden_size"]),
                             heads=int(core["num_heads"]), depth=depth, data_dir=data_dir)
    derived["trainer"].update(accelerator="gpu", devices=1)
    derived["trainer"].pop("num_nodes", None)
    return derived


def build_tiny_data(kind: str, root: Path, records: int) -> Path:
    """A small dataset of ``kind`` (``text``: arithmetic instruction/response pairs with a 300-token BPE;
    ``sudoku``: generated easy puzzles), built once under ``root``."""
    out = root / kind
    if out.is_dir():
        return out
    root.mkdir(parents=True, exist_ok=True)
    if kind == "text":
        from hrmkit.data.text import build_text
        from hrmkit.data.text.tokenizer import train_bpe

        side = int(records ** 0.5) + 1
        lines = [json.dumps({"instruction": f"What is {a} plus {b}?", "response": f"{a} + {b} = {a + b}."})
                 for a in range(side) for b in range(side)][:records]
        jsonl = root / "arithmetic.jsonl"
        jsonl.write_text("\n".join(lines) + "\n")
        train_bpe([jsonl], vocab_size=300).save(root / "tokenizer.json")
        build_text(str(out), [str(jsonl)], tokenizer=str(root / "tokenizer.json"), val_fraction=0.05, max_len=256)
    elif kind == "sudoku":
        from hrmkit.data.puzzles.sudoku import build_sudoku

        build_sudoku(str(out), train_size=records, test_size=32, levels=["easy"], num_aug=2, seed=0)
    else:
        raise ValueError(f"no tiny dataset of kind {kind!r}")
    return out


def _final_step(workdir: Path, config: dict[str, Any]) -> int | None:
    """The global step of the newest checkpoint the run left (single files and sharded DCP directories)."""
    from hrmkit.checkpointing import load_checkpoint_file

    steps = []
    for path in (workdir / config["trainer"].get("default_root_dir", ".")).rglob("*.ckpt"):
        meta = path / "meta.pt" if path.is_dir() else path
        if meta.is_file():
            steps.append(int(load_checkpoint_file(meta, map_location="cpu")["global_step"]))
    return max(steps, default=None)


def _hrmkit(args: list[str], workdir: Path, log: Path, timeout: float) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "hrmkit.cli", *args, "--trainer.enable_progress_bar", "false",
           "--trainer.enable_model_summary", "false"]
    try:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        text = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        log.write_text(text)
        return 124, f"timed out after {timeout:.0f} s"
    log.write_text(proc.stdout + proc.stderr)
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("hrmkit: error")]
    return proc.returncode, (errors or lines or [""])[-1][:300]


def check_recipe(name: str, kind: str, workdir: Path, data: Path, on_gpu: bool, steps: int, more: int,
                 timeout: float, depth: int | None = 2) -> Result:
    """Fit the derived run for ``steps`` steps (checkpointing on its shipped schedule, scaled), then
    ``--ckpt_path last`` to ``steps + more``: PASS when both exit 0 and the newest checkpoint is at the final step."""
    label = f"recipe {name}"
    config = derive_recipe_run(ROOT / "recipes" / f"{name}.yaml", steps=steps, data_dir=str(data), on_gpu=on_gpu,
                               depth=depth)
    run_dir = workdir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    strategy = config["trainer"].get("strategy")
    preset = strategy.get("class_path", "").rsplit(".", 1)[-1] if isinstance(strategy, dict) else str(strategy)
    core = config["model"]["init_args"]["core"]["init_args"]
    figures: dict[str, Any] = {"strategy": preset, "precision": config["trainer"].get("precision"), "steps": steps,
                               "resumed_to": steps + more, "hidden_size": core.get("hidden_size"),
                               "layers": [core.get(k) for k in ("H_layers", "L_layers", "num_layers") if k in core]}
    start = time.perf_counter()
    code, last = _hrmkit(["fit", "-c", "recipe.yaml"], run_dir, run_dir / "fit.log", timeout)
    figures["fit_s"] = round(time.perf_counter() - start, 1)
    saved = _final_step(run_dir, config) if code == 0 else None
    if code != 0 or saved != steps:
        return Result(label, "FAIL", f"fit exited {code} with newest checkpoint at step {saved} (expected {steps}): "
                      f"{last}; log {run_dir / 'fit.log'}", figures)
    start = time.perf_counter()
    code, last = _hrmkit(["fit", "-c", "recipe.yaml", "--trainer.max_steps", str(steps + more), "--ckpt_path",
                          "last"], run_dir, run_dir / "resume.log", timeout)
    figures["resume_s"] = round(time.perf_counter() - start, 1)
    resumed = _final_step(run_dir, config) if code == 0 else None
    if code != 0 or resumed != steps + more:
        return Result(label, "FAIL", f"resume exited {code} with newest checkpoint at step {resumed} (expected "
                      f"{steps + more}): {last}; log {run_dir / 'resume.log'}", figures)
    return Result(label, "PASS", f"{preset}, {figures['precision']}, width {figures['hidden_size']}, layers "
                  f"{figures['layers']}: fit {steps} steps + save, resume to "
                  f"{steps + more} ({figures['fit_s']} s + {figures['resume_s']} s)", figures)

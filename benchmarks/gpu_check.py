"""The GPU acceptance command (one H100/H200, <= 8 minutes): prints a PASS/FAIL table and writes JSON.

    bash benchmarks/gpu_check.sh                          # what to run on the GPU machine
    python benchmarks/gpu_check.py --json runs/gpu_check.json

Checks, in order (benchmarks/gpu_acceptance.py holds the first three):

1. attention: every registered backend against sdpa on one packed PrefixLM row, forward and backward, in bf16
   (max error against sdpa and against an fp32 reference);
2. compile: the HRM-Text core traced with the spec the task builds: one graph, 0 graph breaks, per backend;
3. recipes: text-hrm-B, sudoku-extreme-hrm and text-hrm-XL-16xH100 through the recipe derivation at their shipped
   sizes on 1 GPU (their shipped strategy preset: FSDP2 for XL), fit + checkpoint, then ``--ckpt_path last``;
4. throughput of the XL stack (compiled with ``fullgraph=True``, ``auto`` attention) at its recipe's per-GPU
   token budget, as below.

Throughput: TextTask in bf16 autocast with the core compiled (``hrmkit.parallel.compile_core``) on fixed-length
packed rows of the recipe's per-GPU token budget (L: 21,504, XL: 12,288), at the final deep-credit horizon
bp_steps=5:

* tokens/s: packed tokens per second of forward+backward+AdamATan2 step (median over timed steps);
* MFU: App. A FLOPs (forward 2·N per call, backward 4·N per call with gradient; specs/hrm-text.md §3.4) × tokens/s
  over the GPU's dense bf16 peak (H100 SXM 989 TF, H200 989 TF; override with --peak-tflops); ``MFU+head`` also
  counts the LM head; the reference run's derived figure is ≈40 % (22.6k tokens/s/GPU on XL);
* peak memory: ``torch.cuda.max_memory_allocated`` of the step.

Checks that would start after --budget-s are skipped and listed. Without a CUDA GPU it says so and dry-runs the
same checks on the CPU at tiny sizes (recipes only with --cpu-recipes: they take minutes), so the script is known to
work. Exit code 1 when any check FAILs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flops import core_flops_per_token, head_flops_per_token  # noqa: E402
from gpu_acceptance import (  # noqa: E402
    Result,
    build_tiny_data,
    check_attention,
    check_compile,
    check_recipe,
    failed_result,
    packed_prefixlm_batch,
)

from hrmkit.cores import build_core  # noqa: E402
from hrmkit.nn.backends import ATTENTION, get_backend  # noqa: E402
from hrmkit.parallel import compile_core  # noqa: E402
from hrmkit.tasks import TextTask  # noqa: E402

SIZES = {"XL": 12_288, "L": 21_504}
STAGES = ("attention", "compile", "throughput", "recipes")   # per-GPU tokens of recipes/text-hrm-{XL-16,L-8}xH100.yaml
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
VOCAB = 65_536


def packed_rows(tokens: int, n: int, vocab: int, seed: int = 0) -> list[dict[str, Any]]:
    """Fixed-length packed rows of instruction/response samples (lengths 64..2048, instruction 10-60 %)."""
    return [packed_prefixlm_batch(tokens, vocab, seed + i) for i in range(n)]


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def usable_backends(device: torch.device, tokens: int) -> dict[str, str | None]:
    """Every registered backend → None if it can train packed PrefixLM here, else the reason it cannot."""
    from hrmkit.nn.attn_spec import AttnSpec

    spec = AttnSpec("prefixlm", torch.tensor([0, tokens], dtype=torch.int32), torch.tensor([1], dtype=torch.int32))
    out = {}
    for name in ATTENTION.names():
        try:
            out[name] = get_backend(name).unavailable_reason(device.type, spec, True, tokens, tokens)
        except Exception as exc:  # a broken plugin backend is reported, not fatal
            out[name] = f"{type(exc).__name__}: {exc}"
    return out


def run_one(size: str, backend: str, tokens: int, device: torch.device, steps: int, warmup: int,
            compile_model: bool, tiny: bool, fullgraph: bool = False) -> dict[str, Any]:
    torch.manual_seed(0)
    variant = "text-tiny" if tiny else f"text-{size}"
    vocab = 512 if tiny else VOCAB
    core = build_core("hrm", variant, attn_backend=backend, bp_steps=5, max_seq_len=max(4096, tokens))
    task = TextTask(core, vocab_size=vocab).to(device)
    if compile_model:
        compile_core(task.core, fullgraph=fullgraph)
    opt = task.configure_optimizers()["optimizer"]
    rows = [to_device(b, device) for b in packed_rows(tokens, 4, vocab)]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, compile_s = [], 0.0
    for i in range(warmup + steps):
        batch = rows[i % len(rows)]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with autocast:
            r = task._step(batch)
        (r["ce_sum"] / r["count"].clamp_min(1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        if i < warmup:
            compile_s += elapsed
        else:
            times.append(elapsed)
    step_s = statistics.median(times)
    core_f = core_flops_per_token(task.core)
    head_f = head_flops_per_token(task.core.hidden_size, vocab)
    return {"size": "tiny" if tiny else size, "backend": backend, "tokens": tokens, "step_s": step_s,
            "tokens_per_s": tokens / step_s, "core_tflops": core_f * tokens / step_s / 1e12,
            "head_tflops": head_f * tokens / step_s / 1e12, "warmup_s": compile_s,
            "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
            "core_params": task.core.num_parameters()}


def gpu_peak(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def check_throughput(size: str, device: torch.device, args: argparse.Namespace, peak: float | None) -> list[Result]:
    """Tokens/s, MFU (App. A) and peak memory of one size with each requested backend (default: ``auto``)."""
    results = []
    on_gpu = device.type == "cuda"
    tokens = SIZES[size] if on_gpu else 256
    for backend in args.backends or ["auto"]:
        label = f"throughput {size if on_gpu else 'tiny'}/{backend}"
        reason = None if backend == "auto" else usable_backends(device, tokens).get(backend, "not registered")
        if reason:
            results.append(Result(label, "SKIP", reason))
            continue
        try:
            row = run_one(size, backend, tokens, device, args.steps if on_gpu else 2, args.warmup if on_gpu else 1,
                          on_gpu and not args.no_compile, tiny=not on_gpu, fullgraph=True)
        except torch.OutOfMemoryError as exc:
            results.append(Result(label, "FAIL", f"out of memory ({str(exc).splitlines()[0]})"))
            torch.cuda.empty_cache()
            continue
        except Exception as exc:  # e.g. a graph break under fullgraph=True
            results.append(failed_result(label, exc))
            continue
        if peak:
            row["mfu"] = row["core_tflops"] / peak
            row["mfu_head"] = (row["core_tflops"] + row["head_tflops"]) / peak
        mfu = row.get("mfu", float("nan"))
        detail = (f"{row['tokens_per_s']:.0f} tok/s, step {row['step_s'] * 1e3:.1f} ms, MFU {mfu:.1%}"
                  f" (+head {row.get('mfu_head', float('nan')):.1%}), peak {row['peak_gib']:.1f} GiB, "
                  f"warmup {row['warmup_s']:.1f} s")
        results.append(Result(label, "PASS", detail, row))
        if on_gpu:
            torch.cuda.empty_cache()
    return results


def print_table(results: list[Result]) -> None:
    width = max(len(r.check) for r in results)
    print(f"\n{'check':<{width}}  result  detail")
    for r in results:
        print(f"{r.check:<{width}}  {r.status:<6}  {r.detail}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, default=420.0, help="start no new check after this many seconds")
    p.add_argument("--steps", type=int, default=8, help="timed throughput steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed throughput steps (compilation happens here)")
    p.add_argument("--checks", nargs="*", default=list(STAGES), choices=list(STAGES), help="which checks to run")
    p.add_argument("--sizes", nargs="*", default=["XL"], choices=list(SIZES), help="throughput sizes")
    p.add_argument("--backends", nargs="*", default=None, help="throughput backends (default: auto)")
    p.add_argument("--recipes", nargs="*", default=["text-hrm-B", "sudoku-extreme-hrm", "text-hrm-XL-16xH100"])
    p.add_argument("--recipe-steps", type=int, default=4, help="steps before the save; the resume runs 2 more")
    p.add_argument("--recipe-depth", type=int, default=2, help="blocks per stack in the recipe runs (0: as shipped)")
    p.add_argument("--cpu-recipes", action="store_true", help="without a GPU, also run the recipes' CPU derivations")
    p.add_argument("--workdir", type=Path, default=Path("runs/gpu_check"), help="tiny data and recipe runs")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--json", type=Path, default=Path("runs/gpu_check.json"), help="where the results go")
    args = p.parse_args()
    t0 = time.perf_counter()
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        device = torch.device("cuda")
        name = torch.cuda.get_device_name(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        print(f"gpu_check on {name} (torch {torch.__version__}); compile={'off' if args.no_compile else 'on'}")
    else:
        device, name = torch.device("cpu"), "cpu"
        print("gpu_check: no CUDA GPU detected (torch.cuda.is_available() is False): no GPU figures can be "
              "measured here. Dry run of the same checks on the CPU at tiny sizes, to check the script itself.")
        backends = ", ".join(f"{k} ({v or 'usable'})" for k, v in usable_backends(device, 256).items())
        print(f"attention backends on this machine: {backends}")
    peak = gpu_peak(name, args.peak_tflops) if on_gpu else None
    results: list[Result] = []
    skipped: list[str] = []

    def stage(label: str, fn: Any, *fn_args: Any) -> None:
        if time.perf_counter() - t0 > args.budget_s:
            skipped.append(label)
            results.append(Result(label, "SKIP", "time budget spent"))
            return
        start = time.perf_counter()
        out = fn(*fn_args)
        for r in out:
            print(f"{r.check}: {r.status} {r.detail}", flush=True)
        results.extend(out)
        print(f"  ({label}: {time.perf_counter() - start:.0f} s)", flush=True)

    dtype = torch.bfloat16 if on_gpu else torch.float32
    if "attention" in args.checks:
        stage("attention", check_attention, device, dtype, *((4096, 12, 128) if on_gpu else (256, 2, 16)))
    if "compile" in args.checks:
        stage("compile", check_compile, device, dtype, 1024 if on_gpu else 256)
    for size in (args.sizes if on_gpu else ["XL"]) if "throughput" in args.checks else []:
        stage(f"throughput {size}", check_throughput, size, device, args, peak)
    if "recipes" not in args.checks:
        pass
    elif on_gpu or args.cpu_recipes:
        data_root = args.workdir.resolve() / "data"
        kinds = {"sudoku-extreme-hrm": "sudoku"}
        for recipe in args.recipes:
            kind = kinds.get(recipe, "text")

            def run_recipe(recipe: str = recipe, kind: str = kind) -> list[Result]:
                data = build_tiny_data(kind, data_root, 8000 if kind == "text" else 200)
                left = max(60.0, args.budget_s + 60 - (time.perf_counter() - t0))
                return [check_recipe(recipe, kind, args.workdir.resolve(), data, on_gpu, args.recipe_steps, 2,
                                     timeout=left / 2, depth=args.recipe_depth or None)]

            stage(f"recipe {recipe}", run_recipe)
    else:
        results += [Result(f"recipe {r}", "SKIP", "needs a CUDA GPU (--cpu-recipes runs the CPU derivations)")
                    for r in args.recipes]
    print_table(results)
    failed = [r.check for r in results if r.status == "FAIL"]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"device": name, "torch": torch.__version__, "peak_tflops": peak,
                                     "results": [r.row() for r in results], "skipped": skipped,
                                     "failed": failed, "total_s": time.perf_counter() - t0}, indent=1, default=str))
    print(f"total {time.perf_counter() - t0:.0f} s; {len(failed)} FAIL; JSON in {args.json}")
    if on_gpu:
        print("reference (HRM-Text XL, 16 H100): ~22.6k tok/s/GPU, ~40 % MFU")
    else:
        print("dry run OK" if not failed else "dry run FAILED", "(tiny CPU figures are not GPU figures)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""One prepared single-GPU check (H100/H200, <= 10 minutes): tokens/s, MFU and peak memory of HRM-Text L and XL.

    bash benchmarks/gpu_check.sh                    # what to run on the GPU machine
    python benchmarks/gpu_check.py --budget-s 540   # the same, directly

For each size (XL first, then L) and each attention backend that can run packed PrefixLM training on this GPU
(``varlen``, ``flex``, ``sdpa``, plugins), it trains TextTask in bf16 autocast with the core compiled
(``hrmkit.parallel.compile_core``) on fixed-length packed rows of the recipe's per-GPU token budget (L: 21,504,
XL: 12,288), at the final deep-credit horizon bp_steps=5, and reports:

* tokens/s: packed tokens per second of forward+backward+AdamATan2 step (median over timed steps);
* MFU: App. A FLOPs (forward 2·N per call, backward 4·N per call with gradient; specs/hrm-text.md §3.4) × tokens/s
  over the GPU's dense bf16 peak (H100 SXM 989 TF, H200 989 TF; override with --peak-tflops); ``MFU+head`` also
  counts the LM head; the reference run's derived figure is ≈40 % (22.6k tokens/s/GPU on XL);
* peak memory: ``torch.cuda.max_memory_allocated`` of the step.

Configurations that would not finish inside --budget-s are skipped and listed. Without a CUDA GPU it says so and
dry-runs the same code on the CPU with a tiny model and two steps (so the script is known to work), exit code 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flops import core_flops_per_token, head_flops_per_token  # noqa: E402

from hrmkit.cores import build_core  # noqa: E402
from hrmkit.data.text.packing import pack_batch  # noqa: E402
from hrmkit.nn.backends import ATTENTION, get_backend  # noqa: E402
from hrmkit.parallel import compile_core  # noqa: E402
from hrmkit.tasks import TextTask  # noqa: E402

SIZES = {"XL": 12_288, "L": 21_504}   # per-GPU tokens of recipes/text-hrm-{XL-16,L-8}xH100.yaml
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
VOCAB = 65_536


def packed_rows(tokens: int, n: int, vocab: int, seed: int = 0) -> list[dict[str, Any]]:
    """Fixed-length packed rows of instruction/response samples (lengths 64..2048, instruction 10-60 %)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        samples, left = [], tokens
        while left >= 64:
            k = int(rng.integers(64, min(2048, left) + 1))
            samples.append((rng.integers(3, vocab, k).astype(np.int64), int(k * rng.uniform(0.1, 0.6))))
            left -= k
        rows.append(pack_batch(samples, tokens, pad_id=0))
    return rows


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
            compile_model: bool, tiny: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    variant = "text-tiny" if tiny else f"text-{size}"
    vocab = 512 if tiny else VOCAB
    core = build_core("hrm", variant, attn_backend=backend, bp_steps=5, max_seq_len=max(4096, tokens))
    task = TextTask(core, vocab_size=vocab).to(device)
    if compile_model:
        compile_core(task.core)
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, default=540.0, help="stop starting new configurations after this")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation happens here)")
    p.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--backends", nargs="*", default=None, help="default: every usable one")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args()
    t0 = time.perf_counter()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU detected (torch.cuda.is_available() is False): no GPU figures can be "
              "measured here. Dry run on the CPU with a tiny model and 2 steps to check the script itself.")
        cpu = torch.device("cpu")
        backends = ", ".join(f"{k} ({v or 'usable'})" for k, v in usable_backends(cpu, 256).items())
        print(f"attention backends on this machine: {backends}")
        row = run_one("L", "sdpa", 256, cpu, steps=2, warmup=1, compile_model=False, tiny=True)
        print(f"dry run OK: {row['tokens_per_s']:.0f} tokens/s, App. A {row['core_tflops'] * 1e3:.3f} GFLOP/s on "
              "the CPU (tiny model: not a GPU figure). Run this script on an H100/H200 to record L and XL.")
        return
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    peak = gpu_peak(name, args.peak_tflops)
    torch.backends.cuda.matmul.allow_tf32 = True
    print(f"gpu_check on {name} (torch {torch.__version__}); bf16 peak {peak or '?'} TFLOP/s; "
          f"compile={'off' if args.no_compile else 'on'}")
    order = ["varlen", "flex", "xformers", "sdpa"]
    rows, skipped = [], []
    for size in args.sizes:
        tokens = SIZES[size]
        avail = usable_backends(device, tokens)
        names = args.backends or sorted(avail, key=lambda n: order.index(n) if n in order else len(order))
        for backend in names:
            reason = avail.get(backend, "not registered")
            if reason:
                skipped.append(f"{size}/{backend}: {reason}")
                continue
            if time.perf_counter() - t0 > args.budget_s:
                skipped.append(f"{size}/{backend}: time budget spent")
                continue
            try:
                row = run_one(size, backend, tokens, device, args.steps, args.warmup, not args.no_compile, False)
            except torch.OutOfMemoryError as exc:
                skipped.append(f"{size}/{backend}: out of memory ({str(exc).splitlines()[0]})")
                torch.cuda.empty_cache()
                continue
            if peak:
                row["mfu"] = row["core_tflops"] / peak
                row["mfu_head"] = (row["core_tflops"] + row["head_tflops"]) / peak
            rows.append(row)
            print(f"{size:>3} {backend:<9} {row['tokens_per_s']:>9.0f} tok/s  step {row['step_s'] * 1e3:7.1f} ms  "
                  f"MFU {row.get('mfu', float('nan')):6.1%}  MFU+head {row.get('mfu_head', float('nan')):6.1%}  "
                  f"peak {row['peak_gib']:5.1f} GiB  warmup {row['warmup_s']:5.1f} s", flush=True)
            torch.cuda.empty_cache()
    for line in skipped:
        print(f"skipped {line}")
    if args.json:
        args.json.write_text(json.dumps({"gpu": name, "rows": rows, "skipped": skipped}, indent=1))
    print(f"total {time.perf_counter() - t0:.0f} s; reference (HRM-Text XL, 16 H100): ≈22.6k tok/s/GPU, ≈40 % MFU")


if __name__ == "__main__":
    main()

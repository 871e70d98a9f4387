"""Forward+backward throughput of every registered core on this machine (CPU by default).

    .venv/bin/python benchmarks/core_throughput.py --hidden 128 --seq-len 82 --batch 32

Prints one row per core: parameters, module calls per pass, calls with gradient, and samples/s for a full
forward + backward of one pass (median of --repeats timed iterations after --warmup).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hrmkit.cores import CORES, build_core
from hrmkit.nn.attn_spec import AttnSpec


def bench(name: str, hidden: int, heads: int, seq_len: int, batch: int, warmup: int, repeats: int,
          device: str, dtype: str | None = None) -> dict[str, float]:
    core = build_core(name, "tiny", hidden_size=hidden, num_heads=heads, max_seq_len=max(seq_len, 256),
                      compute_dtype=dtype).to(device)
    x = torch.randn(batch, seq_len, hidden, device=device)
    spec = AttnSpec()
    times = []
    for it in range(warmup + repeats):
        start = time.perf_counter()
        _, out = core(x, core.initial_state(x), spec)
        out.float().square().mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if it >= warmup:
            times.append(time.perf_counter() - start)
        core.zero_grad(set_to_none=True)
    t = statistics.median(times)
    return {"params": core.num_parameters(), "calls": core.num_calls, "grad_calls": sum(core.grad_calls()),
            "samples_s": batch / t, "ms": t * 1e3}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=82)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cores", nargs="*", default=None)
    p.add_argument("--dtype", default=None, help="compute dtype, e.g. bfloat16 (default: fp32)")
    a = p.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, device {a.device}, threads {torch.get_num_threads()}, hidden {a.hidden}, "
          f"heads {a.heads}, seq_len {a.seq_len}, batch {a.batch}, compute {a.dtype or 'float32'} "
          "(tiny variants' depth and cycles)")
    print(f"{'core':<12}{'params':>10}{'calls':>7}{'w/grad':>8}{'ms/iter':>10}{'samples/s':>12}")
    for name in a.cores or CORES.names():
        r = bench(name, a.hidden, a.heads, a.seq_len, a.batch, a.warmup, a.repeats, a.device, a.dtype)
        print(f"{name:<12}{r['params']:>10,}{r['calls']:>7}{r['grad_calls']:>8}{r['ms']:>10.1f}{r['samples_s']:>12.1f}")


if __name__ == "__main__":
    main()

"""How the training step time grows with recursion depth (H_cycles × L_cycles) and sequence length, HRM and TRM.

    .venv/bin/python benchmarks/scaling.py                 # writes docs/img/scaling.png and prints the table
    .venv/bin/python benchmarks/scaling.py --hidden 128 --batch 16

One step = one full pass of the core (its default gradient horizon: HRM's last L and H call, TRM's last recursion)
on ``[batch, length, hidden]`` inputs, a mean-square loss on the output, and backward; best of --repeats after a
warm-up. Left panel: (H_cycles, L_cycles) from (1, 1) to (4, 6) at --length; right panel: lengths 32..--max-length at
H2/L2. Use it to size runs: the step is linear in the number of module calls (only the calls inside the gradient
horizon pay for backward), and grows with length until attention's quadratic term shows.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from hrmkit.cores import build_core

OUT = Path(__file__).resolve().parent.parent / "docs" / "img" / "scaling.png"
CYCLES = [(1, 1), (1, 2), (2, 2), (2, 4), (3, 4), (4, 4), (4, 6)]


def step_time(core_name: str, h: int, l_: int, length: int, hidden: int, batch: int, repeats: int) -> float:
    torch.manual_seed(0)
    layers = {"H_layers": 2, "L_layers": 2} if core_name == "hrm" else {"num_layers": 2}
    core = build_core(core_name, "tiny", hidden_size=hidden, num_heads=max(1, hidden // 32), H_cycles=h,
                      L_cycles=l_, max_seq_len=length, **layers)
    x = torch.randn(batch, length, hidden)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        _, out = core(x, core.initial_state(x))
        out.float().pow(2).mean().backward()
        core.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - start)
    return min(times)  # the least disturbed run: other load on a shared machine only ever adds time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    lengths = [n for n in (32, 64, 128, 256, 512, 1024, 2048) if n <= args.max_length]
    depth = {c: [step_time(c, h, l_, args.length, args.hidden, args.batch, args.repeats) * 1e3 for h, l_ in CYCLES]
             for c in ("hrm", "trm")}
    seq = {c: [step_time(c, 2, 2, n, args.hidden, args.batch, args.repeats) * 1e3 for n in lengths]
           for c in ("hrm", "trm")}
    print(f"hidden {args.hidden}, 2 layers per stack, batch {args.batch}, {args.threads} thread(s); load average "
          f"{load:.2f} -> {os.getloadavg()[0]:.2f}")
    print("H×L      " + "".join(f"{h}×{l_:<6}" for h, l_ in CYCLES))
    for c in ("hrm", "trm"):
        print(f"{c} ms   " + "".join(f"{t:<8.1f}" for t in depth[c]))
    print("length   " + "".join(f"{n:<8}" for n in lengths))
    for c in ("hrm", "trm"):
        print(f"{c} ms   " + "".join(f"{t:<8.1f}" for t in seq[c]))
    from PIL import Image

    from hrmkit.pictures.charts import render_chart

    left = render_chart({f"{c.upper()} (length {args.length})": [(float(h * l_), t) for (h, l_), t in
                                                                  zip(CYCLES, depth[c])] for c in depth},
                        "Step time (ms) vs recursion depth", x_label="H_cycles x L_cycles")
    right = render_chart({f"{c.upper()} (H2/L2)": [(float(n), t) for n, t in zip(lengths, seq[c])] for c in seq},
                         "Step time (ms) vs sequence length", x_label="sequence length", log_y=None)
    canvas = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), "white")
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

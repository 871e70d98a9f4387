"""Measured peak memory of a training step on the CPU, for the configurations of benchmarks/overhead.py.

    .venv/bin/python benchmarks/memory_cpu.py                      # all four; ~1 minute
    .venv/bin/python benchmarks/memory_cpu.py --configs text-small --steps 5

Each configuration runs in a fresh process (a high-water mark cannot be reset): build the task and batches, read the
resident-set high-water mark, run ``--steps`` Lightning training steps, read it again. The difference is what the
steps needed beyond the model and data (activations of the calls inside the bp horizon, gradients, optimizer state,
allocator slack); ``states`` is the model-state part computed from the parameter count (fp32 weights, gradients and
AdamATan2's two moments). GPU peaks (``torch.cuda.max_memory_allocated``) come from ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MIB = 2**20


def _high_water_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB  # Linux reports KiB


def measure(name: str, steps: int) -> dict[str, float]:
    """Runs in the child process: one configuration's figures."""
    import warnings

    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    sys.path.insert(0, str(HERE))
    from overhead import CONFIGS, make_batches, make_task

    torch.set_num_threads(1)
    kind, core, size = CONFIGS[name]
    task = make_task(kind, core)
    task.configure_model()
    batches = make_batches(kind, size, steps)
    params = sum(p.numel() for p in task.parameters())
    before = _high_water_mib()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False).fit(
            task, DataLoader(batches, batch_size=None))
    return {"params": params, "states_mib": params * 4 * 4 / MIB, "step_peak_mib": _high_water_mib() - before,
            "process_peak_mib": _high_water_mib()}


def main() -> None:
    sys.path.insert(0, str(HERE))
    from overhead import CONFIGS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.steps)))
        return
    print(f"{'config':>14}{'params':>10}{'states MiB':>12}{'step peak MiB':>15}{'process MiB':>13}")
    for name in args.configs:
        out = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:>14}{r['params']:>10,}{r['states_mib']:>12.1f}{r['step_peak_mib']:>15.1f}"
              f"{r['process_peak_mib']:>13.0f}")


if __name__ == "__main__":
    main()

"""Training-step time of a tiny SequenceTask run with MagicNormHealth at its default interval, at every step, and
without it (HRM text-tiny: MagicNorm, 8 calls, 5 with gradient).

    .venv/bin/python benchmarks/magicnorm_overhead.py --steps 300 --repeats 3

The configurations are interleaved (none, default, every step, none, ...) so background load hits them alike. Each
run times every training batch (``on_train_batch_start`` → ``on_train_batch_end``: forward, backward, optimizer and
all callback hooks) after ``--warmup`` batches. The figures are medians over all timed steps, because on a shared
machine other processes add multi-second bursts that swamp a mean; at the default interval the measured and the
other steps are kept apart and amortised as ``((n − 1)·other + measured) / n``. It also times the callback's hooks
alone on an unmeasured step (the "off-step" cost). Per-run means are printed too, for reference.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from hrmkit.callbacks import MagicNormHealth
from hrmkit.cores import build_core
from hrmkit.data import SyntheticDataModule
from hrmkit.tasks import SequenceTask


class StepTimer:
    """Wall time of every training batch, other callbacks' hooks included: :attr:`start` goes first in the
    callback list and :attr:`stop` last (Lightning calls callbacks in list order)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0
        timer = self

        class Start(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
                timer._t0 = time.perf_counter()

        class Stop(Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                timer.times.append(time.perf_counter() - timer._t0)

        self.start, self.stop = Start(), Stop()


def run(every: int | None, steps: int, warmup: int, hidden: int, heads: int, batch: int,
        seq_len: int) -> tuple[list[float], L.Trainer, MagicNormHealth | None]:
    """Seconds of every training batch after ``warmup`` (index 0 = step ``warmup``); ``every=None``: no callback."""
    L.seed_everything(0, verbose=False)
    core = build_core("hrm", "text-tiny", hidden_size=hidden, num_heads=heads, max_seq_len=max(256, seq_len))
    task = SequenceTask(core, vocab_size=16)
    data = SyntheticDataModule("reverse", seq_len=seq_len, vocab_size=16, num_train=batch * (steps + 1), num_val=8,
                               batch_size=batch)
    timer = StepTimer()
    health = None if every is None else MagicNormHealth(every_n_steps=every)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, callbacks=[timer.start, *([health] if health else []), timer.stop])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task, data)
    if len(timer.times) != steps:
        raise RuntimeError(f"timed {len(timer.times)} batches, expected {steps}")
    return timer.times[warmup:], trainer, health


def off_step_hook_cost(trainer: L.Trainer, pl_module: L.LightningModule, calls: int = 20_000) -> float:
    """Seconds per training step spent in MagicNormHealth's hooks on a step it does not measure."""
    cb = MagicNormHealth(every_n_steps=10**9 - 1)  # the trainer's step is never a multiple: always an off step
    start = time.perf_counter()
    for _ in range(calls):
        cb.on_train_batch_start(trainer, pl_module, None, 0)
        cb.on_before_optimizer_step(trainer, pl_module, None)
        cb.on_train_batch_end(trainer, pl_module, None, None, 0)
    return (time.perf_counter() - start) / calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    a = p.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    if a.threads:
        torch.set_num_threads(a.threads)
    every = MagicNormHealth().every_n_steps
    plain: list[float] = []  # every timed step of every run, per configuration
    all_on: list[float] = []
    default_on: list[float] = []  # default interval: steps it measured
    default_off: list[float] = []  # ... and steps it did not
    means: dict[str, list[float]] = {"without": [], "default": [], "every": []}
    trainer = module = None
    for _ in range(a.repeats):  # interleaved, so background load hits every configuration alike
        times, trainer, _ = run(None, a.steps, a.warmup, a.hidden, a.heads, a.batch, a.seq_len)
        plain += times
        means["without"].append(statistics.fmean(times))
        module = trainer.lightning_module
        times, _, _ = run(every, a.steps, a.warmup, a.hidden, a.heads, a.batch, a.seq_len)
        for i, t in enumerate(times, start=a.warmup):
            (default_on if i % every == 0 else default_off).append(t)
        means["default"].append(statistics.fmean(times))
        times, _, _ = run(1, a.steps, a.warmup, a.hidden, a.heads, a.batch, a.seq_len)
        all_on += times
        means["every"].append(statistics.fmean(times))

    base = statistics.median(plain)
    on, off = statistics.median(default_on), statistics.median(default_off)
    amortised = ((every - 1) * off + on) / every
    hook = off_step_hook_cost(trainer, module)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, HRM text-tiny (8 calls, 5 with grad) "
          f"hidden {a.hidden}, batch {a.batch}, seq_len {a.seq_len}; {a.steps} steps ({a.warmup} warm-up) "
          f"x {a.repeats} interleaved repeats")
    rows = [("without callback", base), ("every step (every_n_steps=1)", statistics.median(all_on)),
            (f"every_n_steps={every}: measured steps", on), (f"every_n_steps={every}: other steps", off),
            (f"every_n_steps={every}: amortised", amortised)]
    print("medians over all timed steps (robust to other processes' bursts on a shared machine):")
    for name, t in rows:
        print(f"  {name:<38}{t * 1e3:8.2f} ms/step   x{t / base:.3f}")
    print(f"  hooks on an unmeasured step: {hook * 1e6:.2f} us ({hook / base * 100:.4f} % of a step)")
    print("per-run means (ms/step; sensitive to bursts): " + "; ".join(
        f"{k} {', '.join(f'{m * 1e3:.2f}' for m in v)}" for k, v in means.items()))


if __name__ == "__main__":
    main()

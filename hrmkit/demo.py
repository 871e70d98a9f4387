"""``hrmkit demo``: train a small recursive core on a synthetic task on the CPU and show it working.

Until the puzzle task lands this is the embedded default of ``make demo``: a real Lightning run (no mocks) whose
printed loss must fall and whose held-out sequences must come out right.
"""

from __future__ import annotations

import logging
import time
import warnings

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from rich.table import Table

from hrmkit.cores import build_core
from hrmkit.data.synthetic import SyntheticDataModule, SyntheticTask
from hrmkit.tasks.sequence import SequenceTask


class PrintLoss(Callback):
    """Print the training loss every ``every`` steps (the demo's readable alternative to a progress bar)."""

    def __init__(self, console: Console, every: int) -> None:
        self.console, self.every, self.history = console, every, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        loss = float(outputs["loss"])
        self.history.append(loss)
        if step % self.every == 0 or step == trainer.max_steps:
            self.console.print(f"  step {step:5d}   loss {loss:7.4f}")


def run_demo(core: str = "hrm", variant: str = "tiny", task: SyntheticTask = "reverse", steps: int = 800,
             seq_len: int = 8, vocab_size: int = 10, batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
             bp_steps: int | None = None) -> dict[str, float]:
    """Train ``core`` (a registered name, built from ``variant``) and print the loss curve and solved examples.

    Args:
        core: registered core name (``hrmkit cores`` lists them, plugins included).
        variant: named variant of that core.
        task: synthetic task: copy, reverse or sort.
        steps: optimizer steps.
        seq_len: sequence length.
        vocab_size: token vocabulary.
        batch_size: sequences per step.
        lr: AdamW learning rate.
        seed: global seed (data, init, order).
        bp_steps: gradient horizon override.
    """
    console = Console()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # the demo prints its own progress
    warnings.filterwarnings("ignore", module="lightning")
    L.seed_everything(seed, verbose=False)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    overrides = {} if bp_steps is None else {"bp_steps": bp_steps}
    overrides.setdefault("hidden_size", 64)
    overrides.setdefault("num_heads", 4)
    model = SequenceTask(build_core(core, variant, max_seq_len=max(256, seq_len), **overrides),
                         vocab_size=vocab_size, lr=lr)
    data = SyntheticDataModule(task, seq_len=seq_len, vocab_size=vocab_size, batch_size=batch_size,
                               num_train=steps * batch_size, num_val=512, seed=seed)
    n_params = sum(p.numel() for p in model.parameters())
    console.print(f"[bold]hrmkit demo[/]: core [cyan]{core}[/] ({variant}, {n_params:,} parameters, schedule "
                  f"{''.join(model.core.schedule())}, bp_steps {model.core.bp_steps}) learning to [cyan]{task}[/] "
                  f"{seq_len} tokens")
    printer = PrintLoss(console, every=max(1, steps // 10))
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[printer],
                        num_sanity_val_steps=0, limit_val_batches=1.0, val_check_interval=None,
                        check_val_every_n_epoch=1)
    start = time.perf_counter()
    trainer.fit(model, data)
    metrics = trainer.validate(model, data, verbose=False)[0]
    elapsed = time.perf_counter() - start

    inputs, targets = data.val_set.tensors
    model.eval()
    with torch.no_grad():
        preds = model(inputs[:6])[-1].argmax(-1)
    table = Table(title=f"held-out sequences ({task})")
    for col in ("input", "target", "model", "ok"):
        table.add_column(col)
    for x, y, p in zip(inputs[:6], targets[:6], preds):
        table.add_row(" ".join(map(str, x.tolist())), " ".join(map(str, y.tolist())), " ".join(map(str, p.tolist())),
                      "[green]yes[/]" if torch.equal(y, p) else "[red]no[/]")
    console.print(table)
    first, last = sum(printer.history[:10]) / 10, sum(printer.history[-10:]) / 10
    console.print(f"loss {first:.3f} → {last:.3f} (mean of first/last 10 steps);  held-out exact accuracy "
                  f"[bold]{metrics['val/exact_acc']:.1%}[/], token accuracy {metrics['val/token_acc']:.1%};  "
                  f"{elapsed:.0f} s on the CPU")
    return {"first_loss": first, "last_loss": last, **{k: float(v) for k, v in metrics.items()}}

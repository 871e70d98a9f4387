"""The model summary with real FLOPs: Lightning's table without its FLOPs column, plus the task's App. A count.

Lightning measures FLOPs by running ``example_input_array`` through the model; hrmkit tasks have none (a training
step is an ACT segment or a packed row, not one forward call), so its summary printed ``Total FLOPs: 0`` for every
task. Tasks give ``flops_summary()`` instead (``PuzzleTask``: per sample per training segment; ``TextTask``: per
token), counted as in the HRM-Text paper's App. A (:mod:`hrmkit.cores.flops`). The tasks' ``configure_model`` swaps
the Trainer's summary for this class (:func:`use_flops_summary`), so ``enable_model_summary`` and ``max_depth`` keep
working as before.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.callbacks import RichModelSummary
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count


class FlopsModelSummary(RichModelSummary):
    """Rich model summary whose FLOPs line comes from the task's ``flops_summary()`` (or is left out)."""

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        super().__init__(max_depth, **summarize_kwargs)
        self.flops_line: str | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        describe = getattr(pl_module, "flops_summary", None)
        self.flops_line = describe() if callable(describe) else None
        super().on_fit_start(trainer, pl_module)

    def summarize(self, summary_data: list[tuple[str, list[str]]], total_parameters: int,
                  trainable_parameters: int, model_size: float, total_training_modes: dict[str, int],
                  total_flops: int, **summarize_kwargs: Any) -> None:
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            right = name in ("Params", "Params per Device", "In sizes", "Out sizes")
            table.add_column(name if name else " ", justify="right" if right else "left",
                             style="dim" if not name else None)
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        grid = Table.grid(expand=True)
        grid.add_column()
        grid.add_row(f"[bold]Trainable params[/]: {get_human_readable_count(int(trainable_parameters))}")
        grid.add_row(f"[bold]Non-trainable params[/]: "
                     f"{get_human_readable_count(int(total_parameters - trainable_parameters))}")
        grid.add_row(f"[bold]Total params[/]: {get_human_readable_count(int(total_parameters))}")
        grid.add_row(f"[bold]Total estimated model params size (MB)[/]: {get_formatted_model_size(model_size)}")
        grid.add_row(f"[bold]Modules in train mode[/]: {total_training_modes['train']}")
        grid.add_row(f"[bold]Modules in eval mode[/]: {total_training_modes['eval']}")
        if self.flops_line:
            grid.add_row(f"[bold]Training FLOPs[/]: {self.flops_line}")
        console.print(grid)


def use_flops_summary(trainer: L.Trainer | None) -> None:
    """Swap the Trainer's model summary for a :class:`FlopsModelSummary` with the same ``max_depth`` (tasks call
    this from ``configure_model``, before ``on_fit_start`` prints it); nothing when the summary is off."""
    callbacks = getattr(trainer, "callbacks", None)  # None: no Trainer (or a stand-in without callbacks)
    for i, cb in enumerate(callbacks or []):
        if isinstance(cb, LightningModelSummary) and not isinstance(cb, FlopsModelSummary):
            callbacks[i] = FlopsModelSummary(max_depth=cb._max_depth, **cb._summarize_kwargs)


def format_flops(value: float) -> str:
    """``1.23 GFLOP``-style text for a FLOP count."""
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} FLOP"

"""The ``hrmkit`` command line.

``hrmkit fit|validate|test|predict`` is LightningCLI (YAML recipes, ``class_path`` cores, every Trainer option);
``hrmkit cores``, ``hrmkit demo`` and ``hrmkit data ...`` (dataset builders) are jsonargparse
commands. Plugins are imported before anything parses,
so short class names and Lightning's checkpoint class guard both see them.
"""

from __future__ import annotations

import sys
import warnings

from rich.console import Console
from rich.table import Table

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def list_cores() -> None:
    """List every registered core: name, where it comes from, import path, and its named variants."""
    from hrmkit.cores import CORES

    table = Table(title="hrmkit cores")
    for col in ("name", "source", "class", "variants"):
        table.add_column(col)
    for entry in CORES.entries():
        if entry.error:
            table.add_row(entry.name, entry.source, f"[red]failed to load: {entry.error}[/]", "")
            continue
        cls = CORES.get(entry.name)
        table.add_row(entry.name, entry.source, entry.target, " ".join(sorted(getattr(cls, "variants", {}))))
    Console(width=160).print(table)


def demo(minutes: float = 12.0, out_dir: str = "runs/demo", seed: int = 0, max_steps: int = -1) -> None:
    """Generate Sudoku, train a small recursive model (TRM) on the CPU, and show it solving held-out puzzles.

    Args:
        minutes: training time budget.
        out_dir: dataset, checkpoints, metrics and pictures go here (the dataset is reused when present).
        seed: seeds data, initialisation and order.
        max_steps: optional step limit (-1: only the time budget).
    """
    from hrmkit.demo import run_demo

    run_demo(minutes=minutes, out_dir=out_dir, seed=seed, max_steps=max_steps)


def lightning_cli(args: list[str]) -> None:
    """LightningCLI over any LightningModule / LightningDataModule (subclass mode: pick them in the recipe)."""
    from lightning.pytorch.cli import LightningCLI

    LightningCLI(args=args, save_config_kwargs={"overwrite": True},
                 parser_kwargs={"parser_mode": "omegaconf"} if _has_omegaconf() else None)


def _has_omegaconf() -> bool:
    try:
        import omegaconf  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    from hrmkit.registry import load_plugins

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # `hrmkit cores` shows failed plugins itself
        failed = load_plugins()
    if failed and (not argv or argv[0] != "cores"):
        for name, err in failed.items():
            print(f"hrmkit: plugin {name} failed to load ({err}); everything else still works", file=sys.stderr)
    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        lightning_cli(argv)
        return None
    from jsonargparse import auto_cli

    from hrmkit.eval.arc_runner import evaluate_arc
    from hrmkit.plot import plot
    from hrmkit.show import show
    from hrmkit.text_commands import export_hf_command, generate_text

    auto_cli({"cores": list_cores, "demo": demo, "data": _data_commands(), "show": show, "plot": plot,
              "eval": {"arc": evaluate_arc}, "generate": generate_text, "export": {"hf": export_hf_command}},
             args=argv, as_positional=False)
    return None


def _data_commands() -> dict:
    """``hrmkit data <builder>``: each builder function's signature and docstring are its command line."""
    from hrmkit.data.puzzles.arc import build_arc
    from hrmkit.data.puzzles.hrm_import import import_hrm
    from hrmkit.data.puzzles.maze import build_maze
    from hrmkit.data.puzzles.sudoku import build_sudoku
    from hrmkit.data.text import build_gsm_symbolic, build_text, import_data_io

    return {"sudoku": build_sudoku, "maze": build_maze, "arc": build_arc, "import-hrm": import_hrm,
            "text": build_text, "data-io": import_data_io, "gsm-symbolic": build_gsm_symbolic}


if __name__ == "__main__":
    main()

"""The ``hrmkit`` command line.

``hrmkit fit|validate|test|predict`` is LightningCLI (:class:`hrmkit.commands.lightning.HrmkitCLI`: YAML recipes,
``class_path`` cores, every Trainer option); the other commands (``cores``, ``demo``, ``data ...``, ``show``,
``plot``, ``eval ...``, ``generate``, ``export ...``, ``transfer``) are functions whose signature and docstring are
their command line (jsonargparse). This module imports nothing heavy: the command table names each function by
import path, and only the command that runs is imported, so ``hrmkit --help``, ``hrmkit cores`` and
``hrmkit data sudoku --help`` start without torch or Lightning (benchmarks/cli_startup.py).

User errors (bad flags or YAML keys, unknown cores, missing datasets, invalid settings) end with one
``hrmkit: error: ...`` paragraph and exit status 2; ``HRMKIT_DEBUG=1`` re-raises them with the full traceback.
A SIGTERM or SIGUSR1 during training saves a checkpoint and exits 143 (lightning 2.6.6 would exit 0), so schedulers
requeue preempted runs; ``fit --ckpt_path last`` resumes from the newest valid checkpoint (hrmkit.checkpointing).
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

#: Every command: a ``module:function`` path (its signature is the command line), a group of them, or None for the
#: LightningCLI subcommands; with the one-line description ``hrmkit --help`` prints without importing anything.
COMMANDS: dict[str, tuple[str | dict[str, str] | None, str]] = {
    "fit": (None, "Train a model from a recipe: hrmkit fit -c recipe.yaml [--ckpt_path last] (LightningCLI)."),
    "validate": (None, "Evaluate a checkpoint on the validation split: -c recipe.yaml --ckpt_path run/x.ckpt."),
    "test": (None, "Evaluate a checkpoint on the test split: -c recipe.yaml --ckpt_path run/x.ckpt."),
    "predict": (None, "Run a model's predict_step over the data module: -c recipe.yaml --ckpt_path run/x.ckpt."),
    "cores": ("hrmkit.commands.cores:list_cores", "List every registered core, where it comes from and its variants."),
    "demo": ("hrmkit.commands.demo:demo",
             "Generate Sudoku, train a small TRM on the CPU, and show it solving puzzles."),
    "data": ({"sudoku": "hrmkit.data.puzzles.sudoku:build_sudoku", "maze": "hrmkit.data.puzzles.maze:build_maze",
              "arc": "hrmkit.data.puzzles.arc:build_arc", "import-hrm": "hrmkit.data.puzzles.hrm_import:import_hrm",
              "text": "hrmkit.commands.text:data_text_command", "data-io": "hrmkit.data.text.data_io:import_data_io",
              "gsm-symbolic": "hrmkit.data.text.gsm_symbolic:build_gsm_symbolic"},
             "Build a dataset: sudoku, maze, arc, import-hrm, text, data-io, gsm-symbolic."),
    "show": ("hrmkit.commands.show:show", "Write PNG pictures of puzzles, with a model's answers if given."),
    "plot": ("hrmkit.commands.plot:plot", "Render loss, accuracy and MagicNorm charts from a run's metrics.csv files."),
    "eval": ({"arc": "hrmkit.eval.arc_runner:evaluate_arc", "text": "hrmkit.eval.text:evaluate_text",
              "lm-eval": "hrmkit.eval.lm_eval_command:evaluate_lm_eval",
              "scaling": "hrmkit.eval.scaling_runner:evaluate_scaling"},
             "Task evaluations of checkpoints: arc (voting, pass@k), text (benchmarks), lm-eval (harness tasks), "
             "scaling (accuracy against segments / samples / compute)."),
    "generate": ("hrmkit.commands.text:generate_text", "Answer instructions with a text model (checkpoint or export)."),
    "export": ({"hf": "hrmkit.commands.text:export_hf_command"},
               "Export a text model: hf (config, weights, tokenizer, generation config)."),
    "transfer": ("hrmkit.commands.transfer:transfer_command",
                 "Copy the core of one trained model into another model and print what matched."),
}


def __getattr__(name: str) -> Any:  # ``from hrmkit.cli import HrmkitCLI`` without importing Lightning up front
    if name == "HrmkitCLI":
        from hrmkit.commands.lightning import HrmkitCLI

        return HrmkitCLI
    raise AttributeError(f"module 'hrmkit.cli' has no attribute {name!r}")


def lightning_cli(args: list[str]) -> None:
    """``hrmkit fit|validate|test|predict``: :class:`hrmkit.commands.lightning.HrmkitCLI` over ``args``."""
    from hrmkit.commands.lightning import run

    run(args)


def help_text() -> str:
    """``hrmkit --help``: every command with its one-line description."""
    width = max(map(len, COMMANDS)) + 2
    lines = ["usage: hrmkit <command> [options]    (hrmkit <command> --help shows a command's options)", "",
             "commands:"]
    lines += [f"  {name:<{width}}{text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "User errors exit with status 2 and one `hrmkit: error:` paragraph (HRMKIT_DEBUG=1: traceback).",
              "Docs: docs/getting-started.md, docs/cli.md."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``hrmkit`` script: run one command, turning user errors into a short message."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(help_text())
        return None
    try:
        _dispatch(argv)
    except SystemExit as err:  # Lightning's SIGTERMException is a SystemExit
        if not _is_sigterm(err):
            raise
        print("hrmkit: stopped by SIGTERM/SIGUSR1 after saving a checkpoint (resume with --ckpt_path last)",
              file=sys.stderr)
        sys.exit(143)
    except Exception as err:
        if os.environ.get("HRMKIT_DEBUG") == "1" or not _is_user_error(err):
            raise
        message, hint = _describe(err, argv)
        print(f"hrmkit: error: {message}\nhint: {hint}", file=sys.stderr)
        sys.exit(2)
    return None


def _is_sigterm(err: BaseException) -> bool:
    if "lightning" not in sys.modules:
        return False
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return isinstance(err, SIGTERMException)


def _sigusr1_as_sigterm() -> None:
    """Outside SLURM (whose Lightning handler requeues on SIGUSR1), treat SIGUSR1 (the usual "you will be
    preempted" warning) as SIGTERM: Lightning then stops at the next batch and the run saves a checkpoint."""
    import signal

    from lightning.fabric.plugins.environments import SLURMEnvironment

    if hasattr(signal, "SIGUSR1") and not SLURMEnvironment.detect():
        signal.signal(signal.SIGUSR1, lambda signum, frame: os.kill(os.getpid(), signal.SIGTERM))


def _load_plugins() -> None:
    """Import plugins before LightningCLI parses (short class names and the checkpoint class guard need them)."""
    from hrmkit.registry import load_plugins

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        failed = load_plugins()
    for name, err in failed.items():
        print(f"hrmkit: plugin {name} failed to load ({err}); everything else still works", file=sys.stderr)


def _function(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _command(group: str, path: str) -> Any:
    """The function behind a command; dataset builders print a one-line summary after a build (hrmkit.data.summary)."""
    fn = _function(path)
    if group == "data":
        from hrmkit.data.summary import with_summary

        fn = with_summary(fn)
    return fn


def _selected(argv: list[str]) -> dict[str, Any]:
    """The jsonargparse command dict for ``argv``: only the named command (and group member) is imported."""
    name = argv[0]
    target = COMMANDS[name][0]
    if isinstance(target, str):
        return {name: _command(name, target)}
    member = argv[1] if len(argv) > 1 else None
    if member in target:
        return {name: {member: _command(name, target[member])}}
    return {name: {k: _command(name, v) for k, v in target.items()}}  # `hrmkit data --help`, or a typo: list them all


def _dispatch(argv: list[str]) -> None:
    """Hand ``argv`` to LightningCLI or to the one jsonargparse command it names."""
    name = argv[0]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise _UnknownCommand(f"unknown command {name!r}{hint} (commands: {', '.join(COMMANDS)})")
    if name in LIGHTNING_SUBCOMMANDS:
        _load_plugins()
        _sigusr1_as_sigterm()
        lightning_cli(argv)
        return
    if name == "demo":
        _sigusr1_as_sigterm()
    from jsonargparse import auto_cli

    auto_cli(_selected(argv), args=argv, as_positional=False, exit_on_error=False, prog="hrmkit")


class _UnknownCommand(ValueError):
    """``hrmkit <unknown>``."""


_HRMKIT_DIR = str(Path(__file__).resolve().parent)
_NOISE = re.compile(r"^\s*(-\s*)?(Subtypes:|Given value( type)?:|Errors:|Does not validate against any of the Union|"
                    r"Expected a <class 'NoneType'>)")


def _is_user_error(err: BaseException) -> bool:
    """Errors a user fixes in the command line, the recipe or the data (not bugs: those keep their traceback)."""
    from jsonargparse import ArgumentError

    from hrmkit.errors import HrmkitInputError
    from hrmkit.registry import PluginError

    if isinstance(err, (ArgumentError, FileNotFoundError, FileExistsError, NotADirectoryError, PluginError,
                        HrmkitInputError, _UnknownCommand)):
        return True
    if isinstance(err, (ValueError, KeyError)):  # only hrmkit's own checks, which name the setting to fix
        frames = traceback.extract_tb(err.__traceback__)
        return bool(frames) and frames[-1].filename.startswith(_HRMKIT_DIR)
    return False


def _describe(err: BaseException, argv: list[str]) -> tuple[str, str]:
    """One-paragraph message and a hint line for a user error."""
    from jsonargparse import ArgumentError

    command = " ".join(argv[:2] if argv[:1] in (["data"], ["eval"], ["export"]) else argv[:1]) or "<command>"
    if isinstance(err, ArgumentError):
        lines = [ln.strip().removeprefix("- ") for ln in str(err).splitlines() if ln.strip() and not _NOISE.match(ln)]
        message = " ".join(lines)
        if re.search(r'(key "core"|\bcore\b).*(import path|class_path|not a subclass|No module|not found)', message,
                     re.IGNORECASE | re.DOTALL):
            message += f" (registered cores: {_core_names()}; `hrmkit cores` lists them)"
        return _shorten(message), f"see the accepted options with `hrmkit {command} --help`"
    text = err.args[0] if isinstance(err, KeyError) and len(err.args) == 1 else str(err)
    message = f"{type(err).__name__}: {command_line_spelling(text)}"
    return _shorten(message), "rerun with HRMKIT_DEBUG=1 for the full traceback"


def command_line_spelling(text: str) -> str:
    """Python keyword spelling in library messages (``overwrite=True``) as the flag a user types
    (``--overwrite true``)."""
    return re.sub(r"\b([a-z][a-z0-9_]*)=(True|False)\b", lambda m: f"--{m[1]} {m[2].lower()}", text)


def _core_names() -> str:
    """``name (import path)`` of every registered core that loaded; the names work as class paths too."""
    from hrmkit.cores import CORES

    names = ", ".join(f"{e.name} ({e.target})" for e in CORES.entries() if not e.error)
    return f"{names}; give a name, name:variant (e.g. hrm:tiny) or an import path"


def _shorten(message: str, limit: int = 1200) -> str:
    """Collapse whitespace and cap the length, so the message stays one paragraph."""
    message = re.sub(r"\s+", " ", message).strip()
    return message if len(message) <= limit else message[: limit - 3] + "..."


if __name__ == "__main__":
    main()

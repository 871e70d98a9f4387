"""The ``hrmkit`` command line.

``hrmkit fit|validate|test|predict`` is LightningCLI (YAML recipes, ``class_path`` cores, every Trainer option);
``hrmkit cores``, ``hrmkit demo`` and ``hrmkit data ...`` (dataset builders) are jsonargparse
commands. Plugins are imported before anything parses,
so short class names and Lightning's checkpoint class guard both see them.

User errors (bad flags or YAML keys, unknown cores, missing datasets, invalid settings) end with one
``hrmkit: error: ...`` paragraph and exit status 2; ``HRMKIT_DEBUG=1`` re-raises them with the full traceback.
A SIGTERM or SIGUSR1 during training saves a checkpoint and exits 143 (lightning 2.6.6 would exit 0), so schedulers
requeue preempted runs; ``fit --ckpt_path last`` resumes from the newest valid checkpoint (hrmkit.checkpointing).
"""

from __future__ import annotations

import os
import re
import sys
import traceback
import warnings
from pathlib import Path

from rich.console import Console
from rich.table import Table

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def list_cores(sizes: bool = False) -> None:
    """List every registered core: name, where it comes from, import path, and its named variants.

    Args:
        sizes: instead, one row per core × variant with its parameter count, schedule and gradient horizon (built
            on the meta device: no memory, a few seconds).
    """
    from hrmkit.cores import CORES

    if sizes:
        from hrmkit.cores.sizes import core_sizes

        table = Table(title="hrmkit core sizes")
        for col in ("core", "variant", "parameters", "schedule", "bp_steps"):
            table.add_column(col, justify="right" if col in ("parameters", "bp_steps") else "left")
        for row in core_sizes():
            table.add_row(row.core, row.variant, f"{row.parameters:,}", row.schedule, str(row.bp_steps))
        Console(width=160).print(table)
        return
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

    parser_kwargs: dict = {"exit_on_error": False}  # parse errors raise, so main() can print them briefly
    if _has_omegaconf():
        parser_kwargs["parser_mode"] = "omegaconf"

    class HrmkitCLI(LightningCLI):
        def before_fit(self) -> None:
            """Crash-safe fit: atomic checkpoints, RNG states, a checkpoint on SIGTERM/SIGUSR1/crash, and
            ``--ckpt_path last`` resolved to the newest valid checkpoint (see hrmkit.checkpointing)."""
            from hrmkit.checkpointing import prepare_fit

            config = self.config_init[self.subcommand]
            config["ckpt_path"] = prepare_fit(self.trainer, config.get("ckpt_path"))

        def _checked_loads(self) -> None:
            """validate/test/predict --ckpt_path: torn files and pickled code are refused with a clear error."""
            from hrmkit.checkpointing import install_checkpoint_io

            install_checkpoint_io(self.trainer)
            # fit adds RNGState (exact resume of the RNG streams); evaluation never resumes training, so Lightning's
            # note that the checkpoint was made with an RNGState callback this Trainer lacks is noise here.
            warnings.filterwarnings("ignore", message=r".*Please add the following callbacks: \['RNGState'\]")

        def _instantiate_trainer(self, config: dict, callbacks: list) -> object:
            """Without TensorBoard, Lightning's default logger is a CSVLogger in default_root_dir, announced by a
            notice about tensorboardX; name that logger explicitly (same folder, same files), so there is no notice."""
            if config.get("logger") in (None, True) and not config.get("barebones"):
                config["logger"] = _default_logger(config.get("default_root_dir"))
            return super()._instantiate_trainer(config, callbacks)

        before_validate = before_test = _checked_loads

        def before_predict(self) -> None:
            """Checked loads, and a PredictionWriter (JSONL next to the checkpoint's run) unless the recipe has a
            prediction writer already (hrmkit.callbacks.predictions)."""
            from hrmkit.callbacks.predictions import add_default_writer

            self._checked_loads()
            add_default_writer(self.trainer)

        def _parse_ckpt_path(self) -> None:
            """LightningCLI reads an explicit --ckpt_path's hyper-parameters before any hook: check the file first."""
            from hrmkit.checkpointing import check_checkpoint

            sub = self.config.get("subcommand")
            path = self.config[sub].get("ckpt_path") if sub else None
            if path and Path(path).is_file():
                check_checkpoint(path)
            super()._parse_ckpt_path()

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        HrmkitCLI(args=args, save_config_kwargs={"overwrite": True}, parser_kwargs=parser_kwargs)


def _default_logger(root: str | None) -> object:
    """What ``logger=True`` resolves to: Lightning's own choice (TensorBoard) when it is installed, else the
    CSVLogger Lightning would fall back to, created here so its tensorboardX notice is not printed."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        return True
    from lightning.pytorch.loggers import CSVLogger

    return CSVLogger(save_dir=root or os.getcwd())


def _has_omegaconf() -> bool:
    try:
        import omegaconf  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``hrmkit`` script: run one subcommand, turning user errors into a short message."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    _sigusr1_as_sigterm()
    try:
        _dispatch(argv)
    except SIGTERMException:
        print("hrmkit: stopped by SIGTERM/SIGUSR1 (resume with --ckpt_path last)", file=sys.stderr)
        sys.exit(143)
    except Exception as err:
        if os.environ.get("HRMKIT_DEBUG") == "1" or not _is_user_error(err):
            raise
        message, hint = _describe(err, argv)
        print(f"hrmkit: error: {message}\nhint: {hint}", file=sys.stderr)
        sys.exit(2)
    return None


def _sigusr1_as_sigterm() -> None:
    """Outside SLURM (whose Lightning handler requeues on SIGUSR1), treat SIGUSR1 (the usual "you will be
    preempted" warning) as SIGTERM: Lightning then stops at the next batch and the run saves a checkpoint."""
    import signal

    from lightning.fabric.plugins.environments import SLURMEnvironment

    if hasattr(signal, "SIGUSR1") and not SLURMEnvironment.detect():
        signal.signal(signal.SIGUSR1, lambda signum, frame: os.kill(os.getpid(), signal.SIGTERM))


def _dispatch(argv: list[str]) -> None:
    """Load plugins, then hand ``argv`` to LightningCLI or to the jsonargparse commands."""
    from hrmkit.registry import load_plugins

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # `hrmkit cores` shows failed plugins itself
        failed = load_plugins()
    if failed and (not argv or argv[0] != "cores"):
        for name, err in failed.items():
            print(f"hrmkit: plugin {name} failed to load ({err}); everything else still works", file=sys.stderr)
    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        lightning_cli(argv)
        return
    from jsonargparse import auto_cli

    from hrmkit.commands.transfer import transfer_command
    from hrmkit.eval.arc_runner import evaluate_arc
    from hrmkit.eval.lm_eval_command import evaluate_lm_eval
    from hrmkit.eval.scaling_runner import evaluate_scaling
    from hrmkit.eval.text import evaluate_text
    from hrmkit.plot import plot
    from hrmkit.show import show
    from hrmkit.text_commands import export_hf_command, generate_text

    auto_cli({"cores": list_cores, "demo": demo, "data": _data_commands(), "show": show, "plot": plot,
              "eval": {"arc": evaluate_arc, "text": evaluate_text, "lm-eval": evaluate_lm_eval,
                       "scaling": evaluate_scaling},
              "generate": generate_text,
              "export": {"hf": export_hf_command}, "transfer": transfer_command},
             args=argv, as_positional=False, exit_on_error=False)


_HRMKIT_DIR = str(Path(__file__).resolve().parent)
_NOISE = re.compile(r"^\s*(-\s*)?(Subtypes:|Given value( type)?:|Errors:|Does not validate against any of the Union|"
                    r"Expected a <class 'NoneType'>)")


def _is_user_error(err: BaseException) -> bool:
    """Errors a user fixes in the command line, the recipe or the data (not bugs: those keep their traceback)."""
    from jsonargparse import ArgumentError

    from hrmkit.errors import HrmkitInputError
    from hrmkit.registry import PluginError

    if isinstance(err, (ArgumentError, FileNotFoundError, FileExistsError, NotADirectoryError, PluginError,
                        HrmkitInputError)):
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
    message = f"{type(err).__name__}: {text}"
    return _shorten(message), "rerun with HRMKIT_DEBUG=1 for the full traceback"


def _core_names() -> str:
    """``name (import path)`` of every registered core that loaded."""
    from hrmkit.cores import CORES

    return ", ".join(f"{e.name} ({e.target})" for e in CORES.entries() if not e.error)


def _shorten(message: str, limit: int = 1200) -> str:
    """Collapse whitespace and cap the length, so the message stays one paragraph."""
    message = re.sub(r"\s+", " ", message).strip()
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _data_commands() -> dict:
    """``hrmkit data <builder>``: each builder function's signature and docstring are its command line."""
    from hrmkit.data.puzzles.arc import build_arc
    from hrmkit.data.puzzles.hrm_import import import_hrm
    from hrmkit.data.puzzles.maze import build_maze
    from hrmkit.data.puzzles.sudoku import build_sudoku
    from hrmkit.data.summary import with_summary
    from hrmkit.data.text import build_gsm_symbolic, import_data_io
    from hrmkit.text_commands import data_text_command

    builders = {"sudoku": build_sudoku, "maze": build_maze, "arc": build_arc, "import-hrm": import_hrm,
                "text": data_text_command, "data-io": import_data_io, "gsm-symbolic": build_gsm_symbolic}
    return {name: with_summary(fn) for name, fn in builders.items()}  # one summary line per build


if __name__ == "__main__":
    main()

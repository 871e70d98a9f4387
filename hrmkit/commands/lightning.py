"""``hrmkit fit|validate|test|predict``: LightningCLI with hrmkit's defaults (see docs/cli.md).

On top of LightningCLI (YAML recipes, ``class_path`` models, every Trainer option) :class:`HrmkitCLI` adds:

* **Short core names.** ``class_path: ut`` / ``--model.init_args.core ut`` resolve through the core registry
  (plugins included); ``--model.init_args.core hrm:tiny`` builds exactly that variant (every argument set, none
  carried over from the recipe's previous core). When a plain class swap lets jsonargparse carry arguments from the
  previous core, the carried ones are listed. Every ``fit`` prints one line naming the core it built.
* **Crash-safe fit** (hrmkit.checkpointing): atomic checkpoints, a checkpoint on SIGTERM/SIGUSR1/crash (with a line
  that says so), ``--ckpt_path last`` resolved to the newest valid checkpoint, and the resumed run logging into
  the same logger version, so ``hrmkit plot`` draws one curve.
* **Evaluation next to the run.** ``validate/test/predict --ckpt_path`` log beside that checkpoint's run (unless
  ``--trainer.default_root_dir`` is given), and options given on the command line (``eval_segments``, ...) win over
  the hyper-parameters stored in the checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningCLI

#: The command-line keys that name the model's core.
CORE_KEYS = ("--model.init_args.core", "--model.core")
_EVAL_SUBCOMMANDS = ("validate", "test", "predict")


class HrmkitCLI(LightningCLI):
    """LightningCLI with short core names, crash-safe fits and evaluation beside the checkpoint's run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        install_short_core_names()
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        parser_kwargs = kwargs.setdefault("parser_kwargs", {})
        parser_kwargs.setdefault("exit_on_error", False)  # parse errors raise, so main() can print them briefly
        parser_kwargs.setdefault("prog", "hrmkit")
        if _has_omegaconf():
            parser_kwargs.setdefault("parser_mode", "omegaconf")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            super().__init__(*args, **kwargs)

    # -- parsing --------------------------------------------------------------------------------------------------
    def parse_arguments(self, parser: Any, args: Any) -> None:
        self._argv = list(args) if isinstance(args, (list, tuple)) else []
        expanded, swaps = expand_core_specs(self._argv)
        if swaps:  # report before parsing for real: --print_config exits inside the parse
            plain = [a for a in expanded if not a.startswith("--print_config")]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    parsed = parser.parse_args(plain)
            except (Exception, SystemExit):  # the real parse below reports the error
                parsed = None
            for index in swaps if parsed is not None else ():
                report_carried(parser, plain, index, parsed)
        super().parse_arguments(parser, expanded if self._argv else args)

    def _parse_ckpt_path(self) -> None:
        """Check the file first (torn files and pickled code are refused); then read its hyper-parameters as
        LightningCLI does, except that model options given on the command line keep their value."""
        from hrmkit.checkpointing import check_checkpoint

        sub = self.config.get("subcommand")
        path = self.config[sub].get("ckpt_path") if sub else None
        if not path or not Path(path).is_file():
            return
        check_checkpoint(path)
        explicit = {key: self.config[sub].get(key) for key in _explicit_model_keys(self._argv)
                    if self.config[sub].get(key) is not None}
        super()._parse_ckpt_path()
        for key, value in explicit.items():
            self.config[sub][key] = value

    def before_instantiate_classes(self) -> None:
        sub = self.config.get("subcommand")
        if sub in _EVAL_SUBCOMMANDS:
            config = self.config[sub]
            ckpt = config.get("ckpt_path")
            if ckpt and Path(ckpt).is_file() and not _given(self._argv, "--trainer.default_root_dir"):
                config["trainer.default_root_dir"] = str(run_root(ckpt))

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """Lightning's default logger is TensorBoard when it is installed; hrmkit also keeps a ``metrics.csv``
        (:class:`~lightning.pytorch.loggers.CSVLogger`, first, in the same version folder) for ``hrmkit plot``."""
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

        trainer = super().instantiate_trainer(**kwargs)
        logger = self._get(self.config_init, "trainer", default={}).get("logger")
        if logger in (None, True) and trainer.loggers and isinstance(trainer.loggers[0], TensorBoardLogger):
            default = trainer.loggers[0]
            trainer.loggers = [CSVLogger(default.save_dir, name=default.name), default]
            self._paired_loggers = True
        return trainer

    def _align_logger_versions(self) -> None:
        """The CSV and TensorBoard loggers hrmkit pairs write into one ``version_N`` folder."""
        if getattr(self, "_paired_loggers", False):
            csv, tb = self.trainer.loggers[:2]
            tb._version = csv.version

    # -- hooks ----------------------------------------------------------------------------------------------------
    def before_fit(self) -> None:
        """Crash-safe fit (hrmkit.checkpointing), the resumed run's logger version, the resolved core's line."""
        from hrmkit.checkpointing import prepare_fit

        config = self.config_init[self.subcommand]
        config["ckpt_path"] = prepare_fit(self.trainer, config.get("ckpt_path"))
        if not any(isinstance(cb, RecordLogVersion) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(RecordLogVersion())
        continue_logger_version(self.trainer, config["ckpt_path"])
        self._align_logger_versions()
        _explain_exception_checkpoints(self.trainer)
        core = getattr(self.model, "core", None)
        if core is not None and self.trainer.is_global_zero and hasattr(core, "schedule"):
            from hrmkit.cores.spec import describe_core

            print(f"hrmkit: {describe_core(core)}", flush=True)

    def _checked_loads(self) -> None:
        """validate/test/predict --ckpt_path: torn files and pickled code are refused with a clear error."""
        from hrmkit.checkpointing import install_checkpoint_io

        install_checkpoint_io(self.trainer)
        self._align_logger_versions()
        # fit adds RNGState (exact resume of the RNG streams); evaluation never resumes training, so Lightning's
        # note that the checkpoint was made with an RNGState callback this Trainer lacks is noise here.
        warnings.filterwarnings("ignore", message=r".*Please add the following callbacks: \['RNGState'\]")

    before_validate = before_test = _checked_loads

    def before_predict(self) -> None:
        """Checked loads, and a PredictionWriter (JSONL next to the checkpoint's run) unless the recipe has a
        prediction writer already (hrmkit.callbacks.predictions)."""
        from hrmkit.callbacks.predictions import add_default_writer

        self._checked_loads()
        add_default_writer(self.trainer)

    def _instantiate_trainer(self, config: dict, callbacks: list) -> Any:
        """Without TensorBoard, Lightning's default logger is a CSVLogger in default_root_dir, announced by a
        notice about tensorboardX; name that logger explicitly (same folder, same files), so there is no notice."""
        if config.get("logger") in (None, True) and not config.get("barebones"):
            config["logger"] = _default_logger(config.get("default_root_dir"))
        return super()._instantiate_trainer(config, callbacks)


def run(args: list[str]) -> None:
    """``hrmkit <fit|validate|test|predict> ...``."""
    HrmkitCLI(args=args)


def _default_logger(root: str | None) -> Any:
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


# -- core names ---------------------------------------------------------------------------------------------------
_installed = False


def install_short_core_names() -> None:
    """Let jsonargparse resolve registered core names (``hrm``, ``ut``, plugins' names) wherever it resolves a class
    name for a core argument. jsonargparse looks short names up among the loaded subclasses by class name only; this
    adds the registry's names in front of that lookup (for subclasses of RecursiveCore only)."""
    global _installed
    if _installed:
        return
    from jsonargparse import _typehints

    from hrmkit.cores.base import RecursiveCore
    from hrmkit.cores.spec import registered_path

    original = _typehints.resolve_class_path_by_name

    def resolve(cls: Any, name: str) -> str:
        bases = cls if isinstance(cls, tuple) else (cls,)
        if isinstance(name, str) and "." not in name and any(
                isinstance(b, type) and issubclass(b, RecursiveCore) for b in bases):
            found = registered_path(name)
            if found is not None:
                return found
        return original(cls, name)

    _typehints.resolve_class_path_by_name = resolve
    _installed = True


def _core_value(args: list[str], i: int) -> tuple[str | None, int]:
    """The value of a core flag at ``args[i]`` and the index holding it (``--k=v`` or ``--k v``)."""
    arg = args[i]
    for key in CORE_KEYS:
        if arg.startswith(key + "="):
            return arg[len(key) + 1:], i
        if arg == key and i + 1 < len(args):
            return args[i + 1], i + 1
    return None, i


def expand_core_specs(args: list[str]) -> tuple[list[str], list[int]]:
    """Rewrite ``--model.init_args.core NAME:VARIANT`` into the variant's full ``{class_path, init_args}`` (so no
    argument of the previous core survives); return the new list and the indices of plain core swaps (a class name,
    import path or bare registry name), whose carried arguments :func:`report_carried` lists."""
    from hrmkit.cores.spec import parse_core_spec

    out = list(args)
    swaps = []
    for i in range(len(out)):
        value, at = _core_value(out, i)
        if value is None or value.lstrip().startswith(("{", "[")) or value.endswith((".yaml", ".yml", ".json")):
            continue
        parsed = parse_core_spec(value)
        if parsed is not None and parsed[1] is not None:
            path, _, init_args = parsed
            full = json.dumps({"class_path": path, "init_args": init_args})
            out[at] = full if at != i else out[i].split("=", 1)[0] + "=" + full
        else:
            swaps.append(i)
    return out, swaps


def report_carried(parser: Any, args: list[str], index: int, config: Namespace) -> list[str]:
    """Print (and return) the core arguments jsonargparse carried over a class swap at ``args[index]``: values of the
    previous core that the new class also accepts, kept although the command line did not set them."""
    from hrmkit.cores.spec import core_defaults

    sub = args[0] if args and not args[0].startswith("-") else None
    key = "model.init_args.core"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            before = parser.parse_args(args[:index])
    except (Exception, SystemExit):  # the prefix alone may not parse; then there is nothing to compare
        return []
    prev = (before[sub] if sub else before).get(key)
    new = (config[sub] if sub else config).get(key)
    if not isinstance(prev, Namespace) or not isinstance(new, Namespace) or prev.class_path == new.class_path:
        return []
    from jsonargparse import _util

    try:
        defaults = core_defaults(_util.import_object(new.class_path))
    except Exception:  # an unimportable class already failed parsing; nothing to report
        return []
    later = {k.split(".init_args.", 1)[-1] for k in _explicit_model_keys(args[index + 1:])}
    prev_args, new_args = dict(vars(prev.get("init_args") or Namespace())), dict(vars(new.get("init_args") or {}))
    carried = [f"{k}={v!r}" for k, v in new_args.items()
               if k in prev_args and prev_args[k] == v and defaults.get(k, object()) != v
               and f"core.init_args.{k}" not in later and f"core.{k}" not in later]
    if carried:
        old_name, new_name = prev.class_path.rsplit(".", 1)[-1], new.class_path.rsplit(".", 1)[-1]
        print(f"hrmkit: the core changed from {old_name} to {new_name}; jsonargparse carried over from {old_name}: "
              f"{', '.join(carried)}. Name a variant (e.g. --model.init_args.core hrm:tiny) to build only that "
              "variant, or set these explicitly.", file=sys.stderr, flush=True)
    return carried


# -- command-line keys ----------------------------------------------------------------------------------------------
def _given(argv: list[str], key: str) -> bool:
    return any(a == key or a.startswith(key + "=") for a in argv)


def _explicit_model_keys(argv: list[str]) -> list[str]:
    """``model.init_args.X`` config keys that the command line sets (``--model.X`` spelled either way)."""
    keys = []
    for arg in argv:
        m = re.match(r"^--model\.(?!class_path\b)([\w.]+?)(=|$)", arg)
        if m and m[1] not in ("init_args", "dict_kwargs"):
            rest = m[1].removeprefix("init_args.")
            keys.append(f"model.init_args.{rest}")
    return keys


# -- where runs log -------------------------------------------------------------------------------------------------
def run_root(ckpt: str | Path) -> Path:
    """The folder a checkpoint's run logged under: its logger's ``save_dir`` as recorded in the checkpoint, else
    from the path: ``<root>/checkpoints/x.ckpt`` and ``<root>/lightning_logs/version_N/checkpoints/x.ckpt`` both
    give ``<root>``."""
    import torch

    record = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get(LOG_KEY)
    if isinstance(record, dict) and record.get("save_dir"):
        return Path(record["save_dir"])
    folder = Path(ckpt).resolve().parent
    if folder.name == "checkpoints":
        folder = folder.parent
    if folder.name.startswith("version_") and folder.parent.parent != folder.parent:
        folder = folder.parent.parent
    return folder


#: Checkpoint key under which :class:`RecordLogVersion` keeps the logger folder a run wrote to.
LOG_KEY = "hrmkit_log"


class RecordLogVersion(Callback):
    """Remember in every checkpoint which logger folder the run logs to, so a resume continues that version even
    when checkpoints live elsewhere (``ModelCheckpoint(dirpath=...)``)."""

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        logger = trainer.loggers[0] if trainer.loggers else None
        if logger is not None and logger.save_dir is not None:
            checkpoint[LOG_KEY] = {"save_dir": str(Path(logger.save_dir).resolve()), "name": str(logger.name),
                                   "version": logger.version}


def checkpoint_version(ckpt: str | Path, logger: Any) -> int | str | None:
    """The logger version a checkpoint was written under, when that is this logger's folder; else None. Read from
    the checkpoint's :data:`LOG_KEY` record, else from its path (``.../<name>/version_N/checkpoints/x.ckpt``)."""
    import torch

    path = Path(ckpt).resolve()
    if logger.save_dir is None:
        return None
    record = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(LOG_KEY)
    if isinstance(record, dict):
        same = (record.get("save_dir") == str(Path(logger.save_dir).resolve())
                and record.get("name") == str(logger.name))
        return record.get("version") if same else None
    if path.parent.name != "checkpoints":
        return None
    version_dir = path.parent.parent
    if version_dir.parent.resolve() != (Path(logger.save_dir) / str(logger.name)).resolve():
        return None
    name = version_dir.name
    return int(name[len("version_"):]) if re.fullmatch(r"version_\d+", name) else name


#: ``metrics.csv`` of an earlier segment of a resumed run is kept as ``metrics.part-<k>.csv`` (``hrmkit plot``
#: stitches them in order).
PART_PATTERN = "metrics.part-{}.csv"


def continue_logger_version(trainer: Any, ckpt_path: str | None) -> int | str | None:
    """Resuming from a checkpoint of this run: log into the same version (CSV and TensorBoard loggers whose
    version was not set explicitly). The earlier ``metrics.csv`` is kept as ``metrics.part-<k>.csv``, since
    Lightning's CSV writer would delete it."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    if not ckpt_path or not Path(ckpt_path).is_file():
        return None
    chosen = None
    for logger in trainer.loggers:
        if not isinstance(logger, (CSVLogger, TensorBoardLogger)) or logger._version is not None:
            continue
        version = checkpoint_version(ckpt_path, logger)
        if version is None:
            continue
        logger._version = version
        chosen = version
        if isinstance(logger, CSVLogger):
            metrics = Path(logger.log_dir) / "metrics.csv"
            if metrics.is_file() and trainer.is_global_zero:
                k = 0
                while (metrics.parent / PART_PATTERN.format(k)).exists():
                    k += 1
                metrics.rename(metrics.parent / PART_PATTERN.format(k))
            warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    return chosen


class _ExceptionCheckpointLine(logging.Filter):
    """Rewrite Lightning's ``An SIGTERMException was raised with message: <blank>, saved checkpoint to X``."""

    def __init__(self, trainer: Any) -> None:
        super().__init__()
        self.trainer = trainer

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        m = re.match(r"An (\w+) was raised with message:\s*(.*?), saved checkpoint to (.*)$", text, re.DOTALL)
        if m:
            kind, message, path = m[1], m[2].strip(), m[3].strip()
            what = ("stopped by SIGTERM/SIGUSR1 (preemption or kill)" if kind == "SIGTERMException"
                    else f"stopped by {kind}" + (f": {message}" if message else ""))
            record.msg = (f"hrmkit: {what} at step {self.trainer.global_step}; saved a checkpoint to {path} "
                          "(resume with --ckpt_path last)")
            record.args = ()
        return True


def _explain_exception_checkpoints(trainer: Any) -> None:
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    for f in list(log.filters):
        if isinstance(f, _ExceptionCheckpointLine):
            log.removeFilter(f)
    log.addFilter(_ExceptionCheckpointLine(trainer))

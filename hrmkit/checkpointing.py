"""Checkpoints that survive crashes: atomic writes, torn-file detection, safe loading, and picking the latest valid one.

Why: a run killed while writing (preemption, OOM killer, a full disk) must never leave a half-written ``last.ckpt``
that the next ``--ckpt_path last`` trusts, and loading a checkpoint must never run code from it.

* :class:`AtomicCheckpointIO` is a Lightning ``CheckpointIO`` plugin: it writes ``<dir>/.<name>.tmp-<pid>``, flushes
  and ``fsync``\\ s it, renames it over the target (atomic on POSIX) and ``fsync``\\ s the directory, so a reader sees
  the old file or the new one, never a mix. Loading checks the file first (:func:`check_checkpoint`) and unpickles
  with ``weights_only=True``: only tensors, containers and primitives, plus the few globals in :data:`SAFE_GLOBALS`.
* :func:`check_checkpoint` recognises a torn or truncated file (a PyTorch checkpoint is a zip archive whose
  directory sits at the end; every member carries a CRC) and raises :class:`~hrmkit.errors.CheckpointError`.
* :func:`latest_valid_checkpoint` walks candidate files newest first and returns the first that passes the check, so a
  corrupt ``last.ckpt`` falls back to the previous checkpoint instead of ending the run. Sharded (DCP) checkpoint
  directories are candidates too, checked by :func:`hrmkit.sharded_checkpoints.check_sharded`.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from hrmkit.errors import CheckpointError
from hrmkit.sharded_checkpoints import COMPLETE_MARKER, REQUIRED_FILES, check_sharded, pid_alive, read_sharded

#: Globals a hrmkit/Lightning checkpoint may hold beyond what ``weights_only=True`` already allows.
SAFE_GLOBALS: list[Any] = []

CHECKPOINT_SUFFIX = ".ckpt"


def _is_local(path: _PATH) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


def _fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    _remove_stale_temps(path)


def _remove_stale_temps(path: Path) -> None:
    """Delete ``.<name>.tmp-<pid>`` files left by writers that were killed mid-write (their process is gone)."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            stale.unlink(missing_ok=True)


def check_checkpoint(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a complete PyTorch zip checkpoint (CRC of every member) or a
    sharded (DCP) checkpoint directory that hrmkit finished writing (:func:`~hrmkit.sharded_checkpoints.check_sharded`:
    completion marker, every shard's size, and the CRCs of its ``meta.pt``)."""
    path = Path(path)
    if path.is_dir():
        check_sharded(path)
        check_checkpoint(path / "meta.pt")
        return
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: checkpoint is empty (0 bytes): the write that made it never finished")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: checkpoint is truncated or corrupt ({size} bytes; {type(e).__name__}: {e}); "
                              "it cannot be loaded, use an earlier checkpoint") from None
    if bad is not None:
        raise CheckpointError(f"{path}: checkpoint member {bad!r} fails its CRC check: the file is corrupt")
    if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        raise CheckpointError(f"{path}: a zip archive but not a PyTorch checkpoint (no data.pkl among {names[:5]})")


@contextlib.contextmanager
def _weights_only(path: str | os.PathLike) -> Iterator[None]:
    """Unpickling under ``weights_only=True`` (plus :data:`SAFE_GLOBALS`), with a refused object or an unreadable
    file turned into a :class:`CheckpointError` naming ``path``."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            yield
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: refused to unpickle a non-tensor object ({first}); hrmkit loads checkpoints "
                              "with weights_only=True. If you trust the file, allowlist the class with "
                              "torch.serialization.add_safe_globals([...])") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: checkpoint cannot be read ({type(e).__name__}: {e})") from None


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = None) -> dict[str, Any]:
    """Check ``path`` and load it with ``weights_only=True`` (plus :data:`SAFE_GLOBALS`): never runs pickled code."""
    check_checkpoint(path)
    if Path(path).is_dir():
        raise CheckpointError(f"{path}: a sharded (DCP) checkpoint directory, written by the FSDP2 strategy: resume it "
                              "with the same strategy and world size, or convert it to one file with "
                              "torch.distributed.checkpoint.format_utils.dcp_to_torch_save")
    with _weights_only(path):
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, got {type(checkpoint).__name__}")
    return checkpoint


def load_task(cls: type[pl.LightningModule], path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``cls.load_from_checkpoint`` after :func:`check_checkpoint`, with ``weights_only=True`` (plus
    :data:`SAFE_GLOBALS`): what every hrmkit command that reads a trained model uses. ``path`` may be a sharded
    (FSDP2) checkpoint directory: it is read on this process alone."""
    check_checkpoint(path)
    source: Any = path
    if is_sharded_dir(path):  # an FSDP2 run's directory: its full tensors, in the single-file layout
        source = io.BytesIO()
        torch.save(read_sharded(path), source)
        source.seek(0)
    with _weights_only(path):
        return cls.load_from_checkpoint(source, map_location=map_location, weights_only=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO``: atomic local writes (temp + fsync + rename) and checked, weights-only loads.

    Remote paths (``s3://`` ...) keep Lightning's own behaviour: object stores publish whole objects anyway.
    ``weights_only=False`` passed explicitly by the caller is honoured (a deliberate opt-in for a trusted file).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, str(path).removeprefix("file://"))

    def load_checkpoint(self, path: _PATH, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if weights_only is False or not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        if map_location is None:
            map_location = lambda storage, loc: storage  # noqa: E731  (Lightning's default: keep devices)
        return load_checkpoint_file(str(path).removeprefix("file://"), map_location)


def is_sharded_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a sharded (DCP) checkpoint directory, finished or not (an HF model directory is not)."""
    path = Path(path)
    return path.is_dir() and any((path / name).exists() for name in (COMPLETE_MARKER, *REQUIRED_FILES))


def _saved_at(path: Path) -> int:
    """When a checkpoint was finished: a file's modification time; a sharded directory's completion marker's
    (the directory's own, for one without a marker: it is refused by the check anyway)."""
    marker = path / COMPLETE_MARKER
    return (marker if path.is_dir() and marker.is_file() else path).stat().st_mtime_ns


def candidate_checkpoints(locations: Iterable[str | os.PathLike]) -> list[Path]:
    """Every ``*.ckpt`` among ``locations`` (files or folders holding them), newest first: single files and
    sharded (DCP) checkpoint directories alike. Hidden names (temporary files and directories) are never candidates."""
    found: dict[Path, int] = {}
    for loc in locations:
        p = Path(loc)
        if p.is_file() or is_sharded_dir(p):
            entries = [p]  # the location is a checkpoint itself (an OnExceptionCheckpoint file or directory)
        else:
            entries = sorted(p.glob(f"*{CHECKPOINT_SUFFIX}")) if p.is_dir() else []
        for f in entries:
            if f.name.startswith(".") or not (f.is_file() or f.is_dir()):
                continue
            found[f.resolve()] = _saved_at(f)
    return sorted(found, key=lambda f: (found[f], f.name), reverse=True)


def latest_valid_checkpoint(locations: Iterable[str | os.PathLike]) -> Path | None:
    """The newest checkpoint among ``locations`` that passes :func:`check_checkpoint`; skipped files are warned
    about by name. None when there is no valid one."""
    for path in candidate_checkpoints(locations):
        try:
            check_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(f"skipping an unusable checkpoint: {e}", stacklevel=2)
            continue
        return path
    return None


def checkpoint_locations(trainer: pl.Trainer) -> list[Path]:
    """Where this trainer's checkpoints live: every ``ModelCheckpoint`` folder (its ``dirpath``, or Lightning's
    default ``<root>/checkpoints`` / ``<save_dir>/<name>/version_*/checkpoints`` of every earlier run) and every
    ``OnExceptionCheckpoint`` file."""
    locations: list[Path] = []
    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint):
            if cb.dirpath is not None:
                locations.append(Path(cb.dirpath))
            elif trainer.loggers and trainer.loggers[0].save_dir is not None:
                logger = trainer.loggers[0]
                locations += sorted((Path(logger.save_dir) / str(logger.name)).glob("*/checkpoints"))
            else:
                locations.append(Path(trainer.default_root_dir) / "checkpoints")
        elif isinstance(cb, OnExceptionCheckpoint):
            locations.append(Path(cb.ckpt_path))
    return locations


def install_checkpoint_io(trainer: pl.Trainer) -> None:
    """Use :class:`AtomicCheckpointIO` where the strategy has Lightning's plain ``TorchCheckpointIO`` (a custom
    plugin chosen in the recipe is left alone)."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def prepare_fit(trainer: pl.Trainer, ckpt_path: str | None) -> str | None:
    """Make a ``fit`` crash-safe and return the checkpoint to resume from.

    Installs :class:`AtomicCheckpointIO` (when the strategy uses Lightning's plain ``TorchCheckpointIO``), adds
    :class:`~hrmkit.callbacks.rng_state.RNGState` and :class:`~hrmkit.callbacks.preemption.PreemptionSync` when
    absent, turns on ``save_on_exception`` for every ``ModelCheckpoint`` (so SIGTERM, SIGUSR1 and crashes leave a
    checkpoint and refresh ``last.ckpt``), and resolves
    ``ckpt_path="last"`` to the newest checkpoint that passes :func:`check_checkpoint` among
    :func:`checkpoint_locations` (None, with Lightning's warning, when there is none yet).
    """
    from hrmkit.callbacks.preemption import PreemptionSync
    from hrmkit.callbacks.rng_state import RNGState

    install_checkpoint_io(trainer)
    for needed in (RNGState, PreemptionSync):
        if not any(isinstance(cb, needed) for cb in trainer.callbacks):
            trainer.callbacks.append(needed())
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and not cb.save_weights_only:
            cb.save_on_exception = True
    if ckpt_path != "last":
        return ckpt_path
    locations = checkpoint_locations(trainer)
    found = latest_valid_checkpoint(locations)
    if found is None and candidate_checkpoints(locations):
        raise CheckpointError(f"--ckpt_path last: every checkpoint in {', '.join(map(str, locations))} is torn or "
                              "corrupt (see the warnings above); pass an explicit --ckpt_path or remove them")
    return str(found) if found is not None else "last"

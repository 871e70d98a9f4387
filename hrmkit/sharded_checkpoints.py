"""Sharded (DCP) checkpoint directories that are complete or invisible: a completion marker, its check, and the
atomic swap of a finished directory into place.

Why: an FSDP2 checkpoint is a directory written by every rank at once (one ``__<rank>_0.distcp`` shard each,
``.metadata`` and ``meta.pt`` from rank 0, the EMA's own shards under ``ema/``). A run killed while writing it, or a
disk that filled up, would leave a directory that looks like a checkpoint and fails deep inside DCP on every rank.
hrmkit therefore writes the directory under a hidden temporary name, then writes :data:`COMPLETE_MARKER` (the size
of every file, after an ``fsync`` of each) **last**, and only then renames it into place. :func:`check_sharded`
re-reads the marker and every file's size and parses each DCP index with an allowlist (:func:`read_index`), so a
truncated shard, a missing ``.metadata``, an index naming anything but DCP's own classes, or a directory without the
marker is refused with a :class:`~hrmkit.errors.CheckpointError` naming the file, before any rank opens it.

No dependency on the rest of hrmkit beyond :mod:`hrmkit.errors`: both :mod:`hrmkit.checkpointing` (which picks the
checkpoint to resume from) and :mod:`hrmkit.parallel` (which writes them) import it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

from hrmkit.errors import CheckpointError

#: Written last into a finished sharded checkpoint: ``{"format": 1, "files": {relative path: size in bytes}}``.
COMPLETE_MARKER = ".hrmkit-complete.json"
#: Files every sharded checkpoint written by Lightning's ``ModelParallelStrategy`` has (DCP index, rank-0 state).
REQUIRED_FILES = (".metadata", "meta.pt")
TEMP_INFIX = ".tmp-"
_RENAME_EXCHANGE = 2  # renameat2 flag (Linux >= 3.15): swap two paths atomically


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def write_completion_marker(directory: str | os.PathLike) -> None:
    """``fsync`` every file under ``directory`` and record its size in :data:`COMPLETE_MARKER` (written last)."""
    directory = Path(directory)
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER):
        _fsync(path)
        files[path.relative_to(directory).as_posix()] = path.stat().st_size
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise CheckpointError(f"{directory}: the sharded save wrote no {', '.join(missing)}; not marking it complete")
    marker = directory / COMPLETE_MARKER
    with open(marker, "w") as f:
        json.dump({"format": 1, "files": files}, f, indent=0)
        f.flush()
        os.fsync(f.fileno())
    # the new directory entries (marker, shards in ema/) survive a power cut only once their folders are synced too
    for folder in {marker.parent} | {(directory / name).parent for name in files}:
        _fsync(folder)


def check_sharded(directory: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``directory`` is a sharded checkpoint that hrmkit finished writing:
    its marker is present and every file it lists exists with the recorded size."""
    directory = Path(directory)
    marker = directory / COMPLETE_MARKER
    if not marker.is_file():
        present = sorted(p.name for p in directory.iterdir())[:6] if directory.is_dir() else []
        raise CheckpointError(
            f"{directory}: sharded checkpoint has no completion marker {COMPLETE_MARKER} (holds {present}): the save "
            "that wrote it did not finish, or it was written outside hrmkit. If you know it is complete, mark it "
            "with hrmkit.sharded_checkpoints.write_completion_marker")
    try:
        files = json.loads(marker.read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not an object")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{marker}: unreadable completion marker ({type(e).__name__}: {e})") from None
    for name, size in files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing from the sharded checkpoint (its marker lists it, {size} bytes)")
        actual = path.stat().st_size
        if actual != size:
            raise CheckpointError(f"{path}: shard is {actual} bytes, the checkpoint's marker says {size}: it is "
                                  "truncated or was overwritten; use an earlier checkpoint")
    # sizes alone miss a crafted index of the right length: parse each with the allowlist before any rank unpickles
    for index in sorted(name for name in files if Path(name).name == ".metadata"):
        read_index(directory / index)


#: What a DCP index (``.metadata``) may name when unpickled: its own dataclasses and enum, shard locations, tensor
#: sizes, dtypes and layouts, and the checkpoint path. Anything else (a callable that would run) is refused.
_INDEX_MODULES = ("torch.distributed.checkpoint.metadata",)
_INDEX_GLOBALS = {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
                  ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
                  *(("pathlib", name) for name in ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"))}


class _Refused(pickle.UnpicklingError):
    pass


class _IndexUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        import torch

        if not (module in _INDEX_MODULES or (module, name) in _INDEX_GLOBALS
                or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype))):
            raise _Refused(f"global {module}.{name} is not allowed in a DCP index")
        return super().find_class(module, name)


def read_index(path: str | os.PathLike) -> Any:
    """Unpickle a DCP index (``<checkpoint>/.metadata``) allowing only the classes an index holds, so a crafted one
    cannot run code (PyTorch's own reader uses plain ``pickle``). Raises :class:`CheckpointError` naming the file."""
    import torch.distributed.checkpoint.filesystem  # noqa: F401  (registers the classes the index names)

    try:
        with open(path, "rb") as f:
            return _IndexUnpickler(f).load()
    except _Refused as e:
        raise CheckpointError(f"{path}: refused to read the sharded checkpoint's index: {e}") from None
    except (pickle.UnpicklingError, OSError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise CheckpointError(f"{path}: unreadable sharded checkpoint index ({type(e).__name__}: {e})") from None


def temp_name(target: Path, token: str) -> Path:
    """Hidden sibling of ``target`` that a save writes into (never a resume candidate: its name starts with '.')."""
    return target.with_name(f".{target.name}{TEMP_INFIX}{token}")


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap ``a`` and ``b`` (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    return False  # EINVAL/ENOSYS (filesystem or kernel without it): fall back to two renames


def replace_directory(tmp: Path, target: Path) -> None:
    """Put the finished ``tmp`` at ``target``. An existing ``target`` (``last.ckpt``) is swapped atomically where
    the kernel allows it, else moved aside first; the old one is deleted only once the new one is in place."""
    if target.exists() or target.is_symlink():
        if _exchange(tmp, target):  # after the swap ``tmp`` holds the old checkpoint: delete it
            shutil.rmtree(tmp) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink()
        else:
            # no swap: the old one waits aside under a hidden name with the writer's token (so remove_stale_temps
            # clears it if this process dies here) and is deleted only once the new one is in place
            aside = target.with_name(f".{target.name}.old{TEMP_INFIX}{tmp.name.rsplit(TEMP_INFIX, 1)[-1]}")
            os.replace(target, aside)
            os.replace(tmp, target)
            shutil.rmtree(aside) if aside.is_dir() and not aside.is_symlink() else aside.unlink()
    else:
        os.replace(tmp, target)
    _fsync(target.parent)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a writer that is gone left its temporary file behind)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def remove_stale_temps(folder: Path) -> None:
    """Delete the hidden temporary checkpoint directories in ``folder`` whose writer (the pid in the token) is gone."""
    for stale in folder.glob(f".*{TEMP_INFIX}*"):
        pid = stale.name.rsplit(TEMP_INFIX, 1)[-1].split("-", 1)[0]  # the token starts with the writer's pid
        if stale.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def dcp_load(state: dict[str, Any], path: Path, no_dist: bool = False) -> None:
    """``torch.distributed.checkpoint.load`` that never runs code from the checkpoint: the index is read with
    :func:`~hrmkit.sharded_checkpoints.read_index` and the non-tensor entries (optimizer ``param_groups``) with
    ``weights_only=True`` (PyTorch's reader and planner unpickle both without restriction; tensors it already loads
    weights-only). ``no_dist``: read on this process alone, without collectives (any rank, any world size)."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

    class Reader(dcp.FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
            metadata = read_index(self._get_metadata_path(kwargs.get("rank")))
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    class Planner(DefaultLoadPlanner):
        def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
            safe = torch.load(value, weights_only=True)  # re-serialised: what the base class unpickles is ours
            buffer = io.BytesIO()
            torch.save(safe, buffer)
            buffer.seek(0)
            super().load_bytes(read_item, buffer)

    dcp.load(state, storage_reader=Reader(str(path)), planner=Planner(), no_dist=no_dist)

def read_sharded(directory: str | os.PathLike) -> dict[str, Any]:
    """A finished sharded checkpoint as the dict a single-file one holds (``meta.pt``'s entries plus a full
    ``state_dict``), read on this process alone: what ``init_from`` and ``hrmkit.load`` need from an FSDP2 run.

    Only the model tensors are read (the optimizer shards and the EMA's stay on disk); the directory is checked first
    (:func:`check_sharded`), and nothing is unpickled beyond tensors, primitives and DCP's index classes."""
    import torch
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    directory = Path(directory)
    check_sharded(directory)
    try:
        meta = torch.load(directory / "meta.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable meta.pt is the same error to the user
        raise CheckpointError(f"{directory / 'meta.pt'}: unreadable ({type(e).__name__}: {e})") from None
    prefix = "state_dict."
    tensors = {key[len(prefix):]: torch.empty(tuple(item.size), dtype=item.properties.dtype)
               for key, item in read_index(directory / ".metadata").state_dict_metadata.items()
               if key.startswith(prefix) and isinstance(item, TensorStorageMetadata)}
    if not tensors:
        raise CheckpointError(f"{directory}: the sharded checkpoint holds no model tensors ('state_dict.*')")
    state = {"state_dict": tensors}
    dcp_load(state, directory, no_dist=True)
    return {**(meta if isinstance(meta, dict) else {}), "state_dict": state["state_dict"]}

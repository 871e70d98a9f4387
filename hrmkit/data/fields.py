"""Shared plumbing of hrmkit's on-disk datasets (puzzle and text): typed metadata fields, reading
``metadata.json`` and locating intact LitData splits. Every error names the file and the field or chunk."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from hrmkit.errors import HrmkitInputError

METADATA_FILE = "metadata.json"


def field_error(error: type[Exception], where: str, name: str, msg: str) -> Exception:
    return error(f"{where}: field {name!r}: {msg}")


def get_field(data: Mapping[str, Any], where: str, name: str, kind: type | tuple[type, ...], prefix: str = "",
              error: type[Exception] = HrmkitInputError) -> Any:
    """``data[name]`` checked to be of ``kind`` (bools never pass as ints), else ``error`` naming ``where``."""
    label = prefix + name
    if name not in data:
        raise field_error(error, where, label, "missing")
    value = data[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise field_error(error, where, label, f"expected {names}, got {type(value).__name__} {value!r}")
    return value


def split_counts(data: Any, where: str, split: str, known: Collection[str], counts: Sequence[str],
                 error: type[Exception]) -> dict[str, int]:
    """The ``counts`` fields of the metadata object ``splits.<split>`` as integers >= 0, after refusing a non-object
    and any field outside ``known``: the checks every dataset format's per-split statistics begin with."""
    prefix = f"splits.{split}."
    if not isinstance(data, dict):
        raise field_error(error, where, prefix[:-1], f"expected an object, got {type(data).__name__}")
    for key in data:
        if key not in known:
            raise field_error(error, where, prefix + key, "unknown field")
    values = {k: get_field(data, where, k, int, prefix, error) for k in counts}
    for key, value in values.items():
        if value < 0:
            raise field_error(error, where, prefix + key, f"must be >= 0, got {value}")
    return values


def load_metadata_json(data_dir: str | os.PathLike, kind: str, build_hint: str,
                       error: type[Exception] = HrmkitInputError) -> tuple[Any, Path]:
    """The decoded ``<data_dir>/metadata.json`` and its path; a missing file says how to build the dataset."""
    path = Path(data_dir) / METADATA_FILE
    if not path.is_file():
        hint = "" if Path(data_dir).is_dir() else f" ({data_dir} does not exist)"
        raise FileNotFoundError(f"no {kind} dataset metadata at {path}{hint}; build one first, e.g. `{build_hint}`")
    try:
        return json.loads(path.read_text()), path
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON: {e}") from e


def litdata_split_dir(data_dir: str | os.PathLike, split: str, kind: str,
                      error: type[Exception] = HrmkitInputError) -> Path:
    """The LitData directory of ``split``, checked to hold an ``index.json`` and intact chunk files."""
    path = Path(data_dir) / split
    if not (path / "index.json").is_file():
        raise FileNotFoundError(f"{kind} dataset split {split!r} is missing or incomplete: no {path / 'index.json'}")
    check_chunks(path, error)
    return path


def check_chunks(path: str | os.PathLike, error: type[Exception] = HrmkitInputError) -> None:
    """Compare every chunk listed in a LitData ``index.json`` with the file on disk (a stat per chunk, no reads),
    so a truncated or missing chunk fails up front with its name instead of as a decode error mid-epoch."""
    path = Path(path)
    index_path = path / "index.json"
    try:
        chunks = json.loads(index_path.read_text())["chunks"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise error(f"{index_path}: not a LitData index ({type(e).__name__}: {e})") from e
    for i, chunk in enumerate(chunks):
        file = path / str(chunk.get("filename", ""))
        expected = chunk.get("chunk_bytes")
        if not file.is_file():
            raise error(f"{index_path}: chunk {i} ({file.name}) is missing; rebuild the dataset")
        if isinstance(expected, int) and file.stat().st_size != expected:
            raise error(f"{file}: chunk {i} holds {file.stat().st_size} bytes but index.json lists {expected}: "
                        "the file is truncated or corrupt; rebuild the dataset")


def swap_into_place(tmp: Path, target: Path) -> None:
    """Rename a finished build ``tmp`` to ``target``; an existing ``target`` is moved aside first and deleted only
    once the new one is in place (restored if the rename fails), so a dataset is never half-replaced."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f"{target.name}.old-", dir=target.parent))
    os.replace(target, old / "data")
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old / "data", target)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)

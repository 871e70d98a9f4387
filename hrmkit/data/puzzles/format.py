"""On-disk format of hrmkit puzzle datasets: ``metadata.json`` plus one LitData directory per split.

Layout::

    <out>/metadata.json      PuzzleMetadata (validated on load)
    <out>/train/, <out>/test/  LitData optimized chunks, one sample per *group*

A group is an original puzzle with all its stored augmented versions; a version (a "puzzle" in the reference) has up
to ``E`` examples (input/label pairs; 1 for Sudoku and Maze, several for ARC). One sample holds::

    inputs, labels       uint8 [V, E, L]   token ids (rows past num_examples[v] are pad_id)
    num_examples         int16 [V]
    puzzle_identifiers   int32 [V]
    group                int               index of the group in its split
    tag                  int               index into metadata.tag_names (difficulty level, source subset)

Storing groups (not examples) keeps the reference sampler cheap: "pick a group, then a random version of it" is one
read. Datasets are built in ``<out>.tmp-XXXX`` and renamed into place, so a failed build never leaves a partial one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hrmkit.data.fields import (
    field_error,
    get_field,
    litdata_split_dir,
    load_metadata_json,
    split_counts,
    swap_into_place,
)
from hrmkit.errors import HrmkitInputError

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
SPLITS = ("train", "test")
DEFAULT_CHUNK_BYTES = "8MB"


class DatasetFormatError(HrmkitInputError):
    """A dataset file or source record breaks the format; the message names the file and the record or field."""


@dataclass(frozen=True)
class SplitStats:
    """Sizes of one split; ``mean_puzzle_examples`` and ``total_groups`` define an epoch (spec §3.3)."""

    total_groups: int
    total_puzzles: int
    total_examples: int
    mean_puzzle_examples: float
    max_puzzle_examples: int


@dataclass(frozen=True)
class PuzzleMetadata:
    """Everything a model and a loader need to know about a built dataset (``<out>/metadata.json``)."""

    task: str
    vocab_size: int
    seq_len: int
    pad_id: int = 0
    ignore_label_id: int = 0
    blank_identifier_id: int = 0
    num_puzzle_identifiers: int = 1
    tag_names: list[str] = field(default_factory=lambda: ["all"])
    splits: dict[str, SplitStats] = field(default_factory=dict)
    builder: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    seed: int = 0
    num_aug: int = 0
    build_args: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "metadata") -> PuzzleMetadata:
        """Validate a decoded JSON object; errors name ``where`` (the file) and the field."""
        return _metadata_from_dict(data, where)

    def split(self, name: str) -> SplitStats:
        if name not in self.splits:
            raise KeyError(f"dataset has no {name!r} split (splits: {sorted(self.splits)})")
        return self.splits[name]


def _fail(where: str, name: str, msg: str) -> DatasetFormatError:
    return field_error(DatasetFormatError, where, name, msg)


def _get(data: Mapping[str, Any], where: str, name: str, kind: type | tuple[type, ...], prefix: str = "") -> Any:
    return get_field(data, where, name, kind, prefix, DatasetFormatError)


def _split_from_dict(data: Any, where: str, name: str) -> SplitStats:
    prefix = f"splits.{name}."
    known = {f.name for f in dataclasses.fields(SplitStats)}
    ints = split_counts(data, where, name, known,
                        ("total_groups", "total_puzzles", "total_examples", "max_puzzle_examples"), DatasetFormatError)
    mean = float(_get(data, where, "mean_puzzle_examples", (int, float), prefix))
    if not ints["total_groups"] <= ints["total_puzzles"] <= ints["total_examples"]:
        raise _fail(where, prefix + "total_puzzles",
                    f"need total_groups <= total_puzzles <= total_examples, got {ints['total_groups']}, "
                    f"{ints['total_puzzles']}, {ints['total_examples']}")
    if ints["total_puzzles"] and abs(mean - ints["total_examples"] / ints["total_puzzles"]) > 1e-6 * max(1.0, mean):
        raise _fail(where, prefix + "mean_puzzle_examples",
                    f"{mean} disagrees with total_examples / total_puzzles = "
                    f"{ints['total_examples'] / ints['total_puzzles']}")
    return SplitStats(mean_puzzle_examples=mean, **ints)


def _metadata_from_dict(data: Any, where: str) -> PuzzleMetadata:
    if not isinstance(data, dict):
        raise DatasetFormatError(f"{where}: expected a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(PuzzleMetadata)}
    for key in data:
        if key not in known:
            raise _fail(where, key, "unknown field")
    version = _get(data, where, "format_version", int)
    if version != FORMAT_VERSION:
        raise _fail(where, "format_version", f"this hrmkit reads format {FORMAT_VERSION}, the dataset is {version}; "
                                             "rebuild it with this hrmkit or upgrade hrmkit")
    task = _get(data, where, "task", str)
    ints = {k: _get(data, where, k, int) for k in ("vocab_size", "seq_len", "pad_id", "ignore_label_id",
                                                   "blank_identifier_id", "num_puzzle_identifiers", "seed", "num_aug")}
    for key in ("vocab_size", "seq_len", "num_puzzle_identifiers"):
        if ints[key] < 1:
            raise _fail(where, key, f"must be >= 1, got {ints[key]}")
    for key in ("pad_id", "ignore_label_id"):
        if not 0 <= ints[key] < ints["vocab_size"]:
            raise _fail(where, key, f"must be a token id in 0..{ints['vocab_size'] - 1}, got {ints[key]}")
    if not 0 <= ints["blank_identifier_id"] < ints["num_puzzle_identifiers"]:
        raise _fail(where, "blank_identifier_id",
                    f"must be in 0..{ints['num_puzzle_identifiers'] - 1}, got {ints['blank_identifier_id']}")
    if ints["num_aug"] < 0:
        raise _fail(where, "num_aug", f"must be >= 0, got {ints['num_aug']}")
    tag_names = _get(data, where, "tag_names", list)
    if not tag_names or not all(isinstance(t, str) and t for t in tag_names):
        raise _fail(where, "tag_names", f"expected a non-empty list of non-empty strings, got {tag_names!r}")
    raw_splits = _get(data, where, "splits", dict)
    splits = {name: _split_from_dict(value, where, name) for name, value in raw_splits.items()}
    builder = _get(data, where, "builder", dict)
    for key in ("name", "version"):
        if key not in builder:
            raise _fail(where, f"builder.{key}", "missing")
    build_args = dict(_get(data, where, "build_args", dict))
    source = _get(data, where, "source", str)
    return PuzzleMetadata(task=task, tag_names=list(tag_names), splits=splits, builder=dict(builder), source=source,
                          build_args=build_args, format_version=version, **ints)


def read_metadata(data_dir: str | os.PathLike) -> PuzzleMetadata:
    """Load and validate ``<data_dir>/metadata.json``."""
    data, path = load_metadata_json(data_dir, "puzzle", f"hrmkit data sudoku --out_dir {data_dir}",
                                    DatasetFormatError)
    return PuzzleMetadata.from_dict(data, where=str(path))


def split_dir(data_dir: str | os.PathLike, split: str) -> Path:
    """The LitData directory of ``split``, checked to hold an ``index.json`` and intact chunk files."""
    return litdata_split_dir(data_dir, split, "puzzle", DatasetFormatError)


def iter_groups(data_dir: str | os.PathLike, split: str) -> Iterator[dict[str, Any]]:
    """Every stored group of ``split`` in on-disk order (tests, inspection and tools; training uses the loaders)."""
    from litdata import StreamingDataset

    ds = StreamingDataset(str(split_dir(data_dir, split)), shuffle=False, drop_last=False)
    for i in range(len(ds)):
        yield ds[i]


# ---------------------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class PuzzleGroup:
    """One original puzzle and its versions, as handed to :func:`write_puzzle_dataset`."""

    inputs: np.ndarray  # uint8 [V, E, L]
    labels: np.ndarray  # uint8 [V, E, L]
    num_examples: np.ndarray  # int16 [V]
    puzzle_identifiers: np.ndarray  # int32 [V]
    tag: int = 0


_RECORD_KEYS = ("inputs", "labels", "num_examples", "puzzle_identifiers")


def as_group(record: PuzzleGroup | Mapping[str, Any], where: str = "group") -> PuzzleGroup:
    """A :class:`PuzzleGroup` from itself or from a sample-shaped dict (its ``group`` key is ignored: the writer
    numbers groups in the order it receives them)."""
    if isinstance(record, PuzzleGroup):
        return record
    if not isinstance(record, Mapping):
        raise DatasetFormatError(f"{where}: expected a PuzzleGroup or a dict, got {type(record).__name__}")
    missing = [k for k in _RECORD_KEYS if k not in record]
    if missing:
        raise DatasetFormatError(f"{where}: record lacks {missing}")
    return PuzzleGroup(*(np.asarray(record[k]) for k in _RECORD_KEYS), tag=int(record.get("tag", 0)))


def _check_group(g: PuzzleGroup, meta: PuzzleMetadata, where: str) -> None:
    if g.inputs.dtype != np.uint8 or g.labels.dtype != np.uint8:
        raise DatasetFormatError(f"{where}: inputs/labels must be uint8, got {g.inputs.dtype}/{g.labels.dtype}")
    if g.inputs.ndim != 3 or g.inputs.shape != g.labels.shape or g.inputs.shape[2] != meta.seq_len:
        raise DatasetFormatError(f"{where}: inputs and labels must both be [V, E, {meta.seq_len}], got "
                                 f"{g.inputs.shape} and {g.labels.shape}")
    v, e, _ = g.inputs.shape
    if v < 1 or e < 1:
        raise DatasetFormatError(f"{where}: a group needs at least one version with one example, got [V={v}, E={e}]")
    if g.num_examples.shape != (v,) or g.puzzle_identifiers.shape != (v,):
        raise DatasetFormatError(f"{where}: num_examples and puzzle_identifiers must be [{v}], got "
                                 f"{g.num_examples.shape} and {g.puzzle_identifiers.shape}")
    if g.num_examples.min() < 1 or g.num_examples.max() > e:
        raise DatasetFormatError(f"{where}: num_examples must be in 1..{e}, got {g.num_examples.tolist()}")
    if max(int(g.inputs.max()), int(g.labels.max())) >= meta.vocab_size:
        raise DatasetFormatError(f"{where}: token id >= vocab_size {meta.vocab_size}")
    ids = g.puzzle_identifiers
    if ids.min() < 0 or ids.max() >= meta.num_puzzle_identifiers:
        raise DatasetFormatError(f"{where}: puzzle_identifiers must be in 0..{meta.num_puzzle_identifiers - 1}")
    if not 0 <= g.tag < len(meta.tag_names):
        raise DatasetFormatError(f"{where}: tag {g.tag} is not an index into tag_names {meta.tag_names}")


def _write_split(path: Path, groups: Iterable[PuzzleGroup | Mapping[str, Any]], meta: PuzzleMetadata, split: str,
                 chunk_bytes: str | int) -> SplitStats:
    from litdata.streaming.writer import BinaryWriter

    writer = BinaryWriter(str(path), chunk_bytes=chunk_bytes)
    n_groups = n_puzzles = n_examples = max_examples = 0
    for index, record in enumerate(groups):
        g = as_group(record, f"{split} group {index}")
        _check_group(g, meta, f"{split} group {index}")
        writer[index] = {"inputs": np.ascontiguousarray(g.inputs), "labels": np.ascontiguousarray(g.labels),
                         "num_examples": g.num_examples.astype(np.int16),
                         "puzzle_identifiers": g.puzzle_identifiers.astype(np.int32), "group": index, "tag": int(g.tag)}
        n_groups += 1
        n_puzzles += len(g.num_examples)
        n_examples += int(g.num_examples.sum())
        max_examples = max(max_examples, int(g.num_examples.max()))
    if n_groups == 0:
        raise DatasetFormatError(f"{split} split is empty: a dataset split needs at least one group")
    writer.done()
    writer.merge()
    return SplitStats(total_groups=n_groups, total_puzzles=n_puzzles, total_examples=n_examples,
                      mean_puzzle_examples=n_examples / n_puzzles, max_puzzle_examples=max_examples)


def check_output_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to clobber: an existing target must be a puzzle dataset (or empty) and ``overwrite`` must be set."""
    target = Path(out_dir).absolute()
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
        if not target.is_dir() or (any(target.iterdir()) and not (target / METADATA_FILE).is_file()):
            raise FileExistsError(f"{target} exists and is not a puzzle dataset (no {METADATA_FILE}); "
                                  "refusing to replace it even with overwrite=True")
    return target


def write_puzzle_dataset(out_dir: str | os.PathLike, meta: PuzzleMetadata,
                         splits: Mapping[str, Iterable[PuzzleGroup | Mapping[str, Any]]], overwrite: bool = False,
                         chunk_bytes: str | int = DEFAULT_CHUNK_BYTES,
                         extra_files: Mapping[str, Any] | None = None) -> PuzzleMetadata:
    """Write every split and ``metadata.json`` into ``<out>.tmp-XXXX``, then rename it to ``out_dir``.

    Groups stream through (a generator is fine), as :class:`PuzzleGroup` or dicts shaped like a stored sample.
    ``meta.splits`` is filled in from what was written. With ``overwrite`` an existing dataset is moved aside and
    deleted only after the new one is in place; any failure removes the temporary directory and leaves the old
    dataset untouched. ``extra_files`` (name → JSON-serialisable object, e.g. an identifier map) are written into
    the same temporary directory, so they appear atomically with the dataset.
    """
    target = check_output_dir(out_dir, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
    try:
        stats = {name: _write_split(tmp / name, groups, meta, name, chunk_bytes) for name, groups in splits.items()}
        meta = dataclasses.replace(meta, splits=stats)
        PuzzleMetadata.from_dict(json.loads(json.dumps(meta.to_dict())), where="metadata being written")
        (tmp / METADATA_FILE).write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
        for name, obj in (extra_files or {}).items():
            if name in (METADATA_FILE, *splits) or Path(name).name != name:
                raise ValueError(f"extra file name {name!r} clashes with the dataset layout or is not a plain name")
            (tmp / name).write_text(json.dumps(obj) + "\n")
        _swap_into_place(tmp, target, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _swap_into_place(tmp: Path, target: Path, overwrite: bool) -> None:
    check_output_dir(target, overwrite)  # it may have appeared while we were building
    swap_into_place(tmp, target)

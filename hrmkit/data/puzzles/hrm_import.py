"""Import a puzzle dataset built by sapientinc/HRM or TRM (``dataset.json`` + ``.npy`` arrays) into hrmkit's format.

Reference layout (specs/hrm-symbolic.md §4.1)::

    <src>/{train,test}/dataset.json
    <src>/{train,test}/<set>__{inputs,labels,puzzle_identifiers,puzzle_indices,group_indices}.npy
    <src>/identifiers.json                      (optional: id → name, "<blank>" at 0)

Groups → puzzles → examples are CSR offsets; they become hrmkit groups of ``[V, E, L]`` arrays, so a model trained
here sees exactly the examples and identifiers the reference would. Token ids are copied unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hrmkit.data.puzzles.format import DatasetFormatError, PuzzleGroup, PuzzleMetadata, write_puzzle_dataset

IMPORT_VERSION = 1
_ARRAYS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
_REQUIRED = ("pad_id", "ignore_label_id", "blank_identifier_id", "vocab_size", "seq_len", "num_puzzle_identifiers",
             "total_groups", "mean_puzzle_examples", "sets")


def _read_split(src: Path, split: str) -> tuple[dict, list[dict[str, np.ndarray]]]:
    folder = src / split
    meta_path = folder / "dataset.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: is {src} a dataset built by the HRM/TRM builders?")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{meta_path}: not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise DatasetFormatError(f"{meta_path}: expected a JSON object")
    for key in _REQUIRED:
        if key not in meta:
            raise DatasetFormatError(f"{meta_path}: field {key!r}: missing")
    sets = []
    for name in meta["sets"]:
        arrays = {}
        for field in _ARRAYS:
            path = folder / f"{name}__{field}.npy"
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found (listed set {name!r} in {meta_path})")
            try:
                arrays[field] = np.load(path, mmap_mode="r")
            except ValueError as exc:
                raise DatasetFormatError(f"{path}: not a readable .npy array ({exc})") from exc
        _check_set(arrays, meta, folder, name)
        sets.append(arrays)
    return meta, sets


def _check_set(a: dict[str, np.ndarray], meta: dict, folder: Path, name: str) -> None:
    where = f"{folder}/{name}__"
    n_ex, seq = a["inputs"].shape if a["inputs"].ndim == 2 else (-1, -1)
    if seq != meta["seq_len"] or a["labels"].shape != a["inputs"].shape:
        raise DatasetFormatError(f"{where}inputs.npy/labels.npy: expected [N, {meta['seq_len']}] arrays of equal "
                                 f"shape, got {a['inputs'].shape} and {a['labels'].shape}")
    pi, gi = a["puzzle_indices"], a["group_indices"]
    if pi[0] != 0 or pi[-1] != n_ex or np.any(np.diff(pi) < 1):
        raise DatasetFormatError(f"{where}puzzle_indices.npy: must rise strictly from 0 to {n_ex} examples")
    if len(a["puzzle_identifiers"]) != len(pi) - 1:
        raise DatasetFormatError(f"{where}puzzle_identifiers.npy: {len(a['puzzle_identifiers'])} entries for "
                                 f"{len(pi) - 1} puzzles")
    if gi[0] != 0 or gi[-1] != len(pi) - 1 or np.any(np.diff(gi) < 1):
        raise DatasetFormatError(f"{where}group_indices.npy: must rise strictly from 0 to {len(pi) - 1} puzzles")
    if max(int(a["inputs"].max()), int(a["labels"].max())) >= meta["vocab_size"]:
        raise DatasetFormatError(f"{where}inputs.npy: token id >= vocab_size {meta['vocab_size']}")


def _groups(sets: list[dict[str, np.ndarray]], pad_id: int) -> Iterator[PuzzleGroup]:
    for a in sets:
        pi, gi, ids = a["puzzle_indices"], a["group_indices"], a["puzzle_identifiers"]
        for g in range(len(gi) - 1):
            puzzles = range(int(gi[g]), int(gi[g + 1]))
            counts = np.array([pi[p + 1] - pi[p] for p in puzzles], dtype=np.int16)
            e, seq = int(counts.max()), a["inputs"].shape[1]
            inputs = np.full((len(counts), e, seq), pad_id, dtype=np.uint8)
            labels = np.full_like(inputs, pad_id)
            for v, p in enumerate(puzzles):
                start, stop = int(pi[p]), int(pi[p + 1])
                inputs[v, : stop - start] = a["inputs"][start:stop]
                labels[v, : stop - start] = a["labels"][start:stop]
            yield PuzzleGroup(inputs, labels, counts, np.asarray(ids[gi[g]:gi[g + 1]], dtype=np.int32))


def import_hrm(src: str, out_dir: str, task: str = "imported", overwrite: bool = False) -> PuzzleMetadata:
    """Convert a dataset directory built by the HRM/TRM reference builders into an hrmkit puzzle dataset.

    Args:
        src: the reference dataset directory (holding ``train/`` and ``test/`` with ``dataset.json`` + ``.npy``).
        out_dir: hrmkit dataset directory to create (written atomically).
        task: task name recorded in the metadata (``sudoku``, ``maze``, ``arc``, ...).
        overwrite: replace an existing dataset in ``out_dir``.
    """
    source = Path(src)
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a directory")
    metas, sets = {}, {}
    for split in ("train", "test"):
        metas[split], sets[split] = _read_split(source, split)
    ref = metas["train"]
    for key in ("vocab_size", "seq_len", "pad_id", "ignore_label_id", "blank_identifier_id", "num_puzzle_identifiers"):
        if metas["test"][key] != ref[key]:
            raise DatasetFormatError(f"{source}/test/dataset.json: field {key!r} = {metas['test'][key]} differs from "
                                     f"train's {ref[key]}")
    extra = {}
    ident_path = source / "identifiers.json"
    if ident_path.is_file():
        extra["identifiers.json"] = json.loads(ident_path.read_text())
    for name in ("test_puzzles.json",):
        if (source / name).is_file():
            extra[name] = json.loads((source / name).read_text())
    meta = PuzzleMetadata(task=task, vocab_size=int(ref["vocab_size"]), seq_len=int(ref["seq_len"]),
                          pad_id=int(ref["pad_id"]), ignore_label_id=int(ref["ignore_label_id"]),
                          blank_identifier_id=int(ref["blank_identifier_id"]),
                          num_puzzle_identifiers=int(ref["num_puzzle_identifiers"]), tag_names=["all"],
                          builder={"name": "hrmkit.import_hrm", "version": IMPORT_VERSION},
                          source=str(source.absolute()), build_args={"src": str(src), "task": task})
    splits = {split: _groups(sets[split], meta.pad_id) for split in ("train", "test")}
    return write_puzzle_dataset(out_dir, meta, splits, overwrite=overwrite, extra_files=extra)

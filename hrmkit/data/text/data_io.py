"""Read the reference's ``data_io`` layout (spec §4.3) and import it as an hrmkit text dataset.

Reference layout::

    <src>/tokens.npy                 1-D token array, uint16 (vocab <= 65,535) or int32
    <src>/epoch_<k>/inst_start.npy   int64 [N]   per-sample offsets into tokens.npy, already shuffled
    <src>/epoch_<k>/inst_len.npy     int64 [N]
    <src>/epoch_<k>/resp_start.npy   int64 [N]
    <src>/epoch_<k>/resp_len.npy     int64 [N]
    <src>/metadata.json              {"tokenizer_info": {"tokenizer_path", "boq", "eoq", "eoa",
                                      "condition_mapping", "vocab_size"}, "max_seq_len", "total_length", ...}

An instruction span already holds ``BOQ + conditions + text + EOQ`` and a response span ``text + EOA`` (unless it was
truncated), so importing only copies ids. Each ``epoch_<k>`` is a stratified re-sample with repeats; one epoch is
imported per call. Everything is checked (dtypes, shapes, bounds, token ids, the BOQ/EOQ envelope) and errors name
the file and the sample index.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hrmkit.data.text.format import (
    DROP_REASONS,
    TextDatasetWriter,
    TextFormatError,
    TextMetadata,
    check_text_output_dir,
    fit_sample,
)
from hrmkit.data.text.tokenizer import CONDITIONS, load_tokenizer, padded_vocab_size

BUILDER_VERSION = 1
INDEX_FILES = ("inst_start", "inst_len", "resp_start", "resp_len")
_EPOCH_DIR = re.compile(r"^epoch_(\d+)$")


@dataclass(frozen=True)
class DataIoInfo:
    """The fields of a data_io ``metadata.json`` that an import needs."""

    boq: int
    eoq: int
    eoa: int
    vocab_size: int
    condition_mapping: dict[str, Any]
    tokenizer_path: str | None
    max_seq_len: int | None


def _read_info(path: Path) -> DataIoInfo:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a data_io dataset has metadata.json next to tokens.npy")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TextFormatError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise TextFormatError(f"{path}: expected a JSON object, got {type(data).__name__}")
    info = data.get("tokenizer_info")
    if not isinstance(info, dict):
        raise TextFormatError(f"{path}: field 'tokenizer_info': missing or not an object")
    ints = {}
    for key in ("boq", "eoq", "eoa", "vocab_size"):
        value = info.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TextFormatError(f"{path}: field 'tokenizer_info.{key}': expected a non-negative int, got {value!r}")
        ints[key] = value
    if ints["vocab_size"] < 1:
        raise TextFormatError(f"{path}: field 'tokenizer_info.vocab_size': must be >= 1")
    for key in ("boq", "eoq", "eoa"):
        if ints[key] >= ints["vocab_size"]:
            raise TextFormatError(f"{path}: field 'tokenizer_info.{key}': id {ints[key]} >= vocab_size "
                                  f"{ints['vocab_size']}")
    mapping = info.get("condition_mapping", {})
    if not isinstance(mapping, dict):
        raise TextFormatError(f"{path}: field 'tokenizer_info.condition_mapping': expected an object")
    tok_path = info.get("tokenizer_path")
    if tok_path is not None and not isinstance(tok_path, str):
        raise TextFormatError(f"{path}: field 'tokenizer_info.tokenizer_path': expected a string")
    max_seq_len = data.get("max_seq_len")
    if max_seq_len is not None and (isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int)
                                    or max_seq_len < 2):
        raise TextFormatError(f"{path}: field 'max_seq_len': expected an int >= 2 or null, got {max_seq_len!r}")
    return DataIoInfo(condition_mapping=dict(mapping), tokenizer_path=tok_path, max_seq_len=max_seq_len, **ints)


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the data_io dataset")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise TextFormatError(f"{path}: not a readable .npy array: {e}") from e


class DataIoDataset:
    """A validated view of one data_io directory: ``tokens`` (memory-mapped), ``info`` and per-epoch indices."""

    def __init__(self, src_dir: str | os.PathLike) -> None:
        self.root = Path(src_dir)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such data_io directory")
        self.info = _read_info(self.root / "metadata.json")
        path = self.root / "tokens.npy"
        tokens = _load_npy(path, mmap=True)
        if tokens.dtype not in (np.dtype(np.uint16), np.dtype(np.int32)):
            raise TextFormatError(f"{path}: dtype must be uint16 or int32 (spec §4.3), got {tokens.dtype}")
        if tokens.ndim != 1:
            raise TextFormatError(f"{path}: must be 1-D, got shape {tokens.shape}")
        self.tokens = tokens
        self.epochs = sorted(int(m.group(1)) for d in self.root.iterdir()
                             if d.is_dir() and (m := _EPOCH_DIR.match(d.name)))
        if not self.epochs:
            raise TextFormatError(f"{self.root}: no epoch_<k> directory with inst/resp index files")

    def index(self, epoch: int) -> dict[str, np.ndarray]:
        """The four int64 index arrays of ``epoch_<epoch>``, validated against ``tokens.npy``."""
        if epoch not in self.epochs:
            raise FileNotFoundError(f"{self.root}: no epoch_{epoch} (found epochs {self.epochs})")
        folder = self.root / f"epoch_{epoch}"
        arrays = {}
        for name in INDEX_FILES:
            path = folder / f"{name}.npy"
            a = _load_npy(path)
            if a.ndim != 1 or a.dtype.kind not in "iu":
                raise TextFormatError(f"{path}: must be a 1-D integer array (int64 in data_io), got {a.dtype} "
                                      f"{a.shape}")
            arrays[name] = a.astype(np.int64, copy=False)
        n = len(arrays["inst_start"])
        for name, a in arrays.items():
            if len(a) != n:
                raise TextFormatError(f"{folder / (name + '.npy')}: {len(a)} entries, but inst_start.npy has {n}")
        total = len(self.tokens)
        for kind in ("inst", "resp"):
            start, length = arrays[f"{kind}_start"], arrays[f"{kind}_len"]
            for name, bad in ((f"{kind}_start", start < 0), (f"{kind}_len", length < (1 if kind == "inst" else 0)),
                              (f"{kind}_len", start + length > total)):
                if bad.any():
                    i = int(np.argmax(bad))
                    raise TextFormatError(
                        f"{folder / (name + '.npy')}: sample {i}: span start {int(start[i])} length "
                        f"{int(length[i])} is invalid for tokens.npy of {total} tokens")
        return arrays

    def samples(self, epoch: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(index, instruction ids, response ids)`` of every sample of ``epoch``, checked as they are read."""
        arrays = self.index(epoch)
        where = self.root / f"epoch_{epoch}"
        vocab = self.info.vocab_size
        for i, (s0, n0, s1, n1) in enumerate(zip(*(arrays[k].tolist() for k in INDEX_FILES))):
            inst = np.asarray(self.tokens[s0:s0 + n0])
            resp = np.asarray(self.tokens[s1:s1 + n1])
            for part, ids in (("instruction", inst), ("response", resp)):
                if ids.size and int(ids.max()) >= vocab:
                    raise TextFormatError(f"{self.root / 'tokens.npy'}: sample {i} of epoch_{epoch}: {part} token id "
                                          f"{int(ids.max())} >= vocab_size {vocab}")
            if inst[0] != self.info.boq or inst[-1] != self.info.eoq:
                raise TextFormatError(f"{where}: sample {i}: instruction span must start with BOQ {self.info.boq} and "
                                      f"end with EOQ {self.info.eoq}, got {int(inst[0])} ... {int(inst[-1])}")
            yield i, inst, resp


def import_data_io(src_dir: str, out_dir: str, epoch: int | None = None, tokenizer: str | None = None,
                   val_fraction: float = 0.0, seed: int = 0, max_len: int | None = None, truncate: bool = True,
                   min_response_tokens: int = 2, overwrite: bool = False) -> TextMetadata:
    """Import one epoch of a reference data_io dataset (tokens.npy + epoch_k/*.npy) as an hrmkit text dataset.

    Args:
        src_dir: the data_io directory (``tokens.npy``, ``metadata.json``, ``epoch_<k>/``).
        out_dir: directory to create; built in ``<out_dir>.tmp-XXXX`` and renamed into place when complete.
        epoch: which ``epoch_<k>`` to import (default: the lowest-numbered one).
        tokenizer: the matching tokenizer (``tokenizer.json`` or a folder with one), saved with the dataset; default
            the metadata's ``tokenizer_path`` when that file exists, else none (ids are imported as they are).
        val_fraction: share of the *distinct* samples held out for validation; all repeats of a held-out sample go
            with it, so validation never sees a training sample.
        seed: seeds the hold-out.
        max_len: most tokens per sample; default the metadata's ``max_seq_len`` (4097 in the reference), else 4096.
        truncate: cut over-long responses instead of dropping the sample (see ``build_text``).
        min_response_tokens: shorter responses (EOA counted) are dropped and counted as ``short_response``.
        overwrite: replace an existing dataset in ``out_dir``.

    Returns:
        The metadata written to ``<out_dir>/metadata.json``.
    """
    build_args = {"src_dir": str(src_dir), "out_dir": str(out_dir), "epoch": epoch, "tokenizer": tokenizer,
                  "val_fraction": val_fraction, "seed": seed, "max_len": max_len, "truncate": truncate,
                  "min_response_tokens": min_response_tokens, "overwrite": overwrite}
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if min_response_tokens < 1:
        raise ValueError(f"min_response_tokens must be >= 1, got {min_response_tokens}")
    src = DataIoDataset(src_dir)
    info = src.info
    epoch = src.epochs[0] if epoch is None else epoch
    max_len = max_len or info.max_seq_len or 4096
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2, got {max_len}")
    check_text_output_dir(out_dir, overwrite)
    if tokenizer is None and info.tokenizer_path and Path(info.tokenizer_path).exists():
        tokenizer = info.tokenizer_path
    tok = None if tokenizer is None else load_tokenizer(tokenizer)
    if tok is not None:
        for role, want in (("boq", tok.boq_id), ("eoq", tok.eoq_id), ("eoa", tok.eoa_id)):
            if getattr(info, role) != want:
                raise TextFormatError(f"{src.root / 'metadata.json'}: field 'tokenizer_info.{role}' is "
                                      f"{getattr(info, role)} but tokenizer {tokenizer} has {want}; wrong tokenizer?")
        if tok.vocab_size < info.vocab_size:
            raise TextFormatError(f"{src.root / 'metadata.json'}: vocab_size {info.vocab_size} exceeds the "
                                  f"tokenizer's {tok.vocab_size}")
        conditions, pad_id = dict(tok.condition_ids), tok.pad_id
    else:
        conditions = {k: v for k, v in info.condition_mapping.items()
                      if k in CONDITIONS and isinstance(v, int) and not isinstance(v, bool) and v < info.vocab_size}
        pad_id = 0  # <|PAD|> is id 0 in the reference layout (spec §4.4)
    vocab = max(info.vocab_size, tok.vocab_size if tok is not None else 0)
    arrays = src.index(epoch)
    held_out = _held_out(arrays, val_fraction, seed)
    dropped = dict.fromkeys(DROP_REASONS, 0)
    with TextDatasetWriter(out_dir, padded_vocab_size(vocab), overwrite=overwrite) as writer:
        for i, inst, resp in src.samples(epoch):
            ids, reason, truncated = fit_sample(inst.tolist(), resp.tolist(), max_len, min_response_tokens, truncate)
            if ids is None:
                dropped[str(reason)] += 1
                continue
            writer.add("val" if held_out[i] else "train", ids, len(inst), truncated)
        meta = TextMetadata(
            vocab_size=padded_vocab_size(vocab), tokenizer_vocab_size=vocab, pad_id=pad_id, boq_id=info.boq,
            eoq_id=info.eoq, eoa_id=info.eoa, condition_ids=conditions, token_dtype=writer.dtype.name,
            max_len=max_len, min_response_tokens=min_response_tokens, truncate=truncate, dropped=dropped,
            tokenizer_source="" if tok is None else tok.source,
            sources=[{"path": str(src.root.absolute()), "epoch": epoch, "records": len(held_out),
                      "format": "data_io", "token_dtype": src.tokens.dtype.name}],
            seed=seed, val_fraction=val_fraction,
            builder={"name": "hrmkit.data.text.data_io", "version": BUILDER_VERSION}, build_args=build_args)
        return writer.commit(meta, tok)


def _held_out(arrays: dict[str, np.ndarray], val_fraction: float, seed: int) -> np.ndarray:
    """Per-sample validation flags: whole distinct (instruction, response) spans, so repeats never straddle splits."""
    n = len(arrays["inst_start"])
    if val_fraction <= 0 or n == 0:
        return np.zeros(n, dtype=bool)
    keys = np.stack([arrays[k] for k in INDEX_FILES], axis=1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    count = min(len(unique) - 1, max(1, round(len(unique) * val_fraction)))
    chosen = np.zeros(len(unique), dtype=bool)
    chosen[np.random.default_rng(seed).permutation(len(unique))[:count]] = True
    return chosen[inverse.reshape(-1)]


__all__ = ["DataIoDataset", "DataIoInfo", "import_data_io"]

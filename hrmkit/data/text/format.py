"""On-disk format of hrmkit text datasets: ``metadata.json``, the tokenizer, and one LitData directory per split.

Layout::

    <out>/metadata.json     TextMetadata (validated on load)
    <out>/tokenizer.json    the tokenizer the ids came from (absent for a data_io import without one)
    <out>/train/, <out>/val/  LitData optimized chunks, one sample per record
    <out>/<split>/sample_lengths.npy  int32 [samples]: every sample's token count in stored order (multipack plans
                                      the ranks' batches from it without reading the samples)

One stored sample::

    ids         uint16 or int32 [L]  BOQ, conditions, instruction, EOQ, response, EOA (spec §4.2)
    prefix_len  int                  instruction length (BOQ through EOQ)

Samples are kept whole (not a token stream) so the packing collate knows every document boundary and prefix, which
PrefixLM needs (lightning-notes §2.7). Builders write into ``<out>.tmp-XXXX`` and rename it into place, so a failed
build never leaves a partial dataset, and an existing one is replaced only after the new one is complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
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
from hrmkit.data.text.tokenizer import CONDITIONS, Tokenizer, file_sha256
from hrmkit.errors import HrmkitInputError

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
TOKENIZER_FILE = "tokenizer.json"
LENGTHS_FILE = "sample_lengths.npy"
SPLITS = ("train", "val")
#: Why a record can be left out of a dataset (counted in ``metadata.dropped``).
DROP_REASONS = ("empty_response", "short_response", "too_long")
DEFAULT_CHUNK_BYTES = "16MB"


class TextFormatError(HrmkitInputError):
    """A text dataset file or a source record breaks the format; the message names the file and the record/field."""


@dataclass(frozen=True)
class TextSplitStats:
    """Sizes of one split: ``tokens`` is what packing fills batches with, ``response_tokens`` what the loss sees."""

    samples: int
    tokens: int
    response_tokens: int
    max_sample_len: int
    truncated: int = 0


@dataclass(frozen=True)
class TextMetadata:
    """What a model and a loader need to know about a built text dataset (``<out>/metadata.json``).

    ``vocab_size`` is the tokenizer's size padded to a multiple of 256 (what the model allocates);
    ``tokenizer_vocab_size`` the real one. ``pad_id``/``boq_id``/``eoq_id``/``eoa_id`` and ``condition_ids`` are the
    role ids of spec §4.2. ``max_len`` caps a sample (instruction + response); longer ones were truncated or dropped
    as ``truncate`` says, and records with responses shorter than ``min_response_tokens`` (EOA included) were dropped.
    """

    vocab_size: int
    tokenizer_vocab_size: int
    pad_id: int
    boq_id: int
    eoq_id: int
    eoa_id: int
    condition_ids: dict[str, int]
    token_dtype: str
    max_len: int
    min_response_tokens: int
    truncate: bool
    splits: dict[str, TextSplitStats] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    tokenizer_file: str | None = TOKENIZER_FILE
    tokenizer_sha256: str | None = None
    tokenizer_source: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    val_fraction: float = 0.0
    builder: dict[str, Any] = field(default_factory=dict)
    build_args: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "metadata") -> TextMetadata:
        """Validate a decoded JSON object; errors name ``where`` (the file) and the field."""
        return _metadata_from_dict(data, where)

    def split(self, name: str) -> TextSplitStats:
        if name not in self.splits:
            raise KeyError(f"text dataset has no {name!r} split (splits: {sorted(self.splits)})")
        return self.splits[name]

    @property
    def special_ids(self) -> dict[str, int]:
        """Role → id: ``pad``, ``boq``, ``eoq``, ``eoa`` and one entry per condition name."""
        return {"pad": self.pad_id, "boq": self.boq_id, "eoq": self.eoq_id, "eoa": self.eoa_id, **self.condition_ids}


def _fail(where: str, name: str, msg: str) -> TextFormatError:
    return field_error(TextFormatError, where, name, msg)


def _get(data: Mapping[str, Any], where: str, name: str, kind: type | tuple[type, ...], prefix: str = "") -> Any:
    return get_field(data, where, name, kind, prefix, TextFormatError)


def _split_from_dict(data: Any, where: str, name: str) -> TextSplitStats:
    prefix = f"splits.{name}."
    known = sorted(f.name for f in dataclasses.fields(TextSplitStats))
    ints = split_counts(data, where, name, known, known, TextFormatError)
    if ints["samples"] < 1:
        raise _fail(where, prefix + "samples", "a stored split holds at least one sample")
    if ints["response_tokens"] > ints["tokens"] or ints["max_sample_len"] > ints["tokens"]:
        raise _fail(where, prefix + "tokens", f"must be >= response_tokens and max_sample_len, got {ints}")
    return TextSplitStats(**ints)


def _metadata_from_dict(data: Any, where: str) -> TextMetadata:
    if not isinstance(data, dict):
        raise TextFormatError(f"{where}: expected a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(TextMetadata)}
    for key in data:
        if key not in known:
            raise _fail(where, key, "unknown field")
    version = _get(data, where, "format_version", int)
    if version != FORMAT_VERSION:
        raise _fail(where, "format_version", f"this hrmkit reads text format {FORMAT_VERSION}, the dataset is "
                                             f"{version}; rebuild it with this hrmkit or upgrade hrmkit")
    ints = {k: _get(data, where, k, int) for k in ("vocab_size", "tokenizer_vocab_size", "pad_id", "boq_id", "eoq_id",
                                                   "eoa_id", "max_len", "min_response_tokens", "seed")}
    if ints["tokenizer_vocab_size"] < 1 or ints["vocab_size"] < ints["tokenizer_vocab_size"]:
        raise _fail(where, "vocab_size", f"must be >= tokenizer_vocab_size >= 1, got {ints['vocab_size']} and "
                                         f"{ints['tokenizer_vocab_size']}")
    if ints["vocab_size"] % 256:
        raise _fail(where, "vocab_size", f"must be a multiple of 256, got {ints['vocab_size']}")
    for key in ("pad_id", "boq_id", "eoq_id", "eoa_id"):
        if not 0 <= ints[key] < ints["tokenizer_vocab_size"]:
            raise _fail(where, key, f"must be a token id in 0..{ints['tokenizer_vocab_size'] - 1}, got {ints[key]}")
    if ints["max_len"] < 2:
        raise _fail(where, "max_len", f"must be >= 2, got {ints['max_len']}")
    if ints["min_response_tokens"] < 1:
        raise _fail(where, "min_response_tokens", f"must be >= 1, got {ints['min_response_tokens']}")
    conditions = _get(data, where, "condition_ids", dict)
    for name, value in conditions.items():
        if name not in CONDITIONS:
            raise _fail(where, f"condition_ids.{name}", f"unknown condition; allowed: {', '.join(CONDITIONS)}")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < ints["tokenizer_vocab_size"]:
            raise _fail(where, f"condition_ids.{name}", f"must be a token id, got {value!r}")
    dtype = _get(data, where, "token_dtype", str)
    if dtype not in ("uint16", "int32"):
        raise _fail(where, "token_dtype", f"must be 'uint16' or 'int32', got {dtype!r}")
    if dtype == "uint16" and ints["tokenizer_vocab_size"] > 1 << 16:
        raise _fail(where, "token_dtype", f"uint16 cannot hold {ints['tokenizer_vocab_size']} token ids")
    truncate = _get(data, where, "truncate", bool)
    splits = {name: _split_from_dict(value, where, name) for name, value in _get(data, where, "splits", dict).items()}
    for name in splits:
        if name not in SPLITS:
            raise _fail(where, f"splits.{name}", f"unknown split; allowed: {', '.join(SPLITS)}")
    if "train" not in splits:
        raise _fail(where, "splits.train", "missing: a text dataset needs a train split")
    for name, stats in splits.items():
        if stats.max_sample_len > ints["max_len"]:
            raise _fail(where, f"splits.{name}.max_sample_len", f"{stats.max_sample_len} exceeds max_len "
                                                                f"{ints['max_len']}")
    dropped = _get(data, where, "dropped", dict)
    for key, value in dropped.items():
        if key not in DROP_REASONS:
            raise _fail(where, f"dropped.{key}", f"unknown reason; known: {', '.join(DROP_REASONS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _fail(where, f"dropped.{key}", f"must be a count >= 0, got {value!r}")
    tok_file = _get(data, where, "tokenizer_file", (str, type(None)))
    if tok_file is not None and Path(tok_file).name != tok_file:
        raise _fail(where, "tokenizer_file", f"must be a plain file name inside the dataset, got {tok_file!r}")
    tok_hash = _get(data, where, "tokenizer_sha256", (str, type(None)))
    sources = _get(data, where, "sources", list)
    if not all(isinstance(s, dict) for s in sources):
        raise _fail(where, "sources", "expected a list of objects")
    val_fraction = float(_get(data, where, "val_fraction", (int, float)))
    if not 0.0 <= val_fraction < 1.0:
        raise _fail(where, "val_fraction", f"must be in [0, 1), got {val_fraction}")
    builder = _get(data, where, "builder", dict)
    for key in ("name", "version"):
        if key not in builder:
            raise _fail(where, f"builder.{key}", "missing")
    return TextMetadata(condition_ids=dict(conditions), token_dtype=dtype, truncate=truncate, splits=splits,
                        dropped=dict(dropped), tokenizer_file=tok_file, tokenizer_sha256=tok_hash,
                        tokenizer_source=_get(data, where, "tokenizer_source", str), sources=list(sources),
                        val_fraction=val_fraction, builder=dict(builder),
                        build_args=dict(_get(data, where, "build_args", dict)), format_version=version, **ints)


def read_text_metadata(data_dir: str | os.PathLike) -> TextMetadata:
    """Load and validate ``<data_dir>/metadata.json`` of a text dataset."""
    data, path = load_metadata_json(data_dir, "text", f"hrmkit data text --out_dir {data_dir} --jsonl data.jsonl",
                                    TextFormatError)
    return TextMetadata.from_dict(data, where=str(path))


def text_split_dir(data_dir: str | os.PathLike, split: str) -> Path:
    """The LitData directory of ``split``, checked to hold an ``index.json`` and intact chunk files."""
    return litdata_split_dir(data_dir, split, "text", TextFormatError)


def tokenizer_path(data_dir: str | os.PathLike, meta: TextMetadata) -> Path | None:
    """The dataset's own tokenizer file, or None when it was built without one."""
    return None if meta.tokenizer_file is None else Path(data_dir) / meta.tokenizer_file


def read_sample_lengths(data_dir: str | os.PathLike, split: str, meta: TextMetadata) -> np.ndarray:
    """Every sample's token count of ``split`` in stored order, checked against the metadata. Datasets built before
    hrmkit wrote ``sample_lengths.npy`` are scanned once (slow for large sets: rebuilding writes the file)."""
    stats = meta.split(split)
    path = text_split_dir(data_dir, split) / LENGTHS_FILE
    if path.is_file():
        try:
            lengths = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise TextFormatError(f"{path}: not a readable .npy array ({e}); rebuild the dataset") from e
    else:
        lengths = np.asarray([int(np.asarray(s["ids"]).size) for s in iter_samples(data_dir, split)], dtype=np.int64)
    if lengths.ndim != 1 or lengths.shape[0] != stats.samples or not np.issubdtype(lengths.dtype, np.integer):
        raise TextFormatError(f"{path}: expected {stats.samples} integer sample lengths (metadata splits.{split}."
                              f"samples), got shape {lengths.shape} of {lengths.dtype}; rebuild the dataset")
    if int(lengths.sum()) != stats.tokens or (lengths.size and int(lengths.min()) < 1):
        raise TextFormatError(f"{path}: the lengths sum to {int(lengths.sum())} tokens but metadata splits.{split}."
                              f"tokens is {stats.tokens} (or a length is < 1); rebuild the dataset")
    return lengths.astype(np.int64)


def iter_samples(data_dir: str | os.PathLike, split: str) -> Any:
    """Every stored sample of ``split`` in on-disk order (tests, inspection; training uses the data module)."""
    from litdata import StreamingDataset

    ds = StreamingDataset(str(text_split_dir(data_dir, split)), shuffle=False, drop_last=False)
    for i in range(len(ds)):
        yield ds[i]


# ---------------------------------------------------------------------------------------------------------- writing


def check_text_output_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to clobber: an existing target must be a dataset (or empty) and ``overwrite`` must be set."""
    target = Path(out_dir).absolute()
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
        if not target.is_dir() or (any(target.iterdir()) and not (target / METADATA_FILE).is_file()):
            raise FileExistsError(f"{target} exists and is not a dataset (no {METADATA_FILE}); refusing to replace "
                                  "it even with overwrite=True")
    return target


def token_dtype_for(vocab_size: int) -> str:
    """``uint16`` when every id fits (half the disk and memory), else ``int32``."""
    return "uint16" if vocab_size <= 1 << 16 else "int32"


class _SplitWriter:
    """One split's LitData writer plus its running statistics."""

    def __init__(self, path: Path, dtype: np.dtype, chunk_bytes: str | int) -> None:
        from litdata.streaming.writer import BinaryWriter

        self.writer = BinaryWriter(str(path), chunk_bytes=chunk_bytes)
        self.dtype = dtype
        self.path = path
        self.samples = self.tokens = self.response_tokens = self.max_len = self.truncated = 0
        self.lengths: list[int] = []

    def add(self, ids: np.ndarray, prefix_len: int, truncated: bool) -> None:
        self.writer[self.samples] = {"ids": np.ascontiguousarray(ids, dtype=self.dtype), "prefix_len": int(prefix_len)}
        self.samples += 1
        self.lengths.append(len(ids))
        self.tokens += len(ids)
        self.response_tokens += len(ids) - prefix_len
        self.max_len = max(self.max_len, len(ids))
        self.truncated += bool(truncated)

    def close(self) -> TextSplitStats | None:
        if self.samples == 0:
            return None
        self.writer.done()
        self.writer.merge()
        np.save(self.path / LENGTHS_FILE, np.asarray(self.lengths, dtype=np.int32))
        return TextSplitStats(samples=self.samples, tokens=self.tokens, response_tokens=self.response_tokens,
                              max_sample_len=self.max_len, truncated=self.truncated)


class TextDatasetWriter:
    """Builds a text dataset in ``<out>.tmp-XXXX``; :meth:`commit` validates the metadata and renames it into place.

    Use as a context manager: leaving the block with an exception (or without :meth:`commit`) deletes the temporary
    directory and leaves any existing dataset untouched.
    """

    def __init__(self, out_dir: str | os.PathLike, vocab_size: int, overwrite: bool = False,
                 chunk_bytes: str | int = DEFAULT_CHUNK_BYTES) -> None:
        self.target = check_text_output_dir(out_dir, overwrite)
        self.overwrite = overwrite
        self.vocab_size = vocab_size
        self.dtype = np.dtype(token_dtype_for(vocab_size))
        self.chunk_bytes = chunk_bytes
        self.tmp: Path | None = None
        self._splits: dict[str, _SplitWriter] = {}

    def __enter__(self) -> TextDatasetWriter:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.target.name}.tmp-", dir=self.target.parent))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def add(self, split: str, ids: np.ndarray | list[int], prefix_len: int, truncated: bool = False) -> None:
        """Store one sample (``ids`` already checked by the caller against ``max_len`` and the vocabulary)."""
        if self.tmp is None:
            raise RuntimeError("TextDatasetWriter.add outside its `with` block")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
        if split not in self._splits:
            self._splits[split] = _SplitWriter(self.tmp / split, self.dtype, self.chunk_bytes)
        self._splits[split].add(np.asarray(ids), prefix_len, truncated)

    def commit(self, meta: TextMetadata, tokenizer: Tokenizer | None = None,
               extra_files: Mapping[str, str | os.PathLike] | None = None) -> TextMetadata:
        """Close the splits, write ``metadata.json`` (+ ``tokenizer.json``), copy ``extra_files`` (relative name in
        the dataset → source file, e.g. the JSONL a task builder generated), rename into place; the final metadata."""
        if self.tmp is None:
            raise RuntimeError("TextDatasetWriter.commit outside its `with` block")
        for name, src in (extra_files or {}).items():
            rel = Path(name)
            if rel.is_absolute() or ".." in rel.parts or rel.parts[0] in (*SPLITS, METADATA_FILE, TOKENIZER_FILE):
                raise ValueError(f"extra file name {name!r} clashes with the dataset layout or leaves the dataset")
            (self.tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, self.tmp / rel)
        stats = {name: s for name, w in self._splits.items() if (s := w.close()) is not None}
        if "train" not in stats:
            raise TextFormatError(f"{self.target}: no sample reached the train split (dropped: {meta.dropped}); "
                                  "nothing to train on")
        tok_file = tok_hash = None
        if tokenizer is not None:
            tokenizer.save(self.tmp / TOKENIZER_FILE)
            tok_file, tok_hash = TOKENIZER_FILE, file_sha256(self.tmp / TOKENIZER_FILE)
        meta = dataclasses.replace(meta, splits=stats, token_dtype=self.dtype.name, tokenizer_file=tok_file,
                                   tokenizer_sha256=tok_hash)
        TextMetadata.from_dict(json.loads(json.dumps(meta.to_dict())), where="metadata being written")
        (self.tmp / METADATA_FILE).write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
        _swap_into_place(self.tmp, self.target, self.overwrite)
        self.tmp = None
        return meta


def _swap_into_place(tmp: Path, target: Path, overwrite: bool) -> None:
    check_text_output_dir(target, overwrite)  # it may have appeared while we were building
    swap_into_place(tmp, target)


def fit_sample(inst: list[int], resp: list[int], max_len: int, min_response_tokens: int,
               truncate: bool) -> tuple[list[int] | None, str | None, bool]:
    """Apply the length policy to one tokenised sample: ``(ids or None, drop reason or None, truncated)``.

    Responses shorter than ``min_response_tokens`` (EOA counted; the reference's ``min_resp_length = 2``) are dropped
    as ``short_response``. A sample longer than ``max_len`` keeps its instruction and loses the end of its response
    (the reference's truncation, spec §4.3) when ``truncate``; the cut response must still hold
    ``min_response_tokens``, so truncation can never produce the zero-causal samples of spec §4.7. Otherwise, or when
    the instruction alone leaves no room, it is dropped as ``too_long``.
    """
    if len(resp) < min_response_tokens:
        return None, "short_response", False
    if len(inst) + len(resp) <= max_len:
        return inst + resp, None, False
    room = max_len - len(inst)
    if not truncate or room < min_response_tokens:
        return None, "too_long", False
    return inst + resp[:room], None, True

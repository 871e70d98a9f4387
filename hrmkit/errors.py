"""The one error type for bad input: a file, record or setting a user has to fix.

Why one type: every reader and builder (JSONL, CSV, ARC JSON, tokenizer files, dataset chunks and metadata, HF
configs, checkpoints, recipes) raises it or a subclass of it, so callers (the CLI, a data pipeline, the fuzz test)
catch bad input with a single ``except HrmkitInputError`` and let every other exception stay a bug with its
traceback. It subclasses ``ValueError`` so code written against the readers' older ``ValueError`` keeps working.
The message names the file, the record or line, and the field, and says what was expected.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager


class HrmkitInputError(ValueError):
    """Bad input: the message names the file, the record/line and the field, and what was expected."""


class CheckpointError(HrmkitInputError):
    """A checkpoint file is torn, truncated, not a checkpoint, or holds something hrmkit refuses to unpickle."""


def input_error(where: str, msg: str, field: str | None = None) -> HrmkitInputError:
    """``<where>: field '<field>': <msg>`` (``where`` is the file, with ``:line`` or a record index when known)."""
    return HrmkitInputError(f"{where}: field {field!r}: {msg}" if field else f"{where}: {msg}")


@contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """Wrap the reading of a text file so undecodable bytes or broken CSV quoting surface as
    :class:`HrmkitInputError` naming the file, instead of a bare ``UnicodeDecodeError`` / ``csv.Error``."""
    try:
        yield
    except UnicodeDecodeError as e:
        bad = e.object[e.start:e.start + 4]
        raise HrmkitInputError(f"{path}: not UTF-8 text: invalid byte(s) {bad!r} ({e.reason})") from None
    except csv.Error as e:
        raise HrmkitInputError(f"{path}: malformed CSV: {e}") from None

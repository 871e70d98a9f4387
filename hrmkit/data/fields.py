"""Typed field access for the JSON metadata of hrmkit datasets: every error names the file and the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def field_error(error: type[Exception], where: str, name: str, msg: str) -> Exception:
    return error(f"{where}: field {name!r}: {msg}")


def get_field(data: Mapping[str, Any], where: str, name: str, kind: type | tuple[type, ...], prefix: str = "",
              error: type[Exception] = ValueError) -> Any:
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

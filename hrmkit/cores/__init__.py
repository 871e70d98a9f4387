"""Recursive cores and their registry. ``build_core("hrm", "text-XL")`` or YAML ``class_path: hrmkit.cores.HRM``."""

from __future__ import annotations

from typing import Any

from hrmkit.cores.base import CORES, CallContext, CallRecord, RecursiveCore, State, core_from_config, register_core
from hrmkit.cores.hrm import HRM
from hrmkit.cores.rins import RINS
from hrmkit.cores.transformer import Transformer
from hrmkit.cores.trm import TRM
from hrmkit.cores.ut import UniversalTransformer


def build_core(name: str, variant: str | None = None, **overrides: Any) -> RecursiveCore:
    """Instantiate a registered core (built-in or plugin), optionally from one of its named variants."""
    cls = CORES.get(name)
    kwargs: dict[str, Any] = {}
    if variant is not None:
        known = getattr(cls, "variants", {})
        if variant not in known:
            raise KeyError(f"core {name!r} has no variant {variant!r}; variants: {', '.join(sorted(known)) or 'none'}")
        kwargs.update(known[variant])
    kwargs.update(overrides)
    return cls(**kwargs)


__all__ = ["CORES", "HRM", "RINS", "TRM", "CallContext", "CallRecord", "RecursiveCore", "State", "Transformer",
           "UniversalTransformer", "build_core", "core_from_config", "register_core"]

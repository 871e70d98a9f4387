"""One line after a dataset build: what was written, where, how big, how long (``hrmkit data ...``).

The builders return their metadata and stay silent (they are library functions); the command line wraps each one
with :func:`with_summary`, which prints e.g.
``hrmkit: built maze dataset data/maze: train 1000 puzzles (1000 examples), test 1000 puzzles (1000 examples);
12.3 MB; 41.2 s``.
"""

from __future__ import annotations

import functools
import inspect
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _split_text(name: str, stats: Any) -> str:
    if hasattr(stats, "total_groups"):  # puzzle split
        return f"{name} {stats.total_groups} puzzles ({stats.total_examples} examples)"
    return f"{name} {stats.samples} samples ({stats.tokens} tokens)"


def build_summary(meta: Any, out_dir: str | Path, seconds: float) -> str:
    """The one-line summary of a built dataset from its metadata (puzzle or text)."""
    kind = getattr(meta, "task", None) or "text"
    splits = ", ".join(_split_text(name, stats) for name, stats in getattr(meta, "splits", {}).items())
    return (f"hrmkit: built {kind} dataset {out_dir}: {splits or 'no splits'}; {_human_bytes(_size(Path(out_dir)))}; "
            f"{seconds:.1f} s")


def with_summary(builder: Callable[..., Any]) -> Callable[..., Any]:
    """``builder`` (same signature and docstring, so jsonargparse builds the same command) that prints
    :func:`build_summary` to stderr after a successful build."""
    signature = inspect.signature(builder)

    @functools.wraps(builder)
    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        meta = builder(*args, **kwargs)
        out_dir = signature.bind(*args, **kwargs).arguments.get("out_dir")
        if out_dir is not None and hasattr(meta, "splits"):
            print(build_summary(meta, out_dir, time.perf_counter() - start), file=sys.stderr)
        return meta

    return run

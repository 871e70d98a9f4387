"""Data modules and builders.

Names are imported on first use (PEP 562), so a dataset builder (``hrmkit data sudoku``) does not pull in
Lightning and torch through the data modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"PuzzleDataModule": "hrmkit.data.modules", "PuzzleMetadata": "hrmkit.data.puzzles",
         "build_sudoku": "hrmkit.data.puzzles", "read_metadata": "hrmkit.data.puzzles",
         "SyntheticDataModule": "hrmkit.data.synthetic", "make_synthetic": "hrmkit.data.synthetic"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hrmkit.data' has no attribute {name!r}")

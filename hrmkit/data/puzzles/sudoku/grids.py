"""Sudoku grids: 81 cells in row-major order, 0 = blank, 1..9 = digits; parsing, printing and vectorised checks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

VOCAB_SIZE = 11
SEQ_LEN = 81


def parse_grid(text: str, blanks: str = ".0") -> list[int]:
    """81 characters, digits 1-9 and any of ``blanks`` for empty cells, to a list of ints (0 = blank)."""
    if len(text) != 81:
        raise ValueError(f"a Sudoku grid has 81 cells, got {len(text)} characters")
    out = []
    for ch in text:
        if ch in blanks:
            out.append(0)
        elif "1" <= ch <= "9":
            out.append(ord(ch) - 48)
        else:
            raise ValueError(f"bad character {ch!r} in Sudoku grid (expected 1-9 or one of {blanks!r})")
    return out


def format_grid(grid: Sequence[int] | np.ndarray, blank: str = ".") -> str:
    """The inverse of :func:`parse_grid`."""
    return "".join(blank if int(v) == 0 else str(int(v)) for v in np.asarray(grid).reshape(-1))


def _units(grids: np.ndarray) -> np.ndarray:
    """``[N, 27, 9]``: the 9 rows, 9 columns and 9 boxes of each grid."""
    b = grids.reshape(-1, 9, 9)
    boxes = b.reshape(-1, 3, 3, 3, 3).transpose(0, 1, 3, 2, 4).reshape(-1, 9, 9)
    return np.concatenate([b, b.transpose(0, 2, 1), boxes], axis=1)


def valid_solutions(grids: np.ndarray) -> np.ndarray:
    """``bool [N]``: each full grid uses 1..9 exactly once per row, column and box (independent of the solver)."""
    grids = np.asarray(grids).reshape(-1, 81)
    units = np.sort(_units(grids), axis=-1)
    return (units == np.arange(1, 10)).all(axis=(1, 2))


def givens_agree(puzzles: np.ndarray, solutions: np.ndarray) -> np.ndarray:
    """``bool [N]``: every given of each puzzle equals the solution's digit in that cell."""
    p, s = np.asarray(puzzles).reshape(-1, 81), np.asarray(solutions).reshape(-1, 81)
    return ((p == 0) | (p == s)).all(axis=1)

"""The exact Sudoku solver: bitmask constraint propagation plus depth-first search on the most constrained cell."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from hrmkit.data.puzzles.sudoku.grids import parse_grid

_RCB = tuple((i // 9, 9 + i % 9, 18 + (i // 27) * 3 + (i % 9) // 3) for i in range(81))
_POPCOUNT = tuple(bin(m).count("1") for m in range(512))
_DIGITS = tuple(tuple(d + 1 for d in range(9) if m >> d & 1) for m in range(512))


def _cells(grid: Sequence[int] | np.ndarray | str) -> list[int]:
    cells = parse_grid(grid) if isinstance(grid, str) else [int(v) for v in np.asarray(grid).reshape(-1)]
    if len(cells) != 81 or not all(0 <= v <= 9 for v in cells):
        raise ValueError("a Sudoku grid is 81 cells with values 0 (blank) to 9")
    return cells


def _state(cells: list[int]) -> tuple[list[int], list[int]] | None:
    """Bitmasks of digits used per unit (27) and the empty cells, or None if two givens clash."""
    used = [0] * 27
    empties = []
    for i, v in enumerate(cells):
        if not v:
            empties.append(i)
            continue
        bit = 1 << (v - 1)
        r, c, b = _RCB[i]
        if (used[r] | used[c] | used[b]) & bit:
            return None
        used[r] |= bit
        used[c] |= bit
        used[b] |= bit
    return used, empties


def _search(cells: list[int], used: list[int], empties: list[int], limit: int, out: list[list[int]] | None,
            rng: random.Random | None) -> int:
    """Depth-first search on the most constrained empty cell; counts solutions up to ``limit``.

    Bitmask state and swap-removal from ``empties`` keep each node at one pass over the empty cells, which is what
    makes a pure-Python generator fast enough (a cell with one candidate is taken at once: naked singles).
    """
    if not empties:
        if out is not None:
            out.append(list(cells))
        return 1
    best_k, best_n, best_m = -1, 10, 0
    for k, i in enumerate(empties):
        r, c, b = _RCB[i]
        m = ~(used[r] | used[c] | used[b]) & 511
        n = _POPCOUNT[m]
        if n < best_n:
            if n == 0:
                return 0
            best_k, best_n, best_m = k, n, m
            if n == 1:
                break
    i = empties[best_k]
    last = empties.pop()
    if best_k < len(empties):
        empties[best_k] = last
    r, c, b = _RCB[i]
    digits: Sequence[int] = _DIGITS[best_m]
    if rng is not None and len(digits) > 1:
        digits = list(digits)
        rng.shuffle(digits)
    total = 0
    for d in digits:
        bit = 1 << (d - 1)
        used[r] |= bit
        used[c] |= bit
        used[b] |= bit
        cells[i] = d
        total += _search(cells, used, empties, limit - total, out, rng)
        used[r] ^= bit
        used[c] ^= bit
        used[b] ^= bit
        if total >= limit:
            break
    cells[i] = 0
    if best_k < len(empties):
        empties.append(empties[best_k])
        empties[best_k] = i
    else:
        empties.append(i)
    return total


def count_solutions(grid: Sequence[int] | np.ndarray | str, limit: int = 2) -> int:
    """Number of solutions, counted up to ``limit`` (``limit=2`` answers "unique?"); 0 if the givens clash."""
    cells = _cells(grid)
    state = _state(cells)
    return 0 if state is None else _search(cells, state[0], state[1], limit, None, None)


def solve(grid: Sequence[int] | np.ndarray | str) -> list[int] | None:
    """One solution (the first found), or None if there is none."""
    cells = _cells(grid)
    state = _state(cells)
    out: list[list[int]] = []
    if state is not None:
        _search(cells, state[0], state[1], 1, out, None)
    return out[0] if out else None


def random_solution(rng: random.Random) -> list[int]:
    """A random full grid: the same search from an empty grid, trying candidates in random order."""
    cells = [0] * 81
    used, empties = _state(cells)  # type: ignore[misc]
    out: list[list[int]] = []
    _search(cells, used, empties, 1, out, rng)
    return out[0]


def _still_unique_without(cells: list[int], i: int) -> bool:
    """``cells`` has a unique solution with ``cells[i] = v``; is it still unique with cell ``i`` blank?

    Only a solution with another digit in ``i`` can appear, so try those digits and stop at the first solution:
    cheaper than counting to two, which would re-find the known solution.
    """
    v = cells[i]
    cells[i] = 0
    used, empties = _state(cells)  # type: ignore[misc]
    empties.remove(i)
    r, c, b = _RCB[i]
    for d in _DIGITS[~(used[r] | used[c] | used[b] | 1 << (v - 1)) & 511]:
        bit = 1 << (d - 1)
        used[r] |= bit
        used[c] |= bit
        used[b] |= bit
        cells[i] = d
        found = _search(cells, used, empties, 1, None, None)
        used[r] ^= bit
        used[c] ^= bit
        used[b] ^= bit
        cells[i] = 0
        if found:
            cells[i] = v
            return False
    return True

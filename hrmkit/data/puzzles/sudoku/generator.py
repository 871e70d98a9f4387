"""Unique-solution Sudoku generator; the difficulty knob is the number of givens (``LEVELS``)."""

from __future__ import annotations

import multiprocessing as mp
import random
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from hrmkit.data.puzzles.sudoku.solver import _still_unique_without, random_solution

LEVELS: dict[str, int | Literal["minimal"]] = {"easy": 40, "medium": 30, "hard": "minimal"}
MIN_GIVENS = 17
Givens = int | Literal["minimal"]


def parse_level(level: str | int) -> Givens:
    """A level name (``easy``/``medium``/``hard``), ``minimal``, or a givens count (int or digit string)."""
    if isinstance(level, str) and level in LEVELS:
        return LEVELS[level]
    if level == "minimal":
        return "minimal"
    try:
        givens = int(level)
    except (TypeError, ValueError):
        raise ValueError(f"Sudoku level must be one of {sorted(LEVELS)}, 'minimal' or a givens count "
                         f"{MIN_GIVENS}..81, got {level!r}") from None
    if not MIN_GIVENS <= givens <= 81:
        raise ValueError(f"Sudoku givens must be in {MIN_GIVENS}..81, got {givens}")
    return givens


def generate(rng: random.Random, givens: Givens = "minimal", max_attempts: int = 10_000) -> tuple[list[int], list[int]]:
    """A ``(puzzle, solution)`` pair whose puzzle has exactly one solution.

    Cells of a random full grid are blanked in random order while the solution stays unique. One pass suffices for
    ``minimal``: a cell that cannot be removed now cannot be removed later either (removing more givens only adds
    solutions). With an int target the pass stops there; a pass stuck above the target restarts from a fresh grid,
    so the count is exact. Targets below ~22 need many restarts (``max_attempts`` bounds them).
    """
    target = parse_level(givens)
    for _ in range(max_attempts):
        solution = random_solution(rng)
        cells = list(solution)
        order = list(range(81))
        rng.shuffle(order)
        n = 81
        for i in order:
            if n == target:
                break
            if _still_unique_without(cells, i):
                n -= 1
        if target == "minimal" or n == target:
            return cells, solution
    raise RuntimeError(f"no unique Sudoku with {target} givens after {max_attempts} attempts; "
                       "use more givens or 'minimal'")


def _puzzle_rng(seed: int, key: str, index: int) -> random.Random:
    # String seeds go through SHA-512 in random.Random: stable across runs and processes, independent per puzzle.
    return random.Random(f"hrmkit-sudoku/{seed}/{key}/{index}")


def _generate_one(args: tuple[Givens, int, str, int]) -> tuple[bytes, bytes]:
    givens, seed, key, index = args
    puzzle, solution = generate(_puzzle_rng(seed, key, index), givens)
    return bytes(puzzle), bytes(solution)


def _pool_map(fn: Callable[[Any], Any], items: list[Any], num_workers: int) -> list[Any]:
    """Ordered map over a process pool (fork where available: workers need no re-import of torch/lightning)."""
    if num_workers <= 1 or len(items) < 64:
        return [fn(x) for x in items]
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(num_workers) as pool:
        return pool.map(fn, items, chunksize=max(1, len(items) // (num_workers * 16)))


def generate_many(n: int, givens: Givens, seed: int, key: str = "", start: int = 0,
                  num_workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``n`` puzzles and solutions (uint8 ``[n, 81]``); puzzle ``i`` depends only on (seed, key, start + i), so the
    result does not depend on ``num_workers``."""
    parse_level(givens)
    results = _pool_map(_generate_one, [(givens, seed, key, start + i) for i in range(n)], num_workers)
    puzzles = np.frombuffer(b"".join(p for p, _ in results), np.uint8).reshape(n, 81)
    solutions = np.frombuffer(b"".join(s for _, s in results), np.uint8).reshape(n, 81)
    return puzzles.copy(), solutions.copy()

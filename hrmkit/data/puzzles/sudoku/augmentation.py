"""The reference Sudoku augmentation: digit relabelling, band/stack and row/column shuffles, transpose."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hrmkit.data.puzzles.augment import inverse_permutation, random_nested_permutations, random_value_maps


@dataclass(frozen=True)
class SudokuAugmentation:
    """One validity-preserving Sudoku transform (spec §4.3), kept so it can be undone.

    Applied as: transpose (if set), then ``new[i, j] = old[row_perm[i], col_perm[j]]``, then ``digit_map`` on
    every cell (``digit_map[0] == 0`` keeps blanks blank).
    """

    digit_map: tuple[int, ...]
    transpose: bool
    row_perm: tuple[int, ...]
    col_perm: tuple[int, ...]

    @classmethod
    def identity(cls) -> SudokuAugmentation:
        return cls(tuple(range(10)), False, tuple(range(9)), tuple(range(9)))

    @classmethod
    def random(cls, rng: np.random.Generator) -> SudokuAugmentation:
        return sample_sudoku_augmentations(rng, 1)[0]

    def positions(self) -> np.ndarray:
        """``[81]``: cell ``k`` of the result comes from cell ``positions[k]`` of the input."""
        return _positions(np.array([self.transpose]), np.array([self.row_perm]), np.array([self.col_perm]))[0]

    def apply(self, grid: Sequence[int] | np.ndarray) -> np.ndarray:
        """Transform one grid (``[81]`` or ``[9, 9]``; the shape is kept)."""
        arr = np.asarray(grid)
        flat = arr.reshape(81)
        return np.asarray(self.digit_map, dtype=arr.dtype)[flat[self.positions()]].reshape(arr.shape)

    def inverse(self) -> SudokuAugmentation:
        """The transform that undoes this one; it has the same form (a transposed grid swaps row and column roles)."""
        digits = tuple(inverse_permutation(np.array(self.digit_map)).tolist())
        rows, cols = inverse_permutation(np.array(self.row_perm)), inverse_permutation(np.array(self.col_perm))
        if self.transpose:
            return SudokuAugmentation(digits, True, tuple(cols.tolist()), tuple(rows.tolist()))
        return SudokuAugmentation(digits, False, tuple(rows.tolist()), tuple(cols.tolist()))

    def to_dict(self) -> dict[str, Any]:
        return {"digit_map": list(self.digit_map), "transpose": self.transpose, "row_perm": list(self.row_perm),
                "col_perm": list(self.col_perm)}


def _positions(transpose: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``[n, 81]`` source cells for a batch of (transpose, row_perm, col_perm)."""
    plain = rows[:, :, None] * 9 + cols[:, None, :]
    flipped = cols[:, None, :] * 9 + rows[:, :, None]
    return np.where(transpose[:, None, None], flipped, plain).reshape(-1, 81)


def _sample_arrays(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digit_maps = random_value_maps(rng, n, 10, fixed=(0,))
    transpose = rng.random(n) < 0.5
    rows = random_nested_permutations(rng, n)
    cols = random_nested_permutations(rng, n)
    return digit_maps, transpose, rows, cols


def sample_sudoku_augmentations(rng: np.random.Generator, n: int) -> list[SudokuAugmentation]:
    """``n`` independent transforms: digit permutation of 1..9, transpose with p=0.5, band + row and stack + column
    shuffles (the reference ``shuffle_sudoku``)."""
    maps, transpose, rows, cols = _sample_arrays(rng, n)
    return [SudokuAugmentation(tuple(m), bool(t), tuple(r), tuple(c))
            for m, t, r, c in zip(maps.tolist(), transpose.tolist(), rows.tolist(), cols.tolist())]


def augment_sudoku(puzzle: np.ndarray, solution: np.ndarray, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, SudokuAugmentation]:
    """One random augmentation of a (puzzle, solution) pair, with its description."""
    aug = SudokuAugmentation.random(rng)
    return aug.apply(puzzle), aug.apply(solution), aug


def augment_versions(puzzle: np.ndarray, solution: np.ndarray, num_aug: int, rng: np.random.Generator,
                     max_rounds: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Version 0 (the original) plus up to ``num_aug`` distinct augmented versions, ``[V, 81]`` each.

    Duplicates (by puzzle content) are dropped and replaced by fresh draws for up to ``max_rounds`` rounds; a
    puzzle with a small symmetry orbit can end with fewer versions.
    """
    puzzle = np.asarray(puzzle, dtype=np.uint8).reshape(81)
    solution = np.asarray(solution, dtype=np.uint8).reshape(81)
    seen = {puzzle.tobytes()}
    keep_p, keep_s = [puzzle[None]], [solution[None]]
    missing = num_aug
    for _ in range(max_rounds):
        if missing <= 0:
            break
        maps, transpose, rows, cols = _sample_arrays(rng, missing)
        pos = _positions(transpose, rows, cols)
        maps = maps.astype(np.uint8)
        new_p = np.take_along_axis(maps, puzzle[pos].astype(np.intp), axis=1)
        new_s = np.take_along_axis(maps, solution[pos].astype(np.intp), axis=1)
        fresh = []
        for k in range(missing):
            key = new_p[k].tobytes()
            if key not in seen:
                seen.add(key)
                fresh.append(k)
        keep_p.append(new_p[fresh])
        keep_s.append(new_s[fresh])
        missing -= len(fresh)
    return np.concatenate(keep_p), np.concatenate(keep_s)

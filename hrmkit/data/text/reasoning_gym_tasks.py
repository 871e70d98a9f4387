"""Small reasoning-gym tasks as text datasets with a character-level tokenizer, judged by the task's own scorer.

Why: a CPU-sized text model needs tasks that are procedurally generated (unlimited, offline), short, and checkable
by a scorer that is not ours. reasoning-gym (the ``gsm`` extra) ships such tasks with ``score_answer``. Each record
is ``{"instruction": question, "response": answer}`` with the ``direct`` condition (no chain of thought): the
model must produce the answer string itself, and the scorer decides. A preset with a ``worked`` solver instead
trains on a worked solution under the ``cot`` condition: the solver's steps, then the answer in ``\\boxed{...}``
(HRM-Text's convention); the scorer judges the last box of the model's output.

Splits are disjoint by seed: reasoning-gym draws example ``i`` of a dataset with seed ``s`` from ``Random(s + i)``,
so train takes seeds ``seed .. seed + n_train - 1`` and held-out the next ``n_test`` seeds; held-out questions that
also occur in train (small tasks repeat short problems) are dropped, so every held-out question is unseen. A preset
may keep only well-posed examples (``mini_sudoku``: one solution); train then draws seeds until it holds
``n_train`` of them, and held-out takes the kept ones among the next ``n_test`` seeds.

:data:`PRESETS` names the tried sizes (reasoning-gym's defaults are larger than a CPU run can learn in minutes).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrmkit.data.text.boxed import last_boxed
from hrmkit.data.text.format import TextMetadata, check_text_output_dir
from hrmkit.data.text.jsonl import build_text_dataset, write_jsonl
from hrmkit.data.text.tokenizer import char_level


@dataclass(frozen=True)
class GymTask:
    """A reasoning-gym dataset name with the config overrides that size it for a CPU run, and optionally a filter
    that keeps only well-posed examples (``keep(example) -> bool``)."""

    dataset: str
    config: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    keep: Callable[[dict[str, Any]], bool] | None = None
    # example -> its worked steps, each ending in a newline (``cot`` records: the steps, then the answer boxed)
    worked: Callable[[dict[str, Any]], str] | None = None
    max_new_tokens: int = 64  # long enough for every answer (worked ones included)


def _candidates(board: Sequence[Sequence[int]], r: int, c: int) -> set[int]:
    """The digits that cell ``(r, c)``'s row, column and 2x2 box of a 4x4 Sudoku leave open (``0`` = blank)."""
    box = (board[i][j] for i in range(r - r % 2, r - r % 2 + 2) for j in range(c - c % 2, c - c % 2 + 2))
    return {1, 2, 3, 4} - {*board[r], *(board[i][c] for i in range(4)), *box}


def mini_sudoku_solutions(puzzle: Sequence[Sequence[int]], cap: int = 2) -> int:
    """Number of completions (counted up to ``cap``) of a 4x4 Sudoku (``0`` = blank, boxes 2x2)."""
    board = [list(row) for row in puzzle]
    found = 0

    def search(cell: int) -> None:
        nonlocal found
        while cell < 16 and board[cell // 4][cell % 4]:
            cell += 1
        if cell == 16:
            found += 1
            return
        r, c = divmod(cell, 4)
        for v in sorted(_candidates(board, r, c)):
            if found < cap:
                board[r][c] = v
                search(cell + 1)
                board[r][c] = 0

    search(0)
    return found


def unique_mini_sudoku(example: dict[str, Any]) -> bool:
    """Whether a reasoning-gym mini_sudoku puzzle has exactly one solution. reasoning-gym 0.1.5 blanks cells at
    random without this check (about 60 % of its default puzzles have several solutions), while its scorer accepts
    only the stored one, so an ambiguous puzzle cannot be answered reliably by any solver."""
    return mini_sudoku_solutions(example["metadata"]["puzzle"]) == 1


def mini_sudoku_steps(puzzle: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """A human solving order for a 4x4 Sudoku: ``(row, col, value)`` fills, 0-based. Each fill is the first blank
    (row-major) whose row, column and box leave it one candidate (a naked single). Every 4x4 puzzle with one
    solution that text-cpu draws solves this way (its 20,000 training and 527 held-out puzzles, and 20,000 random
    maskings searched for a counter-example); a board that stalls fails with the board."""
    board = [list(row) for row in puzzle]
    steps: list[tuple[int, int, int]] = []
    while any(0 in row for row in board):
        blanks = [(r, c) for r in range(4) for c in range(4) if not board[r][c]]
        fill = next(((r, c, min(v)) for r, c in blanks for v in [_candidates(board, r, c)] if len(v) == 1), None)
        if fill is None:
            raise ValueError(f"mini_sudoku: no blank with a single candidate in {board} (the worked solver fills "
                             "naked singles only)")
        r, c, v = fill
        board[r][c] = v
        steps.append(fill)
    return steps


def mini_sudoku_worked(example: dict[str, Any]) -> str:
    """The worked steps of a reasoning-gym mini_sudoku example, one fill per line (``r2c3=4``, 1-based)."""
    return "".join(f"r{r + 1}c{c + 1}={v}\n" for r, c, v in mini_sudoku_steps(example["metadata"]["puzzle"]))


def mini_sudoku_waves(puzzle: Sequence[Sequence[int]]) -> list[list[list[int]]]:
    """The boards of a 4x4 Sudoku after each wave of naked singles: every blank that the previous board leaves one
    candidate is filled at once (``0`` = still blank); the last board is the solution. A board that stalls fails
    with the board."""
    board = [list(row) for row in puzzle]
    boards: list[list[list[int]]] = []
    while any(0 in row for row in board):
        fills = {(r, c): min(v) for r in range(4) for c in range(4) if not board[r][c]
                 for v in [_candidates(board, r, c)] if len(v) == 1}
        if not fills:
            raise ValueError(f"mini_sudoku: no blank with a single candidate in {board} (the worked solver fills "
                             "naked singles only)")
        board = [[fills.get((r, c), board[r][c]) for c in range(4)] for r in range(4)]
        boards.append(board)
    return boards


def mini_sudoku_waves_worked(example: dict[str, Any]) -> str:
    """The boards before the last of a reasoning-gym mini_sudoku example's naked-single waves, in the question's
    grid format (``_`` = blank), separated by blank lines; the last board is the boxed answer."""
    boards = mini_sudoku_waves(example["metadata"]["puzzle"])[:-1]
    return "".join("\n".join(" ".join(str(v) if v else "_" for v in row) for row in b) + "\n\n" for b in boards)


#: Task presets (name → reasoning-gym dataset and config). Sizes are chosen to be learnable on a CPU in minutes.
PRESETS: dict[str, GymTask] = {
    "chain_sum": GymTask("chain_sum", {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2},
                         "2-3 terms of 1-2 digits, + and -"),
    "basic_arithmetic": GymTask("basic_arithmetic", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2,
                                                     "operators": ("+", "-"), "allow_parentheses": False,
                                                     "allow_negation": False},
                                "2 terms of 1-2 digits, + and -"),
    "number_sorting": GymTask("number_sorting", {"min_numbers": 3, "max_numbers": 5, "min_decimals": 0,
                                                 "max_decimals": 0, "min_value": -99.0, "max_value": 99.0},
                              "3-5 integers in [-99, 99], ascending or descending"),
    "mini_sudoku": GymTask("mini_sudoku", {}, "4x4 Sudoku, 8-12 blanks (reasoning-gym default), only puzzles with "
                           "one solution", keep=unique_mini_sudoku),
    "mini_sudoku_worked": GymTask("mini_sudoku", {}, "4x4 Sudoku, 8-12 blanks (reasoning-gym default), only "
                                  "puzzles with one solution; trained on worked solutions (one single per line, "
                                  "then the grid boxed)", keep=unique_mini_sudoku, worked=mini_sudoku_worked,
                                  max_new_tokens=160),
    "mini_sudoku_waves": GymTask("mini_sudoku", {}, "4x4 Sudoku, 8-12 blanks (reasoning-gym default), only "
                                 "puzzles with one solution; trained on worked solutions (the board after each wave "
                                 "of naked singles, the last one boxed)", keep=unique_mini_sudoku,
                                 worked=mini_sudoku_waves_worked, max_new_tokens=200),
    "mini_sudoku_any": GymTask("mini_sudoku", {}, "4x4 Sudoku, 8-12 blanks (reasoning-gym default), every puzzle "
                               "(about 60 % have several solutions; the scorer accepts only the stored one)"),
    "simple_equations": GymTask("simple_equations", {"min_terms": 2, "max_terms": 2, "max_value": 20},
                                "a*x + b = c style, constants up to 20"),
}


def _gym() -> Any:
    try:
        import reasoning_gym
    except ImportError as e:
        raise ImportError("reasoning-gym tasks need reasoning-gym: pip install 'hrmkit[gsm]' "
                          "(reasoning-gym==0.1.5)") from e
    return reasoning_gym


def resolve(task: str | GymTask) -> GymTask:
    """A preset by name (or a :class:`GymTask` as is); unknown names fail with the list of presets."""
    if isinstance(task, GymTask):
        return task
    if task not in PRESETS:
        raise ValueError(f"task {task!r}: not a text-cpu preset; choose one of {', '.join(PRESETS)}")
    return PRESETS[task]


def preset_tag(task: str | GymTask) -> str:
    """A short digest of the dataset, config and filter: a built dataset is reused only for the same preset."""
    spec = resolve(task)
    keep, worked = (getattr(f, "__name__", None) for f in (spec.keep, spec.worked))
    key = (spec.dataset, sorted(spec.config.items()), keep) + ((worked,) if worked else ())
    return hashlib.sha256(repr(key).encode()).hexdigest()[:8]


def gym_dataset(task: str | GymTask, seed: int, size: int) -> Any:
    """The reasoning-gym dataset object (its ``score_answer`` judges answers)."""
    spec = resolve(task)
    return _gym().create_dataset(spec.dataset, seed=seed, size=size, **spec.config)


def to_record(example: dict[str, Any], where: str,
              worked: Callable[[dict[str, Any]], str] | None = None) -> dict[str, Any]:
    """One reasoning-gym example as a JSONL record; the whole example is kept (``entry``) for the scorer. With a
    ``worked`` solver the response is its steps, then the answer boxed, under the ``cot`` condition."""
    try:
        question, answer = str(example["question"]), str(example["answer"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{where}: not a reasoning-gym example (needs question and answer): {e}") from None
    if worked is None:
        return {"instruction": question, "response": answer, "condition": "direct", "entry": example}
    try:
        steps = worked(example)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return {"instruction": question, "response": f"{steps}\\boxed{{{answer}}}", "condition": "cot",
            "entry": example}


def _draw(task: GymTask, start: int, wanted: int, exact: bool) -> tuple[list[dict], int]:
    """Records from seeds ``start, start + 1, ...``: ``wanted`` kept ones (``exact``) or the kept ones among
    ``wanted`` drawn; returns them and the next unused seed."""
    if task.keep is None:
        ds = gym_dataset(task, start, wanted)
        return ([to_record(ds[i], f"{task.dataset} seed {start + i}", task.worked) for i in range(wanted)],
                start + wanted)
    limit = 50 * wanted + 100  # a filter that keeps under 2 % is a broken preset, not a slow draw
    ds = gym_dataset(task, start, limit)
    out, i = [], 0
    while (len(out) if exact else i) < wanted:
        if i == limit:
            raise ValueError(f"{task.dataset}: its filter kept {len(out)} of {limit} examples; the preset is unusable")
        example = ds[i]
        if task.keep(example):
            out.append(to_record(example, f"{task.dataset} seed {start + i}", task.worked))
        i += 1
    return out, start + i


def task_records(task: str | GymTask, n_train: int, n_test: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``(train, held_out)`` records, disjoint by seed and by question (see the module docstring). With a filter
    (``GymTask.keep``) train holds ``n_train`` kept examples and held-out the kept ones among the next ``n_test``
    seeds."""
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got {n_train} and {n_test}")
    spec = resolve(task)
    train, next_seed = _draw(spec, seed, n_train, exact=True)
    seen = {r["instruction"] for r in train}
    held_out = [r for r in _draw(spec, next_seed, n_test, exact=False)[0] if r["instruction"] not in seen]
    if not held_out:
        raise ValueError(f"{spec.dataset}: none of {n_test} held-out questions is both new and kept; use a larger "
                         "task preset or more held-out seeds")
    return train, held_out


def scorer(task: str | GymTask) -> Callable[[str, dict[str, Any]], float]:
    """``score(answer, record)``: the task's own ``score_answer`` (1.0 = right) on a record's stored example. A
    worked preset's answer is the last ``\\boxed{...}`` of the output (an output without one scores 0)."""
    judge = gym_dataset(task, 0, 1).score_answer
    if resolve(task).worked is None:
        return lambda answer, record: float(judge(answer, record["entry"]))

    def boxed(answer: str, record: dict[str, Any]) -> float:
        final = last_boxed(answer)
        return 0.0 if final is None else float(judge(final.strip(), record["entry"]))

    return boxed


def build_gym_text(out_dir: str, task: str | GymTask, train: Sequence[dict], held_out: Sequence[dict],
                   max_len: int = 512, overwrite: bool = False) -> TextMetadata:
    """A text dataset (held-out = val split) with a character-level tokenizer over the training texts' alphabet;
    the records are kept in ``<out_dir>/jsonl/``."""
    spec = resolve(task)
    return build_char_text(out_dir, train, held_out, "hrmkit.data.text.reasoning_gym_tasks",
                           {"task": spec.dataset, "config": {k: list(v) if isinstance(v, tuple) else v
                                                             for k, v in spec.config.items()}},
                           max_len=max_len, overwrite=overwrite)


def build_char_text(out_dir: str, train: Sequence[dict], held_out: Sequence[dict], builder: str,
                    build_args: dict[str, Any], max_len: int = 512, overwrite: bool = False) -> TextMetadata:
    """Instruction→response records (``condition`` per record) as a text dataset with a character-level tokenizer
    over the training texts' alphabet (held-out = val split); the records are kept in ``<out_dir>/jsonl/``."""
    target = check_text_output_dir(out_dir, overwrite)
    tok = char_level(r[k] for r in train for k in ("instruction", "response"))
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{target.name}.jsonl-", dir=target.parent))
    plain = lambda rs: [{k: r[k] for k in ("instruction", "response", "condition")} for r in rs]  # noqa: E731
    try:
        train_file = write_jsonl(scratch / "train.jsonl", plain(train))
        test_file = write_jsonl(scratch / "test.jsonl", plain(held_out))
        return build_text_dataset(target, [train_file], tok, val_jsonl=[test_file], max_len=max_len,
                                  overwrite=overwrite,
                                  extra_files={"jsonl/train.jsonl": train_file, "jsonl/test.jsonl": test_file},
                                  builder=builder,
                                  build_args={**build_args, "train": len(train), "held_out": len(held_out)})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

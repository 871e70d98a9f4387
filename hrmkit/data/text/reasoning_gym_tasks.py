"""Small reasoning-gym tasks as text datasets with a character-level tokenizer, judged by the task's own scorer.

Why: a CPU-sized text model needs tasks that are procedurally generated (unlimited, offline), short, and checkable
by a scorer that is not ours. reasoning-gym (the ``gsm`` extra) ships such tasks with ``score_answer``. Each record
is ``{"instruction": question, "response": answer}`` with the ``direct`` condition (no chain of thought): the
model must produce the answer string itself, and the scorer decides.

Splits are disjoint by seed: reasoning-gym draws example ``i`` of a dataset with seed ``s`` from ``Random(s + i)``,
so train takes seeds ``seed .. seed + n_train - 1`` and held-out the next ``n_test`` seeds; held-out questions that
also occur in train (small tasks repeat short problems) are dropped, so every held-out question is unseen.

:data:`PRESETS` names the tried sizes (reasoning-gym's defaults are larger than a CPU run can learn in minutes).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrmkit.data.text.format import TextMetadata, check_text_output_dir
from hrmkit.data.text.jsonl import build_text_dataset, write_jsonl
from hrmkit.data.text.tokenizer import char_level


@dataclass(frozen=True)
class GymTask:
    """A reasoning-gym dataset name with the config overrides that size it for a CPU run."""

    dataset: str
    config: dict[str, Any] = field(default_factory=dict)
    note: str = ""


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
    "mini_sudoku": GymTask("mini_sudoku", {}, "4x4 Sudoku, 8-12 blanks (reasoning-gym default)"),
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


def gym_dataset(task: str | GymTask, seed: int, size: int) -> Any:
    """The reasoning-gym dataset object (its ``score_answer`` judges answers)."""
    spec = resolve(task)
    return _gym().create_dataset(spec.dataset, seed=seed, size=size, **spec.config)


def to_record(example: dict[str, Any], where: str) -> dict[str, Any]:
    """One reasoning-gym example as a JSONL record; the whole example is kept (``entry``) for the scorer."""
    try:
        question, answer = str(example["question"]), str(example["answer"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{where}: not a reasoning-gym example (needs question and answer): {e}") from None
    return {"instruction": question, "response": answer, "condition": "direct", "entry": example}


def task_records(task: str | GymTask, n_train: int, n_test: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``(train, held_out)`` records, disjoint by seed and by question (see the module docstring)."""
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got {n_train} and {n_test}")
    name = resolve(task).dataset
    train_ds, test_ds = gym_dataset(task, seed, n_train), gym_dataset(task, seed + n_train, n_test)
    train = [to_record(train_ds[i], f"{name} seed {seed + i}") for i in range(n_train)]
    seen = {r["instruction"] for r in train}
    held_out = [r for r in (to_record(test_ds[i], f"{name} seed {seed + n_train + i}") for i in range(n_test))
                if r["instruction"] not in seen]
    if not held_out:
        raise ValueError(f"{name}: all {n_test} held-out questions also occur in train; use a larger task preset")
    return train, held_out


def scorer(task: str | GymTask) -> Callable[[str, dict[str, Any]], float]:
    """``score(answer, record)``: the task's own ``score_answer`` (1.0 = right) on a record's stored example."""
    judge = gym_dataset(task, 0, 1).score_answer
    return lambda answer, record: float(judge(answer, record["entry"]))


def build_gym_text(out_dir: str, task: str | GymTask, train: Sequence[dict], held_out: Sequence[dict],
                   max_len: int = 512, overwrite: bool = False) -> TextMetadata:
    """A text dataset (held-out = val split) with a character-level tokenizer over the training texts' alphabet;
    the records are kept in ``<out_dir>/jsonl/``."""
    target = check_text_output_dir(out_dir, overwrite)
    tok = char_level(r[k] for r in train for k in ("instruction", "response"))
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{target.name}.jsonl-", dir=target.parent))
    plain = lambda rs: [{k: r[k] for k in ("instruction", "response", "condition")} for r in rs]  # noqa: E731
    spec = resolve(task)
    try:
        train_file = write_jsonl(scratch / "train.jsonl", plain(train))
        test_file = write_jsonl(scratch / "test.jsonl", plain(held_out))
        return build_text_dataset(target, [train_file], tok, val_jsonl=[test_file], max_len=max_len,
                                  overwrite=overwrite,
                                  extra_files={"jsonl/train.jsonl": train_file, "jsonl/test.jsonl": test_file},
                                  builder="hrmkit.data.text.reasoning_gym_tasks",
                                  build_args={"task": spec.dataset, "config": {k: list(v) if isinstance(v, tuple)
                                                                               else v for k, v in spec.config.items()},
                                              "train": len(train), "held_out": len(held_out)})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

"""ARC test-time aggregation (spec §4.6): crop, undo each version's augmentation, vote, score pass@K, submit.

Each evaluated example is one augmented version of one test input. Its prediction is cropped, mapped back to the
original frame (inverse dihedral, then inverse colour map), and counted as a vote for that test input. Candidates
rank by vote count, ties by mean sigmoid(q_halt). Two scoring conventions exist and give different numbers:

* ``scoring="task"`` (HRM notebook): a task counts only if ALL its test inputs are solved within the top K.
* ``scoring="fraction"`` (TRM / ARC Prize): each task scores the fraction of its test inputs solved; mean over tasks.

Votes are kept per checkpoint. ``pooled=True`` reproduces TRM's ``aggregated_voting`` (votes of every evaluation so
far pool into one ensemble); ``pooled=False`` scores each checkpoint on its own votes.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hrmkit.data.puzzles.arc import COLOUR_OFFSET, GRID_SIZE, VOCAB_SIZE, parse_version_name
from hrmkit.data.puzzles.dihedral import inverse_augment_grid

Scoring = Literal["task", "fraction"]
Checkpoint = str | int
DEFAULT_PASS_KS: tuple[int, ...] = (1, 2, 5, 10, 100)
_EMPTY = np.zeros((0, 0), dtype=np.uint8)


def crop(seq: np.ndarray, translated: bool = False) -> np.ndarray:
    """The grid in a 900-token canvas, exactly as the reference crop (§4.6 step 3), colours back to 0..9.

    Scanning rows from the top, each row's width is where its first non-colour token sits (never growing); the
    (rows × width) rectangle of largest area wins. The reference anchors it at (0, 0), which is right for test-split
    canvases and predictions. ``translated=True`` first moves the anchor to the first row and first column holding
    any colour, for translated train canvases. A canvas without a colour at its anchor crops to a 0×0 grid.
    """
    canvas = np.asarray(seq)
    if canvas.size != GRID_SIZE * GRID_SIZE:
        raise ValueError(f"crop expects {GRID_SIZE * GRID_SIZE} tokens, got shape {canvas.shape}")
    canvas = canvas.reshape(GRID_SIZE, GRID_SIZE)
    colour = (canvas >= COLOUR_OFFSET) & (canvas < VOCAB_SIZE)
    if translated:
        rows, cols = np.flatnonzero(colour.any(axis=1)), np.flatnonzero(colour.any(axis=0))
        if rows.size == 0:
            return _EMPTY.copy()
        canvas, colour = canvas[rows[0]:, cols[0]:], colour[rows[0]:, cols[0]:]
    first_gap = np.where(colour.all(axis=1), colour.shape[1], np.argmin(colour, axis=1))
    width = np.minimum.accumulate(first_gap)
    area = (np.arange(len(width)) + 1) * width
    best = int(np.argmax(area))
    if area[best] == 0:
        return _EMPTY.copy()
    return (canvas[:best + 1, :width[best]] - COLOUR_OFFSET).astype(np.uint8)


def inverse_augment(grid: np.ndarray, version: str) -> np.ndarray:
    """Map a grid from the frame of ARC version ``version`` back to the original task's frame."""
    _, tid, cmap = parse_version_name(version)
    return inverse_augment_grid(np.asarray(grid, dtype=np.uint8), tid, cmap)


def _key(grid: np.ndarray) -> bytes:
    return np.asarray(grid.shape, dtype=np.int64).tobytes() + np.ascontiguousarray(grid, dtype=np.uint8).tobytes()


def _as_grid(value: Any, where: str, allow_empty: bool = False) -> np.ndarray:
    try:
        grid = np.asarray(value)
    except ValueError as e:
        raise ValueError(f"{where}: not a rectangular grid ({e})") from None
    if grid.ndim != 2 or (grid.size == 0 and not allow_empty):
        raise ValueError(f"{where}: expected a non-empty 2-D grid, got shape {grid.shape}")
    if grid.size and (not np.issubdtype(grid.dtype, np.integer) or grid.min() < 0 or grid.max() > 9):
        raise ValueError(f"{where}: cells must be integer colours 0..9")
    return grid.astype(np.uint8)


def write_json_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """Write JSON to a temporary file beside ``path`` and rename it into place (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class ArcVoter:
    """Collects predictions per checkpoint and turns them into pass@K scores and a Kaggle submission.

    ``test_puzzles`` is the builder's ground truth (:attr:`hrmkit.data.puzzles.arc.ArcBuild.test_puzzles`): task
    name → ``{"test": [{"input": grid, "output": grid | None}, ...], "task_id": str (optional)}``. Tasks without any
    prediction score 0: the denominator is every task in ``test_puzzles``, as in TRM. ``identifiers`` (id → version
    name, the dataset's ``identifiers.json``) is needed only by :meth:`add_sequences`.
    """

    def __init__(self, test_puzzles: Mapping[str, Mapping[str, Any]], *, pooled: bool,
                 identifiers: Sequence[str] | None = None, pass_ks: Sequence[int] = DEFAULT_PASS_KS) -> None:
        if not isinstance(pooled, bool):
            raise TypeError(f"pooled must be True (vote across all checkpoints so far) or False (per checkpoint), "
                            f"got {pooled!r}")
        if not pass_ks or any(int(k) < 1 for k in pass_ks):
            raise ValueError(f"pass_ks must be positive integers, got {list(pass_ks)}")
        self.pooled = pooled
        self.identifiers = None if identifiers is None else list(identifiers)
        self.pass_ks = tuple(sorted({int(k) for k in pass_ks}))
        self._inputs: dict[str, list[bytes]] = {}
        self._outputs: dict[str, list[bytes | None]] = {}
        self._task_ids: dict[str, str] = {}
        for name, entry in test_puzzles.items():
            where = f"test_puzzles[{name!r}]"
            tests = entry.get("test") if isinstance(entry, Mapping) else None
            if not isinstance(tests, list) or not tests:
                raise ValueError(f"{where}: field 'test' must be a non-empty list of {{'input', 'output'}} pairs")
            self._inputs[name], self._outputs[name] = [], []
            for i, pair in enumerate(tests):
                if not isinstance(pair, Mapping) or "input" not in pair:
                    raise ValueError(f"{where}.test[{i}]: expected an object with 'input' (and 'output')")
                self._inputs[name].append(_key(_as_grid(pair["input"], f"{where}.test[{i}].input")))
                out = pair.get("output")
                self._outputs[name].append(None if out is None else _key(_as_grid(out, f"{where}.test[{i}].output")))
            self._task_ids[name] = str(entry.get("task_id", name))
        # checkpoint → (task, input key) → prediction key → [grid, count, sum of q]
        self._votes: dict[Checkpoint, dict[tuple[str, bytes], dict[bytes, list]]] = {}

    @classmethod
    def from_dataset(cls, data_dir: str | os.PathLike, *, pooled: bool,
                     pass_ks: Sequence[int] = DEFAULT_PASS_KS) -> ArcVoter:
        """A voter for an ARC dataset built by :func:`hrmkit.data.puzzles.arc.build_arc` (reads its side files)."""
        from hrmkit.data.puzzles.arc import read_identifiers, read_test_puzzles

        return cls(read_test_puzzles(data_dir), pooled=pooled, identifiers=read_identifiers(data_dir),
                   pass_ks=pass_ks)

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """Checkpoints in the order their first prediction arrived."""
        return list(self._votes)

    def add(self, task: str, version: str, test_input: np.ndarray, prediction: np.ndarray, q_halt: float,
            checkpoint: Checkpoint = 0) -> None:
        """One vote: ``test_input`` and ``prediction`` are grids in the frame of ``version``; ``q_halt`` is the
        halting probability sigmoid(q_halt logit) used to break count ties."""
        if task not in self._inputs:
            raise ValueError(f"prediction for unknown task {task!r} (not in test_puzzles)")
        base, _, _ = parse_version_name(version)
        if base != task:
            raise ValueError(f"version {version!r} belongs to task {base!r}, not {task!r}")
        q = float(q_halt)
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"task {task!r} version {version!r}: q_halt must be a probability in [0, 1], got {q}")
        where = f"task {task!r} version {version!r}"
        inp = inverse_augment(_as_grid(test_input, f"{where}: test input"), version)
        pred = inverse_augment(_as_grid(prediction, f"{where}: prediction", allow_empty=True), version)
        in_key = _key(inp)
        if in_key not in self._inputs[task]:
            raise ValueError(f"{where}: the test input (after undoing the augmentation) matches none of the task's "
                             f"{len(self._inputs[task])} test inputs")
        slot = self._votes.setdefault(checkpoint, {}).setdefault((task, in_key), {})
        entry = slot.setdefault(_key(pred), [pred, 0, 0.0])
        entry[1] += 1
        entry[2] += q

    def add_sequences(self, puzzle_identifiers: Iterable[int], inputs: np.ndarray, predictions: np.ndarray,
                      q_halt_logits: Iterable[float], checkpoint: Checkpoint = 0) -> int:
        """Votes from a model batch: 900-token test inputs and argmax predictions (numpy or CPU tensors), puzzle
        identifiers indexing :attr:`identifiers` (0 = padding row, skipped) and raw q_halt logits. Returns votes
        added."""
        identifiers = self.identifiers
        if identifiers is None:
            raise ValueError("add_sequences needs the identifier map: ArcVoter(..., identifiers=...) or from_dataset")
        inputs, predictions = np.asarray(inputs), np.asarray(predictions)
        ids = np.asarray(puzzle_identifiers).reshape(-1)
        logits = np.asarray(q_halt_logits, dtype=np.float64).reshape(-1)
        if not len(inputs) == len(predictions) == len(ids) == len(logits):
            raise ValueError(f"batch sizes differ: inputs {len(inputs)}, predictions {len(predictions)}, "
                             f"identifiers {len(ids)}, q_halt {len(logits)}")
        added = 0
        for row, pid in enumerate(ids.tolist()):
            if pid == 0:
                continue
            if not 0 < pid < len(identifiers):
                raise ValueError(f"row {row}: puzzle identifier {pid} is outside the identifier map "
                                 f"(0..{len(identifiers) - 1})")
            version = identifiers[pid]
            q = 1.0 / (1.0 + math.exp(-logits[row])) if logits[row] > -700 else 0.0
            self.add(parse_version_name(version)[0], version, crop(inputs[row]), crop(predictions[row]), q,
                     checkpoint)
            added += 1
        return added

    def _view(self, checkpoint: Checkpoint | None) -> dict[tuple[str, bytes], dict[bytes, list]]:
        if not self._votes:
            return {}
        order = self.checkpoints
        target = order[-1] if checkpoint is None else checkpoint
        if target not in self._votes:
            raise KeyError(f"no predictions for checkpoint {target!r}; known: {order}")
        if not self.pooled:
            return self._votes[target]
        merged: dict[tuple[str, bytes], dict[bytes, list]] = {}
        for ckpt in order[:order.index(target) + 1]:
            for slot_key, cands in self._votes[ckpt].items():
                slot = merged.setdefault(slot_key, {})
                for pred_key, (grid, count, qsum) in cands.items():
                    entry = slot.setdefault(pred_key, [grid, 0, 0.0])
                    entry[1] += count
                    entry[2] += qsum
        return merged

    def ranked(self, task: str, test_index: int, checkpoint: Checkpoint | None = None
               ) -> list[tuple[np.ndarray, int, float]]:
        """Candidates for one test input as (grid, votes, mean q_halt), best first.

        Pooled: votes of every checkpoint up to ``checkpoint`` (default: the latest). Per-checkpoint: only its own.
        """
        return self._rank(self._view(checkpoint), task, test_index)

    def _rank(self, view: Mapping, task: str, test_index: int) -> list[tuple[np.ndarray, int, float]]:
        cands = view.get((task, self._inputs[task][test_index]), {})
        ranked = [(grid, count, qsum / count) for grid, count, qsum in cands.values()]
        ranked.sort(key=lambda c: (-c[1], -c[2]))  # stable: full ties keep arrival order
        return ranked

    def pass_at_k(self, scoring: Scoring, checkpoint: Checkpoint | None = None) -> dict[int, float]:
        """pass@K for every K in ``pass_ks`` under ``scoring`` ("task": all test inputs solved; "fraction": mean
        fraction of test inputs solved), averaged over all tasks of ``test_puzzles``."""
        if scoring not in ("task", "fraction"):
            raise ValueError(f"scoring must be 'task' (HRM, all-or-nothing) or 'fraction' (TRM/ARC Prize), "
                             f"got {scoring!r}")
        if not self._inputs:
            return {k: 0.0 for k in self.pass_ks}
        view = self._view(checkpoint)
        totals = dict.fromkeys(self.pass_ks, 0.0)
        for task, outputs in self._outputs.items():
            if any(o is None for o in outputs):
                raise ValueError(f"task {task!r} has no ground-truth test outputs; it can only be submitted, "
                                 "not scored")
            ranks = []
            for i, truth in enumerate(outputs):
                keys = [_key(grid) for grid, _, _ in self._rank(view, task, i)]
                ranks.append(keys.index(truth) if truth in keys else math.inf)
            for k in self.pass_ks:
                solved = [r < k for r in ranks]
                totals[k] += float(all(solved)) if scoring == "task" else sum(solved) / len(solved)
        return {k: v / len(self._outputs) for k, v in totals.items()}

    def results(self, scoring: Scoring) -> dict[Checkpoint, dict[int, float]]:
        """pass@K after every checkpoint (cumulative when pooled, separate otherwise)."""
        return {ckpt: self.pass_at_k(scoring, ckpt) for ckpt in self.checkpoints}

    def submission(self, checkpoint: Checkpoint | None = None) -> dict[str, list[dict[str, list[list[int]]]]]:
        """Kaggle format ``{task_id: [{"attempt_1": grid, "attempt_2": grid}, ...]}``, one entry per test input.

        attempt_2 repeats attempt_1 when there is a single candidate; a test input without candidates (or an empty
        cropped grid) gets ``[[0]]``.
        """
        view = self._view(checkpoint)
        out: dict[str, list[dict[str, list[list[int]]]]] = {}
        owner: dict[str, str] = {}
        for task in self._inputs:
            task_id = self._task_ids[task]
            if task_id in owner:
                raise ValueError(f"tasks {owner[task_id]!r} and {task!r} share the submission id {task_id!r}; "
                                 "evaluate one ARC version at a time")
            owner[task_id] = task
            entries = []
            for i in range(len(self._inputs[task])):
                grids = [g.tolist() if g.size else [[0]] for g, _, _ in self._rank(view, task, i)[:2]] or [[[0]]]
                entries.append({"attempt_1": grids[0], "attempt_2": grids[1] if len(grids) > 1 else grids[0]})
            out[task_id] = entries
        return out

    def write_submission(self, path: str | os.PathLike, checkpoint: Checkpoint | None = None) -> Path:
        """Write :meth:`submission` as ``submission.json`` atomically."""
        return write_json_atomic(self.submission(checkpoint), path)

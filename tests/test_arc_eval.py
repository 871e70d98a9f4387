"""ARC evaluation: crop, inverse augmentation, voting with q tie-breaks, pass@K conventions, pooling, submission."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from hrmkit.data.puzzles.arc import arc_groups, grid_to_canvas, prepare_arc, version_name
from hrmkit.data.puzzles.dihedral import augment_grid
from hrmkit.eval.arc import ArcVoter, crop, inverse_augment

RNG = np.random.default_rng(5)


def _grid(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 10, size=(h, w)).astype(np.uint8)


def test_crop_recovers_grids_from_bordered_canvases():
    rng = np.random.default_rng(0)
    shapes = [(1, 1), (30, 30), (1, 30), (30, 1)] + [tuple(rng.integers(1, 31, size=2)) for _ in range(60)]
    for h, w in shapes:
        grid = rng.integers(0, 10, size=(h, w)).astype(np.uint8)
        r, c = int(rng.integers(0, 31 - h)), int(rng.integers(0, 31 - w))
        assert np.array_equal(crop(grid_to_canvas(grid, r, c).reshape(-1), translated=True), grid)
        assert np.array_equal(crop(grid_to_canvas(grid)), grid)
        if r or c:  # the reference crop is anchored at (0, 0): a translated canvas has no grid there
            assert crop(grid_to_canvas(grid, r, c)).shape == (0, 0)


def test_crop_keeps_the_largest_rectangle_of_a_ragged_prediction():
    canvas = np.zeros((30, 30), dtype=np.uint8)
    canvas[0, :5] = 3
    canvas[1:3, :3] = 4
    canvas[1:3, 3] = 1
    assert crop(canvas).shape == (3, 3)  # areas 5, 6, 9 -> 3 rows x 3 cols
    assert (crop(canvas) == np.array([[1, 1, 1], [2, 2, 2], [2, 2, 2]])).all()
    canvas[3, :4] = 5
    assert crop(canvas).shape == (4, 3)  # width never grows back
    with pytest.raises(ValueError, match="900 tokens"):
        crop(np.zeros(899))


def test_inverse_augment_by_version_name():
    grid = _grid(3, 5)
    cmap = np.array([0, 9, 8, 7, 6, 5, 4, 3, 2, 1], dtype=np.uint8)
    for tid in range(8):
        assert np.array_equal(inverse_augment(augment_grid(grid, tid, cmap), version_name("x", tid, cmap)), grid)


# Hand-made ground truth: t1 has one test input, t2 two, t3 one that never gets a prediction.
A1, B1, W1 = _grid(3, 3), _grid(3, 3), _grid(3, 3)
A2, B2 = _grid(2, 4), _grid(4, 2)
A3, B3, X, Y, Z = _grid(5, 5), _grid(5, 5), _grid(5, 5), _grid(2, 2), _grid(1, 5)
A4, B4 = _grid(1, 1), _grid(1, 1)
TRUTH = {
    "t1": {"test": [{"input": A1.tolist(), "output": B1.tolist()}]},
    "t2": {"test": [{"input": A2.tolist(), "output": B2.tolist()}, {"input": A3.tolist(), "output": B3.tolist()}]},
    "t3": {"task_id": "t3", "test": [{"input": A4.tolist(), "output": B4.tolist()}]},
}
CMAPS = [np.array([0, *RNG.permutation(np.arange(1, 10))], dtype=np.uint8) for _ in range(4)]


def _vote(voter: ArcVoter, task: str, test_input: np.ndarray, pred: np.ndarray, q: float, n: int, ckpt) -> None:
    """Add the vote in the frame of an augmented version (so the voter must undo it)."""
    tid, cmap = n % 8, CMAPS[n % len(CMAPS)]
    voter.add(task, version_name(task, tid, cmap), augment_grid(test_input, tid, cmap), augment_grid(pred, tid, cmap),
              q, checkpoint=ckpt)


def _fill_a(voter: ArcVoter) -> None:
    # t1: correct x2 (mean q 0.3) ties wrong W1 x2 (mean q 0.8): q puts W1 first, the answer second.
    for n, (pred, q) in enumerate([(B1, 0.2), (W1, 0.9), (B1, 0.4), (W1, 0.7)]):
        _vote(voter, "t1", A1, pred, q, n, "a")
    # t2 test 0: correct x3. t2 test 1: X x3, Y x2 (q 0.6), Z x2 (q 0.1), correct x1 -> rank 4.
    for n in range(3):
        _vote(voter, "t2", A2, B2, 0.5, n, "a")
    for n, (pred, q) in enumerate([(X, .5)] * 3 + [(Z, .1)] * 2 + [(Y, .6)] * 2 + [(B3, .99)]):
        _vote(voter, "t2", A3, pred, q, n + 1, "a")


def _fill_b(voter: ArcVoter) -> None:
    _vote(voter, "t1", A1, B1, 0.1, 5, "b")


def test_votes_rank_by_count_then_mean_q():
    voter = ArcVoter(TRUTH, pooled=True)
    _fill_a(voter)
    ranked = voter.ranked("t1", 0)
    assert [(c, round(q, 6)) for _, c, q in ranked] == [(2, 0.8), (2, 0.3)]
    assert np.array_equal(ranked[0][0], W1) and np.array_equal(ranked[1][0], B1)
    ranked = voter.ranked("t2", 1)
    assert [g.tobytes() for g, _, _ in ranked] == [X.tobytes(), Y.tobytes(), Z.tobytes(), B3.tobytes()]


@pytest.mark.parametrize(("scoring", "expected"), [
    ("task", {1: 0.0, 2: 1 / 3, 5: 2 / 3, 10: 2 / 3, 100: 2 / 3}),
    ("fraction", {1: 0.5 / 3, 2: 1.5 / 3, 5: 2 / 3, 10: 2 / 3, 100: 2 / 3}),
])
def test_pass_at_k_conventions(scoring, expected):
    voter = ArcVoter(TRUTH, pooled=False)
    _fill_a(voter)
    assert voter.pass_at_k(scoring) == pytest.approx(expected)


def test_pooled_versus_per_checkpoint():
    pooled, separate = ArcVoter(TRUTH, pooled=True), ArcVoter(TRUTH, pooled=False)
    for voter in (pooled, separate):
        _fill_a(voter)
        _fill_b(voter)
        assert voter.checkpoints == ["a", "b"]
    # Pooled at b: t1 gets a third correct vote and wins; t2 unchanged.
    assert pooled.pass_at_k("task")[1] == pytest.approx(1 / 3)
    assert pooled.pass_at_k("fraction")[1] == pytest.approx(1.5 / 3)
    assert pooled.pass_at_k("fraction", "a")[1] == pytest.approx(0.5 / 3)  # cumulative up to a = a alone
    # Per checkpoint: b only saw t1's single correct vote.
    assert separate.pass_at_k("task")[1] == pytest.approx(1 / 3)
    assert separate.pass_at_k("fraction")[1] == pytest.approx(1 / 3)
    assert separate.results("fraction")["a"][2] == pytest.approx(1.5 / 3)
    assert pooled.results("task")["b"][5] == pytest.approx(2 / 3)


def test_submission_file(tmp_path):
    voter = ArcVoter(TRUTH, pooled=True)
    _fill_a(voter)
    path = voter.write_submission(tmp_path / "out" / "submission.json", checkpoint="a")
    sub = json.loads(path.read_text())
    assert sorted(sub) == ["t1", "t2", "t3"]
    assert sub["t1"] == [{"attempt_1": W1.tolist(), "attempt_2": B1.tolist()}]
    assert sub["t2"][0] == {"attempt_1": B2.tolist(), "attempt_2": B2.tolist()}  # one candidate: padded
    assert sub["t2"][1] == {"attempt_1": X.tolist(), "attempt_2": Y.tolist()}
    assert sub["t3"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]
    assert [p.name for p in path.parent.iterdir()] == ["submission.json"]  # no temporary file left behind


def test_voter_rejects_bad_input():
    with pytest.raises(TypeError):
        ArcVoter(TRUTH)  # pooled must be chosen explicitly
    with pytest.raises(TypeError, match="pooled"):
        ArcVoter(TRUTH, pooled="yes")
    voter = ArcVoter(TRUTH, pooled=True)
    with pytest.raises(ValueError, match="unknown task"):
        voter.add("nope", "nope", A1, B1, 0.5)
    with pytest.raises(ValueError, match="belongs to task"):
        voter.add("t1", "t2|||t1|||0123456789", A1, B1, 0.5)
    with pytest.raises(ValueError, match="matches none"):
        voter.add("t1", "t1", A2, B1, 0.5)
    with pytest.raises(ValueError, match="probability"):
        voter.add("t1", "t1", A1, B1, 3.0)
    with pytest.raises(ValueError, match="scoring"):
        voter.pass_at_k("mean")
    with pytest.raises(ValueError, match=r"test_puzzles\['x'\]"):
        ArcVoter({"x": {"test": []}}, pooled=True)
    voter.add("t1", "t1", A1, B1, 0.5)
    with pytest.raises(KeyError, match="checkpoint"):
        voter.pass_at_k("task", checkpoint="zzz")
    hidden = ArcVoter({"h": {"test": [{"input": [[1]], "output": None}]}}, pooled=False)
    hidden.add("h", "h", np.array([[1]]), np.array([[2]]), 0.5)
    with pytest.raises(ValueError, match="only be submitted"):
        hidden.pass_at_k("task")
    assert hidden.submission() == {"h": [{"attempt_1": [[2]], "attempt_2": [[2]]}]}


def test_builder_and_voter_agree_end_to_end(tmp_path):
    """Perfect predictions in every augmented frame of a built test split score 1.0 under both conventions."""
    rng = np.random.default_rng(2)
    for name, n_test in (("e1", 1), ("e2", 2)):
        pair = lambda: {"input": rng.integers(0, 10, (4, 6)).tolist(), "output": rng.integers(0, 10, (3, 2)).tolist()}
        path = tmp_path / "evaluation" / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"train": [pair()], "test": [pair() for _ in range(n_test)]}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build = prepare_arc(str(tmp_path), num_aug=5, seed=0)
    voter = ArcVoter(build.test_puzzles, pooled=True, identifiers=build.identifiers)
    added = 0
    for group in arc_groups(build, "test"):
        v, e, _ = group["inputs"].shape
        ids = np.repeat(group["puzzle_identifiers"], e)
        ids[0] = 0  # a padding row is skipped
        added += voter.add_sequences(ids, group["inputs"].reshape(v * e, -1),
                                     group["labels"].reshape(v * e, -1), np.zeros(v * e))
    assert added == 6 * 3 - 2
    assert voter.pass_at_k("task")[1] == voter.pass_at_k("fraction")[1] == 1.0
    assert voter.ranked("e2", 1)[0][1] == 6

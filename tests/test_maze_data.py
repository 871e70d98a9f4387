"""Maze data: generated labels are shortest paths (networkx as the independent judge), CSV validation, groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hrmkit.data.puzzles.dihedral import dihedral_transform
from hrmkit.data.puzzles.maze import (
    GOAL,
    OPEN,
    PATH,
    START,
    VOCAB_SIZE,
    WALL,
    Maze,
    decode_grid,
    encode_grid,
    generate_mazes,
    is_valid_shortest_path,
    maze_groups,
    maze_identifiers,
    maze_metadata,
    path_problem,
    read_maze_csv,
    solve,
)

nx = pytest.importorskip("networkx")

# A 5x5 maze with a loop: two shortest S->G paths of 4 moves.
LOOP = "#####" "#S  #" "# # #" "#  G#" "#####"


def _nx_judge(question: np.ndarray, answer: np.ndarray) -> bool:
    """Independent check: marked cells + S + G form an S-G path whose length equals networkx's shortest length."""
    graph = nx.grid_2d_graph(*question.shape)
    graph.remove_nodes_from(map(tuple, np.argwhere(question == WALL)))
    s, g = tuple(np.argwhere(question == START)[0]), tuple(np.argwhere(question == GOAL)[0])
    best = nx.shortest_path_length(graph, s, g)
    cells = [tuple(x) for x in np.argwhere((answer == PATH) | (answer == START) | (answer == GOAL))]
    sub = graph.subgraph(cells)
    return len(cells) == best + 1 and nx.has_path(sub, s, g) and nx.shortest_path_length(sub, s, g) == best


@pytest.fixture(scope="module")
def mazes() -> list[Maze]:
    return list(generate_mazes(12, seed=3, min_path_len=110))


def test_generated_labels_are_shortest_paths(mazes):
    assert len(mazes) == 12
    for m in mazes:
        q, a = m.question, m.answer
        assert q.shape == (30, 30) and q.dtype == np.uint8
        assert _nx_judge(q, a), "label is not a shortest path according to networkx"
        assert is_valid_shortest_path(q, a)
        assert m.path_len >= 110
        assert (q == START).sum() == 1 and (q == GOAL).sum() == 1 and not (q == PATH).any()
        assert np.array_equal(q == START, a == START) and np.array_equal(q == GOAL, a == GOAL)
        assert np.array_equal(a[a != PATH], q[a != PATH]) and (q[a == PATH] == OPEN).all()


def test_generator_is_deterministic_and_has_loops(mazes):
    again = list(generate_mazes(12, seed=3, min_path_len=110))
    assert all(np.array_equal(x.question, y.question) for x, y in zip(mazes, again))
    other = next(iter(generate_mazes(1, seed=4, min_path_len=110)))
    assert not np.array_equal(other.question, mazes[0].question)
    graph = nx.grid_2d_graph(30, 30)
    graph.remove_nodes_from(map(tuple, np.argwhere(mazes[0].question == WALL)))
    assert graph.number_of_edges() > graph.number_of_nodes() - 1  # a tree would have exactly n-1 edges


def test_generator_threshold_and_bad_arguments():
    assert all(m.path_len >= 30 for m in generate_mazes(5, seed=0, size=12, min_path_len=30, num_loops=2))
    with pytest.raises(RuntimeError, match="path length >= 500"):
        list(generate_mazes(1, seed=0, size=8, min_path_len=500, max_attempts=5))
    with pytest.raises(ValueError, match="size"):
        list(generate_mazes(1, size=3))


def test_judge_rejects_bad_answers():
    q = encode_grid(LOOP)
    a = solve(q)
    assert is_valid_shortest_path(LOOP, decode_grid(a))
    both = q.copy()
    both[1, 2] = both[1, 3] = both[2, 3] = both[2, 1] = both[3, 1] = both[3, 2] = PATH
    assert not is_valid_shortest_path(q, both)  # marks a cycle, not one path
    broken = q.copy()
    broken[1, 2] = broken[1, 3] = broken[3, 2] = PATH
    assert "do not connect" in path_problem(q, broken)
    wall = a.copy()
    wall[0, 0] = OPEN
    assert "wall" in path_problem(q, wall)
    assert not is_valid_shortest_path(q, q)  # no path marked at all
    for bad in (both, broken):
        assert is_valid_shortest_path(q, bad) == _nx_judge(q, bad)


def _write_csv(path: Path, rows: list[tuple[str, ...]], header: str = "source,question,answer,rating") -> Path:
    path.write_text(header + "\n" + "".join(",".join(f'"{x}"' for x in row) + "\n" for row in rows))
    return path


def test_csv_round_trip(tmp_path, mazes):
    rows = [("gen", decode_grid(m.question), decode_grid(m.answer), str(m.path_len)) for m in mazes[:3]]
    read = list(read_maze_csv(_write_csv(tmp_path / "train.csv", rows)))
    assert len(read) == 3
    assert all(np.array_equal(r.question, m.question) and np.array_equal(r.answer, m.answer)
               for r, m in zip(read, mazes))
    assert read[0].rating == float(mazes[0].path_len) and read[0].source == "gen"


@pytest.mark.parametrize(("question", "answer", "rating", "message"), [
    (LOOP[:-1], LOOP[:-1], "1", "square"),
    (LOOP.replace("#", "X", 1), LOOP, "1", "may only contain"),
    (LOOP, LOOP, "1", "shortest path has 3"),
    (LOOP, LOOP.replace(" ", "o"), "1", "path marks"),
    (LOOP, "o" + LOOP[1:], "1", "wall"),
    (LOOP, decode_grid(solve(encode_grid(LOOP))), "hard", "rating"),
    (LOOP.replace("G", " "), LOOP.replace("G", " "), "1", "goal"),
])
def test_csv_bad_rows_name_file_and_line(tmp_path, question, answer, rating, message):
    good = ("src", LOOP, decode_grid(solve(encode_grid(LOOP))), "4")
    path = _write_csv(tmp_path / "bad.csv", [good, ("src", question, answer, rating)])
    with pytest.raises(ValueError, match=message) as err:
        list(read_maze_csv(path))
    assert f"{path}:3:" in str(err.value)


def test_csv_bad_header_and_field_count(tmp_path):
    with pytest.raises(ValueError, match=r"bad\.csv:1: header"):
        list(read_maze_csv(_write_csv(tmp_path / "bad.csv", [], header="q,a")))
    path = tmp_path / "short.csv"
    path.write_text("source,question,answer,rating\nsrc,only-two\n")
    with pytest.raises(ValueError, match=r"short\.csv:2: expected 4 fields"):
        list(read_maze_csv(path))


def test_groups_and_metadata(mazes):
    plain = list(maze_groups(mazes[:2]))
    assert [g["group"] for g in plain] == [0, 1]
    g = plain[0]
    assert g["inputs"].shape == (1, 1, 900) and g["inputs"].dtype == np.uint8
    assert g["num_examples"].dtype == np.int16 and g["puzzle_identifiers"].dtype == np.int32
    assert np.array_equal(g["inputs"][0, 0].reshape(30, 30), mazes[0].question)
    assert g["inputs"].max() < VOCAB_SIZE and g["inputs"].min() >= 1
    aug = next(maze_groups(mazes[:1], augment=True, tag=2))
    assert aug["inputs"].shape == (8, 1, 900) and aug["tag"] == 2 and not aug["puzzle_identifiers"].any()
    for t in range(8):
        q, a = aug["inputs"][t, 0].reshape(30, 30), aug["labels"][t, 0].reshape(30, 30)
        assert np.array_equal(q, dihedral_transform(mazes[0].question, t))
        assert is_valid_shortest_path(q, a)
    assert len({aug["inputs"][t].tobytes() for t in range(8)}) == 8
    assert maze_identifiers() == ["<blank>"]
    meta = maze_metadata(10, augment=True)
    assert (meta["vocab_size"], meta["seq_len"], meta["num_puzzle_identifiers"], meta["total_puzzles"]) == (
        6, 900, 1, 80)


def test_build_maze_writes_a_dataset(tmp_path, mazes):
    from hrmkit.data.puzzles.format import iter_groups, read_metadata
    from hrmkit.data.puzzles.maze import build_maze

    meta = build_maze(str(tmp_path / "gen"), train_size=3, test_size=2, size=12, min_path_len=20, num_loops=3,
                      augment=True, seed=1)
    assert (meta.task, meta.vocab_size, meta.seq_len, meta.num_aug) == ("maze", 6, 144, 7)
    assert read_metadata(tmp_path / "gen").splits["train"].total_puzzles == 24
    train = list(iter_groups(tmp_path / "gen", "train"))
    test = list(iter_groups(tmp_path / "gen", "test"))
    assert len(train) == 3 and len(test) == 2 and np.asarray(train[0]["inputs"]).shape == (8, 1, 144)
    train_keys = {np.asarray(g["inputs"])[0, 0].tobytes() for g in train}
    assert not train_keys & {np.asarray(g["inputs"])[0, 0].tobytes() for g in test}
    for g in train + test:
        q, a = np.asarray(g["inputs"])[0, 0].reshape(12, 12), np.asarray(g["labels"])[0, 0].reshape(12, 12)
        assert _nx_judge(q, a)
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    rows = [("gen", decode_grid(m.question), decode_grid(m.answer), "") for m in mazes]
    _write_csv(csv_dir / "train.csv", rows[:8])
    _write_csv(csv_dir / "test.csv", rows[8:])
    meta = build_maze(str(tmp_path / "hard"), source="csv", data_dir=str(csv_dir), train_size=5, test_size=None)
    assert meta.splits["train"].total_groups == 5 and meta.splits["test"].total_groups == 4 and meta.seq_len == 900
    with pytest.raises(FileExistsError):
        build_maze(str(tmp_path / "hard"), source="csv", data_dir=str(csv_dir))

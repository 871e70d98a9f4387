"""A dataset in the reference's .npy layout (made here, by its rules) imports identically."""

import json

import numpy as np
import pytest

from hrmkit.data.puzzles.format import DatasetFormatError, iter_groups, read_metadata
from hrmkit.data.puzzles.hrm_import import import_hrm


def _write_reference(root, split, examples_per_puzzle, puzzles_per_group, seq_len=9, vocab=5, seed=0):
    """HRM's builder output: CSR group → puzzle → example offsets, uint8 tokens, int32 indices."""
    rng = np.random.default_rng(seed)
    inputs, labels, ids, puzzle_idx, group_idx = [], [], [], [0], [0]
    next_id = 1
    for n_puzzles in puzzles_per_group:
        for _ in range(n_puzzles):
            n = examples_per_puzzle
            inputs.append(rng.integers(1, vocab, (n, seq_len), dtype=np.uint8))
            labels.append(rng.integers(0, vocab, (n, seq_len), dtype=np.uint8))
            ids.append(next_id)
            next_id += 1
            puzzle_idx.append(puzzle_idx[-1] + n)
        group_idx.append(group_idx[-1] + n_puzzles)
    folder = root / split
    folder.mkdir(parents=True)
    arrays = {"inputs": np.concatenate(inputs), "labels": np.concatenate(labels),
              "puzzle_identifiers": np.array(ids, np.int32), "puzzle_indices": np.array(puzzle_idx, np.int32),
              "group_indices": np.array(group_idx, np.int32)}
    for name, arr in arrays.items():
        np.save(folder / f"all__{name}.npy", arr)
    meta = {"pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": vocab, "seq_len": seq_len,
            "num_puzzle_identifiers": 20, "total_groups": len(puzzles_per_group),
            "mean_puzzle_examples": float(examples_per_puzzle), "sets": ["all"], "total_puzzles": len(ids)}
    (folder / "dataset.json").write_text(json.dumps(meta))
    return arrays


def test_import_round_trip(tmp_path):
    src = tmp_path / "ref"
    train = _write_reference(src, "train", 2, [3, 1, 2])
    test = _write_reference(src, "test", 1, [1, 1], seed=1)
    (src / "identifiers.json").write_text(json.dumps(["<blank>"] + [f"p{i}" for i in range(1, 20)]))
    meta = import_hrm(str(src), str(tmp_path / "out"), task="toy")
    assert read_metadata(tmp_path / "out").splits["train"].total_examples == len(train["inputs"])
    assert meta.splits["train"].total_groups == 3 and meta.splits["test"].total_groups == 2
    assert json.loads((tmp_path / "out/identifiers.json").read_text())[1] == "p1"
    for split, ref in (("train", train), ("test", test)):
        flat_in, flat_lab, flat_ids = [], [], []
        for g in iter_groups(tmp_path / "out", split):
            for v, n in enumerate(g["num_examples"]):
                flat_in.append(g["inputs"][v, :n])
                flat_lab.append(g["labels"][v, :n])
                flat_ids.append(int(g["puzzle_identifiers"][v]))
        np.testing.assert_array_equal(np.concatenate(flat_in), ref["inputs"])
        np.testing.assert_array_equal(np.concatenate(flat_lab), ref["labels"])
        assert flat_ids == ref["puzzle_identifiers"].tolist()


def test_import_rejects_broken_offsets_and_leaves_nothing(tmp_path):
    src = tmp_path / "ref"
    _write_reference(src, "train", 1, [2])
    _write_reference(src, "test", 1, [1])
    np.save(src / "train/all__puzzle_indices.npy", np.array([0, 5, 1], np.int32))
    with pytest.raises(DatasetFormatError, match="puzzle_indices.npy"):
        import_hrm(str(src), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        import_hrm(str(tmp_path), str(tmp_path / "out2"))

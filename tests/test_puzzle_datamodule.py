"""PuzzleDataModule: build → stream round trip, sampler semantics, eval padding, mid-epoch resume, metadata checks."""

from __future__ import annotations

import json
import shutil

import lightning as L
import numpy as np
import pytest
import torch

from hrmkit.data import PuzzleDataModule
from hrmkit.data.modules import ExampleEvalLoader, PuzzleBatchLoader, pick_puzzle, pick_version
from hrmkit.data.puzzles import DatasetFormatError, PuzzleGroup, PuzzleMetadata, build_sudoku, iter_groups
from hrmkit.data.puzzles import sudoku as S
from hrmkit.data.puzzles.format import read_metadata, write_puzzle_dataset

BATCH = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """60 train groups (20 per level) with 1 + 5 versions each, 15 test puzzles (5 per level)."""
    out = tmp_path_factory.mktemp("puzzles") / "sudoku"
    build_sudoku(str(out), train_size=20, test_size=5, num_aug=5, seed=0, num_workers=1)
    return out


def _versions(path) -> dict[bytes, int]:
    """Every stored train version's input tokens → its group."""
    return {row.tobytes(): int(g["group"]) for g in iter_groups(path, "train") for row in g["inputs"][:, 0]}


def _epoch(loader) -> list[dict[str, torch.Tensor]]:
    return list(loader)


def test_properties_read_metadata_before_setup(dataset):
    dm = PuzzleDataModule(str(dataset), batch_size=BATCH)
    assert (dm.vocab_size, dm.seq_len, dm.num_puzzle_identifiers) == (11, 81, 1)
    assert dm.tag_names == ["easy", "medium", "hard"] and dm.num_tags == 3
    assert isinstance(dm.metadata, PuzzleMetadata) and dm.eval_batch_size == BATCH


def test_train_loader_round_trip(dataset):
    dm = PuzzleDataModule(str(dataset), batch_size=BATCH, seed=3)
    dm.setup("fit")
    versions = _versions(dataset)
    epochs = [_epoch(dm.train_dataloader()) for _ in range(2)]
    loader = dm.train_dataloader()
    two = [_epoch(loader), _epoch(loader)]  # one loader, two epochs: versions are re-drawn
    assert all(len(e) == 60 // BATCH for e in epochs + two)
    picks = []
    for epoch in two:
        groups = []
        for b in epoch:
            assert b["inputs"].shape == b["labels"].shape == (BATCH, 81) and b["inputs"].dtype == torch.int64
            assert b["valid"].all() and (b["puzzle_identifiers"] == 0).all() and b["tag"].max() < 3
            assert ((b["labels"] >= 2) & (b["labels"] <= 10)).all()  # Sudoku labels: digits only, nothing ignored
            cells, sols = b["inputs"].numpy() - 1, b["labels"].numpy() - 1
            assert S.valid_solutions(sols).all() and S.givens_agree(cells, sols).all()
            groups += [versions[row.astype(np.uint8).tobytes()] for row in b["inputs"].numpy()]
        assert len(set(groups)) == len(groups)  # an epoch visits each group at most once
        picks.append({row.numpy().astype(np.uint8).tobytes() for b in epoch for row in b["inputs"]})
    assert picks[0] != picks[1]
    # a fresh loader with the same seed streams the same first epoch
    assert all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(epochs[0], two[0]))
    other = PuzzleDataModule(str(dataset), batch_size=BATCH, seed=4)
    assert not all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(epochs[0], _epoch(other.train_dataloader())))


def test_version_choice_is_uniform_and_deterministic():
    item = {"inputs": np.arange(5, dtype=np.uint8).reshape(5, 1, 1).repeat(3, 2), "labels": np.zeros((5, 1, 3)),
            "num_examples": np.ones(5, np.int16), "puzzle_identifiers": np.arange(5, dtype=np.int32), "group": 7,
            "tag": 1}
    picks = [int(pick_version(item, seed=0, epoch=e)["inputs"][0]) for e in range(5000)]
    assert np.bincount(picks, minlength=5).min() > 850  # 1000 expected per version
    assert picks == [int(pick_version(item, seed=0, epoch=e)["puzzle_identifiers"]) for e in range(5000)]
    assert picks[:50] != [int(pick_version(item, seed=1, epoch=e)["inputs"][0]) for e in range(50)]


def test_eval_loader_streams_every_test_example_once_with_padding(dataset):
    dm = PuzzleDataModule(str(dataset), batch_size=BATCH, eval_batch_size=4)
    dm.setup("test")
    batches = _epoch(dm.test_dataloader())
    assert len(batches) == 4 and all(b["inputs"].shape == (4, 81) for b in batches)
    assert [int(b["valid"].sum()) for b in batches] == [4, 4, 4, 3]
    last = batches[-1]
    assert (last["inputs"][3] == 0).all() and (last["labels"][3] == -100).all()
    assert last["puzzle_identifiers"][3] == 0 and not last["valid"][3]
    stored = [g["inputs"][0, 0].astype(np.int64) for g in iter_groups(dataset, "test")]
    streamed = [row for b in batches for row, ok in zip(b["inputs"].numpy(), b["valid"]) if ok]
    assert len(streamed) == 15 and all((a == b).all() for a, b in zip(stored, streamed))
    assert torch.cat([b["tag"][b["valid"]] for b in batches]).tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert len(_epoch(dm.val_dataloader())) == 4


@pytest.mark.parametrize("num_workers", [0, 2])
def test_mid_epoch_resume_matches_uninterrupted_run(dataset, num_workers):
    def loader():
        return PuzzleDataModule(str(dataset), batch_size=BATCH, num_workers=num_workers, seed=1).train_dataloader()

    full = loader()
    reference = _epoch(full) + _epoch(full)  # two epochs straight through
    first = loader()
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state_dict()
    del it
    resumed = loader()
    resumed.load_state_dict(json.loads(json.dumps(state)))  # the state must survive a checkpoint round trip
    rest = _epoch(resumed) + _epoch(resumed)
    assert len(rest) == len(reference) - 3
    for a, b in zip(reference[3:], rest):
        assert torch.equal(a["inputs"], b["inputs"]) and torch.equal(a["labels"], b["labels"])


class _Recorder(L.LightningModule):
    """Records the inputs of every training batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["inputs"].clone())
        return (self.w * batch["inputs"].float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.filterwarnings("ignore:.*(ckpt_path|validation_step|__len__|LeafSpec).*")
@pytest.mark.parametrize("stop, num_workers", [(4, 0), (7, 0), (4, 2)])
def test_trainer_checkpoint_resumes_mid_epoch(dataset, tmp_path, stop, num_workers):
    def trainer(steps: int, **kw) -> L.Trainer:
        return L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path, **kw)

    def dm() -> PuzzleDataModule:
        return PuzzleDataModule(str(dataset), batch_size=BATCH, seed=2, num_workers=num_workers)

    full = _Recorder()
    trainer(10, enable_checkpointing=False).fit(full, datamodule=dm())
    part = _Recorder()
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, every_n_train_steps=stop)
    trainer(stop, callbacks=[ckpt]).fit(part, datamodule=dm())
    resumed = _Recorder()
    trainer(10, enable_checkpointing=False).fit(resumed, datamodule=dm(), ckpt_path=str(tmp_path / "ck" / "last.ckpt"))
    # 7 batches per epoch: stopping at 4 resumes mid-epoch and then crosses into epoch 2; at 7, on the boundary
    assert len(full.seen) == 10 and len(resumed.seen) == 10 - stop
    assert all(torch.equal(a, b) for a, b in zip(full.seen[stop:], resumed.seen))


# ------------------------------------------------------------------------------------------------ errors


def test_metadata_validation_names_file_and_field(dataset, tmp_path):
    good = json.loads((dataset / "metadata.json").read_text())
    cases = [(lambda m: m.pop("vocab_size"), "'vocab_size': missing"),
             (lambda m: m.update(seq_len="81"), "'seq_len': expected int"),
             (lambda m: m.update(colour="red"), "'colour': unknown field"),
             (lambda m: m.update(format_version=99), "'format_version'"),
             (lambda m: m.update(pad_id=11), "'pad_id': must be a token id"),
             (lambda m: m.update(tag_names=[]), "'tag_names'"),
             (lambda m: m["splits"]["train"].pop("total_groups"), "'splits.train.total_groups': missing"),
             (lambda m: m["splits"]["test"].update(total_examples=1), "'splits.test.total_puzzles'"),
             (lambda m: m["builder"].pop("version"), "'builder.version': missing")]
    for i, (edit, message) in enumerate(cases):
        d = tmp_path / f"d{i}"
        shutil.copytree(dataset, d)
        meta = json.loads(json.dumps(good))
        edit(meta)
        (d / "metadata.json").write_text(json.dumps(meta))
        with pytest.raises(DatasetFormatError, match=message) as err:
            PuzzleDataModule(str(d)).setup("fit")
        assert str(d / "metadata.json") in str(err.value)
    (tmp_path / "d0" / "metadata.json").write_text("{not json")
    with pytest.raises(DatasetFormatError, match="not valid JSON"):
        PuzzleDataModule(str(tmp_path / "d0")).setup("fit")
    with pytest.raises(FileNotFoundError, match="no puzzle dataset metadata"):
        _ = PuzzleDataModule(str(tmp_path / "missing")).vocab_size
    shutil.rmtree(tmp_path / "d1" / "test")
    (tmp_path / "d1" / "metadata.json").write_text(json.dumps(good))
    with pytest.raises(FileNotFoundError, match="split 'test' is missing"):
        PuzzleDataModule(str(tmp_path / "d1")).setup("fit")


def test_batch_larger_than_train_split_is_an_error(dataset):
    with pytest.raises(ValueError, match="fewer than one global batch"):
        PuzzleDataModule(str(dataset), batch_size=61).train_dataloader()
    with pytest.raises(ValueError, match="batch_size"):
        PuzzleDataModule(str(dataset), batch_size=0)


def test_multi_example_puzzles_are_stored_and_streamed(tmp_path):
    meta = PuzzleMetadata(task="toy", vocab_size=12, seq_len=4, tag_names=["all"],
                          builder={"name": "test", "version": 1})
    rng = np.random.default_rng(0)

    def groups(n):
        for _ in range(n):
            yield PuzzleGroup(rng.integers(1, 12, (2, 3, 4), dtype=np.uint8), rng.integers(1, 12, (2, 3, 4), np.uint8),
                              np.array([3, 2], np.int16), np.zeros(2, np.int32))

    as_dicts = ({"inputs": g.inputs, "labels": g.labels, "num_examples": g.num_examples,
                 "puzzle_identifiers": g.puzzle_identifiers, "group": 99, "tag": 0} for g in groups(2))
    written = write_puzzle_dataset(tmp_path / "toy", meta, {"train": groups(4), "test": as_dicts})
    assert [g["group"] for g in iter_groups(tmp_path / "toy", "test")] == [0, 1]  # the writer numbers groups
    assert written.splits["train"].total_examples == 20 and written.splits["train"].max_puzzle_examples == 3
    stored = next(iter_groups(tmp_path / "toy", "train"))
    assert stored["inputs"].shape == (2, 3, 4) and stored["num_examples"].tolist() == [3, 2]
    loader = PuzzleDataModule(str(tmp_path / "toy"), batch_size=2).train_dataloader()
    assert len(loader) == int(4 * 2.5 // 2) and next(iter(loader))["inputs"].shape == (2, 4)
    with pytest.raises(DatasetFormatError, match="train group 0: tag 5"):
        write_puzzle_dataset(tmp_path / "bad", meta, {"train": [PuzzleGroup(
            np.ones((1, 1, 4), np.uint8), np.ones((1, 1, 4), np.uint8), np.ones(1, np.int16), np.zeros(1, np.int32),
            tag=5)]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]


# ------------------------------------------------------------------------------------- multi-example puzzles (E > 1)

TOY_LEN, TOY_MAX_VERSIONS = 6, 4
#: examples per (group, version): 7 groups x 3 versions with 1..4 examples each, so versions differ in size
TRAIN_COUNTS = [[1 + (g + 2 * v) % 4 for v in range(3)] for g in range(7)]
TEST_COUNTS = [[3, 1], [2, 2], [1, 3]]


def _toy_id(g: int, v: int) -> int:
    return 1 + g * TOY_MAX_VERSIONS + v


def _toy_group(g: int, counts: list[int]) -> PuzzleGroup:
    """Every example spells out where it came from: input (g+1, v+1, e+1, ...), label (e+1, g+1, v+1, ignored, ...)."""
    v_count, e_count = len(counts), max(counts)
    inputs = np.zeros((v_count, e_count, TOY_LEN), np.uint8)
    labels = np.zeros_like(inputs)
    for v, n in enumerate(counts):
        for e in range(n):
            inputs[v, e] = [g + 1, v + 1, e + 1, 3, 3, 3]
            labels[v, e] = [e + 1, g + 1, v + 1, 0, 2, 2]
    return PuzzleGroup(inputs, labels, np.array(counts, np.int16),
                       np.array([_toy_id(g, v) for v in range(v_count)], np.int32), tag=g % 2)


def _write_toy(path, train_counts, test_counts) -> PuzzleMetadata:
    meta = PuzzleMetadata(task="toy", vocab_size=16, seq_len=TOY_LEN, num_puzzle_identifiers=1 + 12 * TOY_MAX_VERSIONS,
                          tag_names=["even", "odd"], builder={"name": "test", "version": 1})
    return write_puzzle_dataset(path, meta, {"train": [_toy_group(g, c) for g, c in enumerate(train_counts)],
                                             "test": [_toy_group(g, c) for g, c in enumerate(test_counts)]})


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "multi"
    _write_toy(out, TRAIN_COUNTS, TEST_COUNTS)
    return out


def _rows(batches) -> list[tuple[int, int, int]]:
    """(group, version, example) of every valid row, checking labels, identifier and tag agree with it."""
    rows = []
    for b in batches:
        for x, y, pid, tag, ok in zip(b["inputs"].tolist(), b["labels"].tolist(), b["puzzle_identifiers"].tolist(),
                                      b["tag"].tolist(), b["valid"].tolist()):
            if not ok:
                assert x == [0] * TOY_LEN and y == [-100] * TOY_LEN and pid == 0  # padding row
                continue
            g, v, e = x[0] - 1, x[1] - 1, x[2] - 1
            assert y == [e + 1, g + 1, v + 1, -100, 2, 2] and pid == _toy_id(g, v) and tag == g % 2
            rows.append((g, v, e))
    return rows


def _puzzles(rows, counts) -> list[tuple[int, int, tuple[int, ...]]]:
    """Cut a row stream into whole puzzles (group, version, example order); a cut-off last puzzle is left out."""
    out, i = [], 0
    while i < len(rows):
        g, v, _ = rows[i]
        chunk = rows[i:i + counts[g][v]]
        if len(chunk) < counts[g][v]:
            break
        assert {(r[0], r[1]) for r in chunk} == {(g, v)}, f"puzzle ({g}, {v}) interleaved with another at row {i}"
        order = tuple(r[2] for r in chunk)
        assert sorted(order) == list(range(counts[g][v]))  # every example of the chosen version, once
        out.append((g, v, order))
        i += len(chunk)
    return out


def _take(loader, n: int) -> list[dict[str, torch.Tensor]]:
    """The next ``n`` batches, crossing as many ``iter()`` calls (Lightning epochs) as needed."""
    out: list[dict[str, torch.Tensor]] = []
    while len(out) < n:
        for batch in loader:
            out.append(batch)
            if len(out) == n:
                break
    return out


def test_multi_example_train_stream_follows_the_reference_sampler(multi):
    meta = read_metadata(multi)
    groups = {int(g["group"]): g for g in iter_groups(multi, "train")}
    dm = PuzzleDataModule(str(multi), batch_size=4, seed=5)
    loader = dm.train_dataloader()
    assert isinstance(loader, PuzzleBatchLoader)
    assert len(loader) == int(7 * meta.splits["train"].mean_puzzle_examples // 4) == 4
    batches = [b for _ in range(4) for b in loader]  # four Lightning epochs of one loader: ~3.6 data epochs
    assert all(b["inputs"].shape == (4, TOY_LEN) and b["valid"].all() for b in batches)
    puzzles = _puzzles(_rows(batches), TRAIN_COUNTS)
    assert len(puzzles) >= 21
    for epoch in range(3):  # LitData counts epochs from 1
        chunk = puzzles[7 * epoch:7 * epoch + 7]
        assert sorted(g for g, _, _ in chunk) == list(range(7))  # each group once per data epoch
        for g, v, order in chunk:
            want = pick_puzzle(groups[g], seed=5, epoch=epoch + 1)
            assert (v, order) == (want["version"], tuple(want["examples"].tolist()))
    assert len({tuple(v for _, v, _ in sorted(puzzles[7 * k:7 * k + 7])) for k in range(3)}) > 1  # re-drawn
    assert any(list(order) != sorted(order) for _, _, order in puzzles)  # examples are shuffled
    assert [g for g, _, _ in puzzles[:7]] != sorted(g for g, _, _ in puzzles[:7])  # groups are shuffled
    same = _take(PuzzleDataModule(str(multi), batch_size=4, seed=5).train_dataloader(), len(batches))
    assert all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(batches, same))
    other = _take(PuzzleDataModule(str(multi), batch_size=4, seed=6).train_dataloader(), len(batches))
    assert not all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(batches, other))


def test_pick_puzzle_agrees_with_pick_version():
    item = {"inputs": np.arange(20, dtype=np.uint8).reshape(5, 4, 1), "labels": np.zeros((5, 4, 1), np.uint8),
            "num_examples": np.array([4, 3, 2, 4, 1], np.int16), "puzzle_identifiers": np.arange(5, dtype=np.int32),
            "group": 3, "tag": 0}
    for epoch in range(50):
        p, one = pick_puzzle(item, 0, epoch), pick_version(item, 0, epoch)
        assert p["puzzle_identifiers"] == one["puzzle_identifiers"] == p["version"]
        assert sorted(p["examples"].tolist()) == list(range(item["num_examples"][p["version"]]))
        assert np.array_equal(p["inputs"][:, 0], item["inputs"][p["version"], p["examples"], 0])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_multi_example_loader_resumes_mid_puzzle_and_across_epochs(multi, num_workers):
    made: list[PuzzleBatchLoader] = []

    def loader() -> PuzzleBatchLoader:
        made.append(PuzzleDataModule(str(multi), batch_size=4, num_workers=num_workers, seed=1).train_dataloader())
        return made[-1]

    total = 14  # 3.5 Lightning epochs, ~3 data epochs
    try:
        reference = _take(loader(), total)
        pending = 0
        for stop in (3, 4, 6, 9):
            first = loader()
            head = _take(first, stop)
            assert all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(reference, head))
            state = json.loads(json.dumps(first.state_dict()))  # the state must survive a checkpoint round trip
            pending += state["pending"] is not None
            resumed = loader()
            resumed.load_state_dict(state)
            rest = _take(resumed, total - stop)
            for i, (a, b) in enumerate(zip(reference[stop:], rest)):
                assert torch.equal(a["inputs"], b["inputs"]) and torch.equal(a["labels"], b["labels"]), (stop, i)
        assert pending  # at least one stop fell inside a puzzle that straddles two batches
        # close() stops the workers mid-stream; the next iter() continues where the stream was
        closing = loader()
        head = _take(closing, 5)
        closing.close()
        assert all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(reference[5:10], _take(closing, 5)))
        with pytest.raises(ValueError, match="'groups' and 'pending'"):
            loader().load_state_dict({"position": 3})
    finally:
        for m in made:  # stop worker processes now rather than at garbage collection
            m.close()


@pytest.mark.filterwarnings("ignore:.*(ckpt_path|validation_step|__len__|LeafSpec).*")
@pytest.mark.parametrize("stop, num_workers", [(3, 0), (4, 0), (6, 2)])
def test_trainer_checkpoint_resumes_multi_example_stream(multi, tmp_path, stop, num_workers):
    def trainer(steps: int, **kw) -> L.Trainer:
        return L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path, **kw)

    def dm() -> PuzzleDataModule:
        return PuzzleDataModule(str(multi), batch_size=4, seed=2, num_workers=num_workers)

    full = _Recorder()
    run = trainer(10, enable_checkpointing=False)
    run.fit(full, datamodule=dm())
    assert isinstance(run.train_dataloader, PuzzleBatchLoader) and run.train_dataloader._it is None  # teardown closed
    part = _Recorder()
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, every_n_train_steps=stop)
    trainer(stop, callbacks=[ckpt]).fit(part, datamodule=dm())
    resumed = _Recorder()
    trainer(10, enable_checkpointing=False).fit(resumed, datamodule=dm(), ckpt_path=str(tmp_path / "ck" / "last.ckpt"))
    # 4 batches per Lightning epoch: 3 resumes mid-epoch, 4 on the boundary, 6 in the second epoch (2 workers)
    assert len(full.seen) == 10 and len(resumed.seen) == 10 - stop
    assert all(torch.equal(a, b) for a, b in zip(full.seen[stop:], resumed.seen))


def test_eval_streams_every_version_and_example_once_with_padding(multi):
    dm = PuzzleDataModule(str(multi), batch_size=4, eval_batch_size=5)
    dm.setup("test")
    loader = dm.test_dataloader()
    assert isinstance(loader, ExampleEvalLoader)
    batches = list(loader)
    assert len(batches) == len(loader) == 3 and all(b["inputs"].shape == (5, TOY_LEN) for b in batches)
    assert [int(b["valid"].sum()) for b in batches] == [5, 5, 2]
    expected = [(g, v, e) for g, counts in enumerate(TEST_COUNTS) for v, n in enumerate(counts) for e in range(n)]
    assert _rows(batches) == expected  # stored order: group, then version, then example
    assert _rows(dm.val_dataloader()) == expected


def test_single_example_augmented_test_split_evaluates_every_version(tmp_path):
    """E = 1 with V > 1 in the test split: every version is evaluated; training keeps the E = 1 loader."""
    _write_toy(tmp_path / "e1", [[1, 1, 1]] * 8, [[1, 1], [1, 1, 1]])
    dm = PuzzleDataModule(str(tmp_path / "e1"), batch_size=4, eval_batch_size=4)
    assert _rows(dm.test_dataloader()) == [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0), (1, 2, 0)]
    train = dm.train_dataloader()
    assert not isinstance(train, PuzzleBatchLoader) and len(train) == 2
    assert sorted(g for g, _, _ in _rows(train)) == list(range(8))  # one version of each group per epoch


def test_multi_example_batch_larger_than_an_epoch_is_an_error(multi):
    with pytest.raises(ValueError, match="fewer than one batch of 17"):
        PuzzleDataModule(str(multi), batch_size=17).train_dataloader()

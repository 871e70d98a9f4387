"""PuzzleDataModule: build → stream round trip, sampler semantics, eval padding, mid-epoch resume, metadata checks."""

from __future__ import annotations

import json
import shutil

import lightning as L
import numpy as np
import pytest
import torch

from hrmkit.data import PuzzleDataModule
from hrmkit.data.modules import pick_version
from hrmkit.data.puzzles import DatasetFormatError, PuzzleGroup, PuzzleMetadata, build_sudoku, iter_groups
from hrmkit.data.puzzles import sudoku as S
from hrmkit.data.puzzles.format import write_puzzle_dataset

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


def test_multi_example_puzzles_are_stored_but_not_streamed_yet(tmp_path):
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
    with pytest.raises(NotImplementedError, match="multi-example puzzles are not streamed yet"):
        PuzzleDataModule(str(tmp_path / "toy"), batch_size=2).train_dataloader()
    with pytest.raises(DatasetFormatError, match="train group 0: tag 5"):
        write_puzzle_dataset(tmp_path / "bad", meta, {"train": [PuzzleGroup(
            np.ones((1, 1, 4), np.uint8), np.ones((1, 1, 4), np.uint8), np.ones(1, np.int16), np.zeros(1, np.int32),
            tag=5)]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]

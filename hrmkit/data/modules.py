"""LightningDataModule over a built puzzle dataset (``hrmkit.data.puzzles``), streamed with LitData.

Training follows the reference sampler (spec §4.2): an epoch is one pass over the *groups*; each group contributes
one uniformly random stored version, chosen from (seed, epoch, group) so a resumed run picks the same versions.
The ``StreamingDataLoader`` is stateful, so the Trainer checkpoint carries the mid-epoch position.
Evaluation streams every test example once, in order, padding the last batch to a constant size.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset

from hrmkit.data.puzzles.format import PuzzleMetadata, read_metadata, split_dir

IGNORE_INDEX = -100
_MASK64 = (1 << 64) - 1


def _mix(seed: int, epoch: int, group: int) -> int:
    """A 64-bit hash of (seed, epoch, group) (splitmix64 rounds): a per-item random draw that costs ~1 µs and
    depends on nothing but its inputs, unlike a shared RNG whose state would have to be checkpointed."""
    x = 0
    for v in (seed, epoch, group):
        x = ((x ^ (v & _MASK64)) + 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        x ^= x >> 31
    return x


def pick_version(item: dict[str, Any], seed: int, epoch: int) -> dict[str, Any]:
    """The training example of a stored group this epoch: a uniformly random version, its first example."""
    versions = len(item["num_examples"])
    v = (_mix(seed, epoch, int(item["group"])) * versions) >> 64
    return {"inputs": item["inputs"][v, 0], "labels": item["labels"][v, 0],
            "puzzle_identifiers": int(item["puzzle_identifiers"][v]), "tag": int(item["tag"])}


class GroupStreamingDataset(StreamingDataset):
    """``StreamingDataset`` of groups that yields one example per group, re-drawing the version every epoch.

    A plain ``transform`` does not see the epoch, hence the subclass; ``current_epoch`` is restored from the loader
    state on resume, so the draw repeats exactly.
    """

    def __init__(self, input_dir: str, seed: int, train: bool, **kwargs: Any) -> None:
        super().__init__(input_dir, seed=seed, **kwargs)
        self.version_seed = seed
        self.train = train

    def __getitem__(self, index: Any) -> Any:
        item = super().__getitem__(index)
        if self.train:
            return pick_version(item, self.version_seed, int(self.current_epoch))
        return {"inputs": item["inputs"][0, 0], "labels": item["labels"][0, 0],
                "puzzle_identifiers": int(item["puzzle_identifiers"][0]), "tag": int(item["tag"])}


class PuzzleCollate:
    """Examples to a batch of int64 tensors; labels equal to ``ignore_label_id`` become -100.

    With ``pad_to`` a short batch is padded with ``pad_id`` inputs, -100 labels, identifier ``blank_identifier_id``
    and ``valid=False`` (spec §3.4), so every evaluation batch has the same shape.
    """

    def __init__(self, meta: PuzzleMetadata, pad_to: int | None = None) -> None:
        self.pad_id = meta.pad_id
        self.ignore_label_id = meta.ignore_label_id
        self.blank_identifier_id = meta.blank_identifier_id
        self.seq_len = meta.seq_len
        self.pad_to = pad_to

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n = len(items)
        size = max(n, self.pad_to or 0)
        inputs = np.full((size, self.seq_len), self.pad_id, np.int64)
        labels = np.full((size, self.seq_len), IGNORE_INDEX, np.int64)
        ids = np.full(size, self.blank_identifier_id, np.int64)
        tags = np.zeros(size, np.int64)
        if n:
            inputs[:n] = np.stack([it["inputs"] for it in items])
            lab = np.stack([it["labels"] for it in items]).astype(np.int64)
            labels[:n] = np.where(lab == self.ignore_label_id, IGNORE_INDEX, lab)
            ids[:n] = [it["puzzle_identifiers"] for it in items]
            tags[:n] = [it["tag"] for it in items]
        valid = np.arange(size) < n
        return {"inputs": torch.from_numpy(inputs), "labels": torch.from_numpy(labels),
                "puzzle_identifiers": torch.from_numpy(ids), "tag": torch.from_numpy(tags),
                "valid": torch.from_numpy(valid)}


class EpochEndLoader(StreamingDataLoader):
    """``StreamingDataLoader`` whose epoch after a mid-epoch resume is a fresh one.

    litdata 0.2.76 clears its ``restore`` flag only when the batch iterator is exhausted. Lightning ends an epoch
    after ``len(loader)`` batches without asking for one more, so after a resume the flag stayed set and the *next*
    epoch replayed the resumed tail. Clearing it as the epoch's last full batch is handed out fixes that.
    """

    def __iter__(self) -> Any:
        last = len(self) * (self.batch_size or 1)  # the counter grows by batch_size per batch, partial ones included
        for batch in super().__iter__():
            if self.restore and self._num_samples_yielded_streaming >= last:
                self.restore = False
            yield batch


class PuzzleDataModule(L.LightningDataModule):
    """Train and evaluate on a dataset built by ``hrmkit.data.puzzles`` (e.g. ``build_sudoku``).

    ``vocab_size``, ``seq_len``, ``num_puzzle_identifiers``, ``num_tags`` and ``tag_names`` read the metadata on
    first use, so a LightningCLI link such as ``data.vocab_size -> model.init_args.vocab_size`` works before setup.
    """

    def __init__(self, data_dir: str, batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 eval_batch_size: int | None = None) -> None:
        """
        Args:
            data_dir: a built dataset (``metadata.json``, ``train/``, ``test/``).
            batch_size: examples per training batch on each device; constant (the last partial batch is dropped).
            num_workers: loader worker processes (keep it fixed within a run: batch order depends on it).
            seed: seeds the group order and the per-epoch choice of augmented version.
            eval_batch_size: examples per evaluation batch (default batch_size); the last batch is padded to it.
        """
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1, got {eval_batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters()
        self.data_dir = str(data_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._metadata: PuzzleMetadata | None = None

    @property
    def metadata(self) -> PuzzleMetadata:
        if self._metadata is None:
            self._metadata = read_metadata(self.data_dir)
        return self._metadata

    @property
    def vocab_size(self) -> int:
        return self.metadata.vocab_size

    @property
    def seq_len(self) -> int:
        return self.metadata.seq_len

    @property
    def num_puzzle_identifiers(self) -> int:
        return self.metadata.num_puzzle_identifiers

    @property
    def tag_names(self) -> list[str]:
        return list(self.metadata.tag_names)

    @property
    def num_tags(self) -> int:
        return len(self.metadata.tag_names)

    def setup(self, stage: str = "") -> None:
        self._metadata = read_metadata(self.data_dir)
        needed = ("train", "test") if stage in ("fit", "") else ("test",)
        for split in needed:
            self.metadata.split(split)
            split_dir(self.data_dir, split)

    def _split(self, split: str) -> str:
        stats = self.metadata.split(split)
        if stats.max_puzzle_examples > 1:
            raise NotImplementedError(f"{self.data_dir}: the {split} split has puzzles with up to "
                                      f"{stats.max_puzzle_examples} examples each (e.g. ARC); multi-example puzzles "
                                      "are not streamed yet")
        return str(split_dir(self.data_dir, split))

    def _world_size(self) -> int:
        trainer = getattr(self, "_trainer", None)
        return int(trainer.world_size) if trainer is not None else 1

    def train_dataloader(self) -> StreamingDataLoader:
        path = self._split("train")
        groups = self.metadata.split("train").total_groups
        if groups < self.batch_size * self._world_size():
            raise ValueError(f"{self.data_dir}: the train split has {groups} groups, fewer than one global batch "
                             f"({self.batch_size} x {self._world_size()} devices); lower batch_size")
        # Full in-chunk shuffle (litdata's default permutes 256-item blocks), decoded one item at a time: with the
        # default batched decode a full shuffle decodes a whole window per item (measured 50x slower).
        ds = GroupStreamingDataset(path, seed=self.seed, train=True, shuffle=True, drop_last=True,
                                   item_shuffle_window="full", batch_decode=0)
        return EpochEndLoader(ds, batch_size=self.batch_size, num_workers=self.num_workers, drop_last=True,
                              collate_fn=PuzzleCollate(self.metadata))

    def _eval_loader(self) -> StreamingDataLoader:
        path = self._split("test")
        stats = self.metadata.split("test")
        if stats.total_puzzles != stats.total_groups:
            raise NotImplementedError(f"{self.data_dir}: the test split stores augmented versions; evaluation "
                                      "streams one puzzle per group")
        ds = GroupStreamingDataset(path, seed=self.seed, train=False, shuffle=False, drop_last=False)
        collate = PuzzleCollate(self.metadata, pad_to=self.eval_batch_size)
        return StreamingDataLoader(ds, batch_size=self.eval_batch_size, num_workers=self.num_workers, drop_last=False,
                                   collate_fn=collate)

    def val_dataloader(self) -> StreamingDataLoader:
        return self._eval_loader()

    def test_dataloader(self) -> StreamingDataLoader:
        return self._eval_loader()

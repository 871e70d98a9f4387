"""LightningDataModule over a built puzzle dataset (``hrmkit.data.puzzles``), streamed with LitData.

Training follows the reference sampler (spec §4.2): an epoch is one pass over the *groups*; each group contributes
one uniformly random stored version, chosen from (seed, epoch, group) so a resumed run picks the same versions.

* One example per puzzle (Sudoku, Maze): each group gives one example and a ``StreamingDataLoader`` batches them
  directly (``batch_size`` groups per batch, the last partial batch dropped).
* Several examples per puzzle (ARC): each group gives ALL examples of its chosen version, in a random order drawn
  from the same hash; :class:`PuzzleBatchLoader` concatenates those puzzles into one continuous stream and cuts it
  into batches of exactly ``batch_size`` examples (a puzzle may straddle two batches, nothing is truncated).

Both train loaders are stateful, so the Trainer checkpoint carries the mid-epoch position.
Evaluation streams every example of every stored version once, in order, padding the last batch to a constant size.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset

from hrmkit.data.puzzles.format import METADATA_FILE, DatasetFormatError, PuzzleMetadata, read_metadata, split_dir
from hrmkit.data.stream import ItemStream

IGNORE_INDEX = -100
_MASK64 = (1 << 64) - 1
_STATE_VERSION = 1

#: What a :class:`GroupStreamingDataset` item is made of, per group: ``example`` one random version's first example
#: (train, E = 1); ``puzzle`` all examples of one random version in a random order (train, E > 1); ``first`` version
#: 0's first example (evaluation of E = 1, V = 1 splits); ``all`` every example of every version (evaluation).
GroupMode = Literal["example", "puzzle", "first", "all"]


def _exact_length_loaders() -> None:
    """Lightning warns that an IterableDataset's ``__len__`` may be wrong with several loader workers unless each
    worker is set up independently. LitData's StreamingDataset (behind every StreamingDataLoader here) splits its
    items between workers and ranks itself, so these loaders' lengths are exact and the warning does not apply.
    Called when a loader is made (not at import), so the filter is in force for the run that uses it."""
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")


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


def _version_of(item: dict[str, Any], h: int) -> int:
    """Uniform version index from a 64-bit draw (multiply-shift: no modulo bias worth measuring)."""
    return (h * len(item["num_examples"])) >> 64


def pick_version(item: dict[str, Any], seed: int, epoch: int) -> dict[str, Any]:
    """The training example of a stored group this epoch: a uniformly random version, its first example."""
    v = _version_of(item, _mix(seed, epoch, int(item["group"])))
    return {"inputs": item["inputs"][v, 0], "labels": item["labels"][v, 0],
            "puzzle_identifiers": int(item["puzzle_identifiers"][v]), "tag": int(item["tag"])}


def pick_puzzle(item: dict[str, Any], seed: int, epoch: int) -> dict[str, Any]:
    """The training examples of a stored group this epoch (reference sampler): the same uniformly random version as
    :func:`pick_version`, and ALL its stored examples in a random order derived from the same hash.

    Returns ``inputs``/``labels`` ``[n, L]`` in that order, ``examples`` (the order, as stored example indices),
    ``version``, ``group``, ``puzzle_identifiers`` and ``tag``.
    """
    group = int(item["group"])
    h = _mix(seed, epoch, group)
    v = _version_of(item, h)
    n = int(item["num_examples"][v])
    order = np.random.default_rng((h, 1)).permutation(n)
    return {"inputs": item["inputs"][v][order], "labels": item["labels"][v][order], "examples": order,
            "version": v, "group": group, "puzzle_identifiers": int(item["puzzle_identifiers"][v]),
            "tag": int(item["tag"])}


def all_examples(item: dict[str, Any]) -> dict[str, Any]:
    """Every stored example of a group, version-major (``[n, L]`` rows and an identifier per row): evaluation and
    ARC voting need all augmented versions of every test example."""
    counts = np.asarray(item["num_examples"], dtype=np.int64)
    v = np.repeat(np.arange(len(counts)), counts)
    e = np.arange(len(v)) - np.repeat(np.cumsum(counts) - counts, counts)
    ids = np.asarray(item["puzzle_identifiers"], dtype=np.int64)[v]
    return {"inputs": item["inputs"][v, e], "labels": item["labels"][v, e], "puzzle_identifiers": ids,
            "tag": int(item["tag"])}


class GroupStreamingDataset(StreamingDataset):
    """``StreamingDataset`` of groups whose items are cut from each group as ``mode`` says (see :data:`GroupMode`),
    re-drawing the training version every epoch.

    A plain ``transform`` does not see the epoch, hence the subclass; ``current_epoch`` is restored from the loader
    state on resume, so the draw repeats exactly. The cut happens in the worker, so only the chosen version (not the
    whole group, up to 1001 versions for ARC) crosses to the main process.
    """

    def __init__(self, input_dir: str, seed: int, mode: GroupMode, **kwargs: Any) -> None:
        if mode not in ("example", "puzzle", "first", "all"):
            raise ValueError(f"mode must be 'example', 'puzzle', 'first' or 'all', got {mode!r}")
        super().__init__(input_dir, seed=seed, **kwargs)
        self.version_seed = seed
        self.mode = mode

    def __getitem__(self, index: Any) -> Any:
        item = super().__getitem__(index)
        if self.mode == "example":
            return pick_version(item, self.version_seed, int(self.current_epoch))
        if self.mode == "puzzle":
            return pick_puzzle(item, self.version_seed, int(self.current_epoch))
        if self.mode == "all":
            return all_examples(item)
        return {"inputs": item["inputs"][0, 0], "labels": item["labels"][0, 0],
                "puzzle_identifiers": int(item["puzzle_identifiers"][0]), "tag": int(item["tag"])}


class PuzzleCollate:
    """Examples to a batch of int64 tensors; labels equal to ``ignore_label_id`` become -100.

    With ``pad_to`` a short batch is padded with ``pad_id`` inputs, -100 labels, identifier ``blank_identifier_id``
    and ``valid=False`` (spec §3.4), so every evaluation batch has the same shape.
    """

    def __init__(self, meta: PuzzleMetadata, pad_to: int | None = None, where: str = "metadata.json") -> None:
        self.vocab_size = meta.vocab_size
        self.where = where  # the metadata file, for the error when the stored tokens do not fit its vocab_size
        self.pad_id = meta.pad_id
        self.ignore_label_id = meta.ignore_label_id
        self.blank_identifier_id = meta.blank_identifier_id
        self.seq_len = meta.seq_len
        self.pad_to = pad_to

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not items:
            empty = np.zeros((0, self.seq_len), np.int64)
            return self.arrays(empty, empty, np.zeros(0, np.int64), np.zeros(0, np.int64))
        return self.arrays(np.stack([it["inputs"] for it in items]), np.stack([it["labels"] for it in items]),
                           np.array([it["puzzle_identifiers"] for it in items]), np.array([it["tag"] for it in items]))

    def arrays(self, inputs: np.ndarray, labels: np.ndarray, puzzle_identifiers: np.ndarray,
               tags: np.ndarray) -> dict[str, torch.Tensor]:
        """The batch of ``n`` rows given as arrays (``[n, L]`` tokens, ``[n]`` identifiers and tags)."""
        n = len(inputs)
        size = max(n, self.pad_to or 0)
        out_inputs = np.full((size, self.seq_len), self.pad_id, np.int64)
        out_labels = np.full((size, self.seq_len), IGNORE_INDEX, np.int64)
        ids = np.full(size, self.blank_identifier_id, np.int64)
        out_tags = np.zeros(size, np.int64)
        if n:
            top = max(int(np.max(inputs)), int(np.max(labels)))
            if top >= self.vocab_size:
                raise DatasetFormatError(f"{self.where}: field 'vocab_size' is {self.vocab_size} but the stored "
                                         f"puzzles hold token id {top}: metadata and chunks disagree; rebuild the "
                                         "dataset or restore its metadata.json")
            out_inputs[:n] = inputs
            lab = np.asarray(labels).astype(np.int64)
            out_labels[:n] = np.where(lab == self.ignore_label_id, IGNORE_INDEX, lab)
            ids[:n] = puzzle_identifiers
            out_tags[:n] = tags
        valid = np.arange(size) < n
        return {"inputs": torch.from_numpy(out_inputs), "labels": torch.from_numpy(out_labels),
                "puzzle_identifiers": torch.from_numpy(ids), "tag": torch.from_numpy(out_tags),
                "valid": torch.from_numpy(valid)}


def _single(items: list[Any]) -> Any:
    """Collate of a ``batch_size=1`` group loader: the item itself (re-batching happens in the main process)."""
    return items[0]


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


@dataclass
class _Puzzle:
    """The puzzle being cut into batches: its examples in sampled order and how many were handed out."""

    group: int
    version: int
    examples: np.ndarray  # stored example indices, in the sampled order
    inputs: np.ndarray  # [n, L]
    labels: np.ndarray  # [n, L]
    puzzle_identifier: int
    tag: int
    taken: int = 0

    @property
    def left(self) -> int:
        return len(self.examples) - self.taken


class PuzzleBatchLoader(ItemStream):
    """Training batches of exactly ``batch_size`` examples from a loader of whole puzzles (datasets with E > 1).

    ``groups`` yields, one per group, all examples of the group's version for this data epoch
    (:func:`pick_puzzle`); its epochs follow one another in one continuous example stream, cut into batches. Each
    ``iter()`` hands out the next ``num_batches`` batches of that stream, so every rank of a DDP run makes the same
    number of steps per Lightning epoch even though its puzzles have different example counts, and nothing is
    dropped. A data epoch (each group once) therefore lasts about, not exactly, one Lightning epoch.

    A stateful :class:`~hrmkit.data.stream.ItemStream` over the groups. The state is the group loader's
    LitData state plus the unfinished puzzle as (group, version, remaining example indices): plain JSON, and the
    puzzle is re-read by group index on resume.
    """

    def __init__(self, groups: StreamingDataLoader, dataset_dir: str, batch_size: int, num_batches: int,
                 collate: PuzzleCollate) -> None:
        if batch_size < 1 or num_batches < 1:
            raise ValueError(f"need batch_size >= 1 and num_batches >= 1, got {batch_size} and {num_batches}")
        super().__init__(groups, dataset_dir)
        self.groups = groups
        self.dataset_dir = dataset_dir
        self.batch_size = batch_size
        self.num_batches = num_batches
        self.collate = collate
        self._puzzle: _Puzzle | None = None
        self._reader: StreamingDataset | None = None

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for _ in range(self.num_batches):
            yield self.next_batch()

    def _next_puzzle(self) -> _Puzzle:
        p = self.pull("puzzle")
        return _Puzzle(int(p["group"]), int(p["version"]), np.asarray(p["examples"]), p["inputs"], p["labels"],
                       int(p["puzzle_identifiers"]), int(p["tag"]))

    def next_batch(self) -> dict[str, torch.Tensor]:
        """The next ``batch_size`` examples of the stream, collated."""
        parts: list[tuple[np.ndarray, np.ndarray, int, int]] = []
        need = self.batch_size
        while need:
            if self._puzzle is None or self._puzzle.left == 0:
                self._puzzle = self._next_puzzle()
            p = self._puzzle
            take = min(need, p.left)
            rows = slice(p.taken, p.taken + take)
            parts.append((p.inputs[rows], p.labels[rows], p.puzzle_identifier, p.tag))
            p.taken += take
            need -= take
        inputs = np.concatenate([x[0] for x in parts])
        labels = np.concatenate([x[1] for x in parts])
        ids = np.concatenate([np.full(len(x[0]), x[2], np.int64) for x in parts])
        tags = np.concatenate([np.full(len(x[0]), x[3], np.int64) for x in parts])
        return self.collate.arrays(inputs, labels, ids, tags)

    def state_dict(self) -> dict[str, Any]:
        p = self._puzzle
        pending = None
        if p is not None and p.left:
            pending = {"group": p.group, "version": p.version, "examples": p.examples[p.taken:].tolist()}
        return {"version": _STATE_VERSION, "groups": self.groups.state_dict(), "pending": pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        where = "PuzzleBatchLoader.load_state_dict"
        if not isinstance(state, dict) or "groups" not in state or "pending" not in state:
            raise ValueError(f"{where}: expected a dict with 'groups' and 'pending' (a state from state_dict()), "
                             f"got {type(state).__name__} with keys {sorted(state) if isinstance(state, dict) else []}")
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"{where}: field 'version' is {state.get('version')!r}, this hrmkit writes "
                             f"{_STATE_VERSION}")
        self.restart_at(state["groups"])
        pending = state["pending"]
        self._puzzle = None if pending is None else self._reread(pending)

    def _reread(self, pending: dict[str, Any]) -> _Puzzle:
        """The unfinished puzzle of a saved state, read again from disk by group index."""
        where = f"{self.dataset_dir}: resumed loader state, field 'pending'"
        try:
            group, version = int(pending["group"]), int(pending["version"])
            examples = np.asarray(pending["examples"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: expected group, version and examples, got {pending!r} ({e})") from None
        if self._reader is None:
            self._reader = StreamingDataset(self.dataset_dir, shuffle=False, drop_last=False)
        try:
            item = self._reader[group] if group >= 0 else None
        except (IndexError, ValueError, KeyError):
            item = None
        if item is None or int(item["group"]) != group:
            raise ValueError(f"{where}: group {group} is not in this split; was the checkpoint made on another "
                             "dataset?")
        if not 0 <= version < len(item["num_examples"]):
            raise ValueError(f"{where}: group {group} version {version} does not exist in the stored data")
        n = int(item["num_examples"][version])
        if examples.size == 0 or examples.min() < 0 or examples.max() >= n:
            raise ValueError(f"{where}: example indices {examples.tolist()} out of range for {n} examples")
        return _Puzzle(group, version, examples, item["inputs"][version][examples],
                       item["labels"][version][examples], int(item["puzzle_identifiers"][version]), int(item["tag"]))


class ExampleEvalLoader:
    """Evaluation batches over every stored example (every version of every group), in stored order, the last batch
    padded with ``valid=False`` rows so every batch has ``batch_size`` rows.

    ``len`` is exact when ``total_examples`` is given (one process); under DDP LitData splits the groups between
    ranks and a rank's example count is unknown in advance, so ``len`` raises ``TypeError`` and Lightning runs the
    loader to its end instead of cutting it short.
    """

    def __init__(self, groups: StreamingDataLoader, batch_size: int, collate: PuzzleCollate,
                 total_examples: int | None) -> None:
        self.groups = groups
        self.batch_size = batch_size
        self.collate = collate
        self.total_examples = total_examples

    def __len__(self) -> int:
        if self.total_examples is None:
            raise TypeError("the number of evaluation batches per rank is unknown under DDP")
        return math.ceil(self.total_examples / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        queue: list[tuple[np.ndarray, ...]] = []  # (inputs, labels, identifiers, tags) rows not handed out yet
        held = 0
        for item in self.groups:
            n = len(item["inputs"])
            ids = np.broadcast_to(np.asarray(item["puzzle_identifiers"], np.int64), n)
            queue.append((item["inputs"], item["labels"], ids, np.full(n, int(item["tag"]), np.int64)))
            held += n
            while held >= self.batch_size:
                yield self._take(queue, self.batch_size)
                held -= self.batch_size
        if held:
            yield self._take(queue, held)

    def _take(self, queue: list[tuple[np.ndarray, ...]], n: int) -> dict[str, torch.Tensor]:
        """Pop the first ``n`` queued rows as one (padded) batch; slices are views, only the batch is copied."""
        out: list[tuple[np.ndarray, ...]] = []
        while n:
            head = queue[0]
            k = min(n, len(head[0]))
            out.append(tuple(a[:k] for a in head))
            if k == len(head[0]):
                queue.pop(0)
            else:
                queue[0] = tuple(a[k:] for a in head)
            n -= k
        inputs, labels, ids, tags = (np.concatenate([o[i] for o in out]) for i in range(4))
        return self.collate.arrays(inputs, labels, ids, tags)


class PuzzleDataModule(L.LightningDataModule):
    """Train and evaluate on a dataset built by ``hrmkit.data.puzzles`` (e.g. ``build_sudoku``, ``build_arc``).

    ``vocab_size``, ``seq_len``, ``num_puzzle_identifiers``, ``num_tags`` and ``tag_names`` read the metadata on
    first use, so a LightningCLI link such as ``data.vocab_size -> model.init_args.vocab_size`` works before setup.
    """

    def __init__(self, data_dir: str, batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 eval_batch_size: int | None = None) -> None:
        """
        Args:
            data_dir: a built dataset (``metadata.json``, ``train/``, ``test/``).
            batch_size: examples per training batch on each device; constant (E = 1: the last partial batch is
                dropped; E > 1: puzzles run on into the next batch and the next epoch).
            num_workers: loader worker processes (keep it fixed within a run: batch order depends on it).
            seed: seeds the group order, the per-epoch choice of augmented version and the example order.
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

    def _collate(self, pad_to: int | None = None) -> PuzzleCollate:
        return PuzzleCollate(self.metadata, pad_to, where=str(Path(self.data_dir) / METADATA_FILE))

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

    def _world_size(self) -> int:
        trainer = self.trainer
        return int(trainer.world_size) if trainer is not None else 1

    def train_dataloader(self) -> StreamingDataLoader | PuzzleBatchLoader:
        _exact_length_loaders()
        path = str(split_dir(self.data_dir, "train"))
        stats = self.metadata.split("train")
        world = self._world_size()
        multi = stats.max_puzzle_examples > 1
        # Full in-chunk shuffle (litdata's default permutes 256-item blocks), decoded one item at a time: with the
        # default batched decode a full shuffle decodes a whole window per item (measured 50x slower).
        options: dict[str, Any] = dict(seed=self.seed, shuffle=True, drop_last=True, item_shuffle_window="full",
                                       batch_decode=0)
        if not multi:
            if stats.total_groups < self.batch_size * world:
                raise ValueError(f"{self.data_dir}: the train split has {stats.total_groups} groups, fewer than one "
                                 f"global batch ({self.batch_size} x {world} devices); lower batch_size")
            return EpochEndLoader(GroupStreamingDataset(path, mode="example", **options), batch_size=self.batch_size,
                                  num_workers=self.num_workers, drop_last=True, collate_fn=self._collate())
        # One version per group: an epoch holds about groups x mean examples per version (exact when groups have
        # equally many versions and a group's versions equally many examples; close for ARC).
        per_rank = (stats.total_groups // world) * stats.mean_puzzle_examples
        num_batches = int(per_rank // self.batch_size)
        if num_batches < 1:
            raise ValueError(f"{self.data_dir}: the train split has about {per_rank:.0f} examples per epoch on each "
                             f"of {world} devices ({stats.total_groups} groups x {stats.mean_puzzle_examples:.2f} "
                             f"examples per version), fewer than one batch of {self.batch_size}; lower batch_size")
        groups = StreamingDataLoader(GroupStreamingDataset(path, mode="puzzle", **options), batch_size=1,
                                     num_workers=self.num_workers, collate_fn=_single)
        return PuzzleBatchLoader(groups, path, self.batch_size, num_batches, self._collate())

    def _eval_loader(self) -> StreamingDataLoader | ExampleEvalLoader:
        _exact_length_loaders()
        path = str(split_dir(self.data_dir, "test"))
        stats = self.metadata.split("test")
        collate = self._collate(self.eval_batch_size)
        if stats.max_puzzle_examples == 1 and stats.total_puzzles == stats.total_groups:  # one example per group
            ds = GroupStreamingDataset(path, seed=self.seed, mode="first", shuffle=False, drop_last=False)
            return StreamingDataLoader(ds, batch_size=self.eval_batch_size, num_workers=self.num_workers,
                                       drop_last=False, collate_fn=collate)
        ds = GroupStreamingDataset(path, seed=self.seed, mode="all", shuffle=False, drop_last=False)
        groups = StreamingDataLoader(ds, batch_size=1, num_workers=self.num_workers, collate_fn=_single)
        total = stats.total_examples if self._world_size() == 1 else None
        return ExampleEvalLoader(groups, self.eval_batch_size, collate, total)

    def val_dataloader(self) -> StreamingDataLoader | ExampleEvalLoader:
        return self._eval_loader()

    def test_dataloader(self) -> StreamingDataLoader | ExampleEvalLoader:
        return self._eval_loader()

    def predict_dataloader(self) -> StreamingDataLoader | ExampleEvalLoader:
        """The test split in stored order, as evaluation sees it (``hrmkit predict``)."""
        return self._eval_loader()

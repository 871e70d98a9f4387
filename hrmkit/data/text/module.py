"""LightningDataModule over a built text dataset: shuffled, packed, constant-size token batches (spec §4.4).

Training streams the train split with LitData (shuffled, seeded) into a :class:`StreamPacker`, which packs whole
samples into batches of exactly ``tokens_per_batch`` tokens (the batch contract is in ``hrmkit.data.text.packing``).
The sample stream runs on from one data epoch into the next; each Lightning epoch hands out a fixed number of
batches, ``train tokens per device // tokens_per_batch``, so every DDP rank makes the same number of steps even though
its samples differ (a Lightning epoch is therefore slightly less than one pass: the padding).

Two packings (``packing``): ``stream`` (default) — LitData gives each rank a disjoint share of the samples and each
rank packs its own share with a lookahead window (fullest batches, each rank independent); ``multipack`` — the
reference's rank-aware sampler (:mod:`hrmkit.data.text.multipack`): all ranks plan the same steps over one global
order and each packs its bin, so a step's ranks hold balanced, disjoint parts of the same stretch of the stream.

The train loader is stateful: its state (LitData position plus the samples waiting in the packer) travels in the
Trainer checkpoint, so a resumed run continues with exactly the batches the uninterrupted run would have seen.
Validation packs the val split in stored order (no shuffling), every sample exactly once, the last batch padded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import lightning as L
import numpy as np
from litdata import StreamingDataLoader, StreamingDataset

from hrmkit.data.stream import ItemStream
from hrmkit.data.text.format import (
    TextMetadata,
    read_sample_lengths,
    read_text_metadata,
    text_split_dir,
    tokenizer_path,
)
from hrmkit.data.text.multipack import MultipackTextLoader
from hrmkit.data.text.packing import StreamPacker, pack_batch
from hrmkit.data.text.prompts import PromptLoader

_STATE_VERSION = 1
DEFAULT_LOOKAHEAD_BATCHES = 4
Packing = Literal["stream", "multipack"]


def _single(items: list[Any]) -> Any:
    """Collate of a ``batch_size=1`` sample loader: the item itself (packing happens in the main process)."""
    return items[0]


def _length(sample: tuple[np.ndarray, int]) -> int:
    return int(sample[0].size)


class PackedTextLoader(ItemStream):
    """Packed batches from a loader of single samples.

    ``num_batches`` set (training): the sample stream is continuous across data epochs and each ``iter()`` hands out
    the next ``num_batches`` batches; ``len()`` is ``num_batches``. ``num_batches=None`` (evaluation): one pass over
    the samples, the packer drained at the end; no ``len()`` (the count depends on how the samples pack).

    A stateful :class:`~hrmkit.data.stream.ItemStream` over the samples. The state is plain JSON: the LitData state
    plus the waiting samples.
    """

    def __init__(self, samples: StreamingDataLoader, tokens_per_batch: int, pad_id: int, lookahead_tokens: int,
                 num_batches: int | None = None, where: str = "") -> None:
        if num_batches is not None and num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}")
        super().__init__(samples, where)
        self.samples = samples
        self.tokens_per_batch = tokens_per_batch
        self.pad_id = pad_id
        self.num_batches = num_batches
        self.packer: StreamPacker[tuple[np.ndarray, int]] = StreamPacker(tokens_per_batch, lookahead_tokens, _length)

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("the number of packed evaluation batches is known only after a pass")
        return self.num_batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.num_batches is None:
            yield from self._one_pass()
            return
        for _ in range(self.num_batches):
            yield self.next_batch()

    def _one_pass(self) -> Iterator[dict[str, Any]]:
        self.packer.pending.clear()
        self.packer.pending_tokens = 0
        self._it = iter(self.samples)  # held only here, so close() can stop the workers of an abandoned pass
        while self._it is not None:
            try:
                item = next(self._it)
            except StopIteration:
                self._it = None
                break
            self.packer.push(_as_pair(item))
            if not self.packer.wants_more():
                yield pack_batch(self.packer.pop_bin(), self.tokens_per_batch, self.pad_id)
        while self.packer.pending:
            yield pack_batch(self.packer.pop_bin(), self.tokens_per_batch, self.pad_id)

    def next_batch(self) -> dict[str, Any]:
        """The next packed training batch of the continuous stream."""
        while self.packer.wants_more():
            self.packer.push(_as_pair(self.pull("sample")))
        return pack_batch(self.packer.pop_bin(), self.tokens_per_batch, self.pad_id)

    def close(self) -> None:
        """Stop the sample loader's workers now. Training: the stream continues where it was at the next ``iter()``;
        evaluation: the next ``iter()`` is a fresh pass anyway."""
        if self.num_batches is None:
            self._it = None
            return
        super().close()

    def state_dict(self) -> dict[str, Any]:
        pending = [[s[0].tolist(), s[1]] for s in self.packer.pending]
        return {"version": _STATE_VERSION, "samples": self.samples.state_dict(), "pending": pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        where = f"{self.where}: PackedTextLoader.load_state_dict"
        if not isinstance(state, dict) or "samples" not in state or "pending" not in state:
            raise ValueError(f"{where}: expected a dict with 'samples' and 'pending' (a state from state_dict()), "
                             f"got {type(state).__name__} with keys {sorted(state) if isinstance(state, dict) else []}")
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"{where}: field 'version' is {state.get('version')!r}, this hrmkit writes "
                             f"{_STATE_VERSION}")
        self.restart_at(state["samples"])
        self.packer.pending.clear()
        self.packer.pending_tokens = 0
        for k, pair in enumerate(state["pending"]):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"{where}: field 'pending[{k}]': expected [ids, prefix_len], got {pair!r}")
            self.packer.push((np.asarray(pair[0], dtype=np.int64), int(pair[1])))


def _as_pair(item: dict[str, Any]) -> tuple[np.ndarray, int]:
    return np.asarray(item["ids"]), int(item["prefix_len"])


class TextDataModule(L.LightningDataModule):
    """Train and validate on a text dataset built by ``build_text``, ``import_data_io`` or ``build_gsm_symbolic``.

    ``vocab_size``, ``pad_id``, ``special_ids`` and ``tokenizer_path`` read the metadata on first use, so LightningCLI
    links such as ``data.vocab_size -> model.init_args.vocab_size`` work before setup.
    """

    def __init__(self, data_dir: str, tokens_per_batch: int = 4096, num_workers: int = 0, seed: int = 0,
                 lookahead_batches: int = DEFAULT_LOOKAHEAD_BATCHES, packing: Packing = "stream",
                 predict_split: str = "val", predict_batch_size: int = 8,
                 predict_max_new_tokens: int | None = None) -> None:
        """
        Args:
            data_dir: a built text dataset (``metadata.json``, ``train/``, optional ``val/``).
            tokens_per_batch: tokens per packed batch on each device (T); at least the dataset's ``max_len``.
            num_workers: loader worker processes (keep it fixed within a run: the sample order depends on it).
            seed: seeds the sample order.
            lookahead_batches: samples the packer may look ahead, in batches' worth of tokens (more: fuller batches,
                less: closer to the shuffled order). ``stream`` packing only.
            packing: ``stream`` (each rank packs its own LitData share) or ``multipack`` (the reference's rank-aware
                plan over one global order; reads samples by index in the main process, so ``num_workers`` only
                affects validation).
            predict_split: the split whose prompts ``hrmkit predict`` continues (``val`` or ``train``).
            predict_batch_size: prompts per predict batch (prompts of equal length decode together).
            predict_max_new_tokens: generation budget per prompt (None: the dataset's ``max_len`` minus the prompt).
        """
        super().__init__()
        if tokens_per_batch < 2:
            raise ValueError(f"tokens_per_batch must be >= 2, got {tokens_per_batch}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if lookahead_batches < 1:
            raise ValueError(f"lookahead_batches must be >= 1, got {lookahead_batches}")
        if packing not in ("stream", "multipack"):
            raise ValueError(f"TextDataModule.packing must be 'stream' or 'multipack', got {packing!r}")
        self.save_hyperparameters()
        self.data_dir = str(data_dir)
        self.tokens_per_batch = tokens_per_batch
        self.num_workers = num_workers
        self.seed = seed
        self.lookahead_batches = lookahead_batches
        self.packing = packing
        self.predict_split = predict_split
        self.predict_batch_size = predict_batch_size
        self.predict_max_new_tokens = predict_max_new_tokens
        self._metadata: TextMetadata | None = None

    @property
    def metadata(self) -> TextMetadata:
        if self._metadata is None:
            self._metadata = read_text_metadata(self.data_dir)
        return self._metadata

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary padded to a multiple of 256 (what the model allocates)."""
        return self.metadata.vocab_size

    @property
    def pad_id(self) -> int:
        return self.metadata.pad_id

    @property
    def eoa_id(self) -> int:
        return self.metadata.eoa_id

    @property
    def special_ids(self) -> dict[str, int]:
        """``pad``, ``boq``, ``eoq``, ``eoa`` and the condition names (``direct``, ``cot``, ``noisy``, ``synth``)."""
        return self.metadata.special_ids

    @property
    def tokenizer_path(self) -> str | None:
        """The dataset's ``tokenizer.json`` (None for a data_io import made without a tokenizer)."""
        path = tokenizer_path(self.data_dir, self.metadata)
        return None if path is None else str(path)

    @property
    def longest_sample(self) -> int:
        """Tokens of the longest stored sample over every split (a model must hold that many positions)."""
        return max(s.max_sample_len for s in self.metadata.splits.values())

    @property
    def has_val(self) -> bool:
        return "val" in self.metadata.splits

    def setup(self, stage: str = "") -> None:
        self._metadata = read_text_metadata(self.data_dir)
        self._check_budget()
        text_split_dir(self.data_dir, "train")
        if self.has_val:
            text_split_dir(self.data_dir, "val")

    def _check_budget(self) -> None:
        longest = self.longest_sample
        if longest > self.tokens_per_batch:
            raise ValueError(f"{self.data_dir}: tokens_per_batch {self.tokens_per_batch} is smaller than the longest "
                             f"stored sample ({longest} tokens; max_len {self.metadata.max_len}); raise it")

    def _world_size(self) -> int:
        trainer = self.trainer
        return int(trainer.world_size) if trainer is not None else 1

    def _global_rank(self) -> int:
        trainer = self.trainer
        return int(trainer.global_rank) if trainer is not None else 0

    def _lookahead(self) -> int:
        return self.lookahead_batches * self.tokens_per_batch

    def train_dataloader(self) -> PackedTextLoader | MultipackTextLoader:
        self._check_budget()
        path = str(text_split_dir(self.data_dir, "train"))
        stats = self.metadata.split("train")
        num_batches = max(1, stats.tokens // self._world_size() // self.tokens_per_batch)
        if self.packing == "multipack":
            lengths = read_sample_lengths(self.data_dir, "train", self.metadata)
            indexed = StreamingDataset(path, shuffle=False, drop_last=False)
            return MultipackTextLoader(indexed, lengths, self.tokens_per_batch, self.pad_id, self._world_size(),
                                       self._global_rank(), self.seed, num_batches, where=self.data_dir)
        # Full in-chunk shuffle, decoded one item at a time (as the puzzle loaders: batched decode of a full
        # shuffle decodes a whole window per item).
        ds = StreamingDataset(path, seed=self.seed, shuffle=True, drop_last=True, item_shuffle_window="full",
                              batch_decode=0)
        samples = StreamingDataLoader(ds, batch_size=1, num_workers=self.num_workers, collate_fn=_single)
        return PackedTextLoader(samples, self.tokens_per_batch, self.pad_id, self._lookahead(), num_batches,
                                where=self.data_dir)

    def val_dataloader(self) -> PackedTextLoader | list:
        """Packed batches of the val split in stored order; ``[]`` (no validation) when the dataset has none."""
        if not self.has_val:
            return []
        self._check_budget()
        ds = StreamingDataset(str(text_split_dir(self.data_dir, "val")), shuffle=False, drop_last=False)
        samples = StreamingDataLoader(ds, batch_size=1, num_workers=self.num_workers, collate_fn=_single)
        return PackedTextLoader(samples, self.tokens_per_batch, self.pad_id, self._lookahead(), where=self.data_dir)

    def predict_dataloader(self) -> PromptLoader:
        """The ``predict_split`` samples as prompts (instruction only) in stored order, with their references."""
        if self.predict_split not in self.metadata.splits:
            raise ValueError(f"{self.data_dir}: TextDataModule.predict_split={self.predict_split!r} but the dataset "
                             f"has the splits {sorted(self.metadata.splits)}; pick one of them")
        ds = StreamingDataset(str(text_split_dir(self.data_dir, self.predict_split)), shuffle=False, drop_last=False)
        samples = StreamingDataLoader(ds, batch_size=1, num_workers=self.num_workers, collate_fn=_single)
        total = self.metadata.split(self.predict_split).samples if self._world_size() == 1 else None
        return PromptLoader(samples, self.predict_batch_size, self.metadata.max_len, [self.eoa_id],
                            self.predict_max_new_tokens, total)

"""Rank-aware multipack training stream (the reference's sampler, spec §4.4).

Every rank walks the same global shuffled order of the train split and computes the same multipack steps
(:func:`hrmkit.data.text.packing.multipack_window`: the longest prefix of the stream that LPT places on one bin per
rank); rank ``r`` reads and packs only bin ``r``. The ranks' batches of a step are therefore disjoint and balanced
to within one sample, and together they consume the stream in order — the behaviour the reference trains with,
where the stream packer (:class:`hrmkit.data.text.module.PackedTextLoader`) packs each rank's LitData share alone.

Planning needs every sample's length up front (``sample_lengths.npy``, written by every builder) and reads samples
by index. The order of data epoch ``e`` is a permutation seeded by ``(seed, e)``; a step whose window reaches the
end of the order (fewer tokens left than the ranks can fill) is dropped and the next epoch starts, as the reference
drops its last incomplete step. The state is three integers (data epoch, position, steps handed out), so resume is
exact and independent of the number of reader processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from hrmkit.data.text.packing import multipack_window, pack_batch

_STATE_VERSION = 1


class IndexedSamples(Protocol):
    """What the loader reads from: ``ds[i]`` gives ``{"ids": array, "prefix_len": int}`` (a LitData
    ``StreamingDataset`` with ``shuffle=False`` does)."""

    def __getitem__(self, index: int) -> dict[str, Any]: ...


class MultipackTextLoader:
    """This rank's packed batches of the global multipack plan, ``num_batches`` per ``iter()``; the stream
    continues across ``iter()`` calls and data epochs. Stateful for Lightning like ``PackedTextLoader``."""

    def __init__(self, samples: IndexedSamples, lengths: np.ndarray, tokens_per_batch: int, pad_id: int,
                 num_ranks: int, rank: int, seed: int, num_batches: int, where: str = "") -> None:
        if not 0 <= rank < num_ranks:
            raise ValueError(f"rank {rank} outside 0..{num_ranks - 1}")
        if num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}")
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.size and int(lengths.max()) > tokens_per_batch:
            raise ValueError(f"{where}: a sample has {int(lengths.max())} tokens, more than tokens_per_batch "
                             f"{tokens_per_batch}")
        if int(lengths.sum()) < tokens_per_batch * num_ranks or lengths.size < num_ranks:
            raise ValueError(f"{where}: the train split holds {int(lengths.sum())} tokens in {lengths.size} samples, "
                             f"not enough for one multipack step of {num_ranks} ranks x {tokens_per_batch} tokens; "
                             "lower tokens_per_batch or use packing='stream'")
        self.samples = samples
        self.lengths = lengths
        self.tokens_per_batch = tokens_per_batch
        self.pad_id = pad_id
        self.num_ranks = num_ranks
        self.rank = rank
        self.seed = seed
        self.num_batches = num_batches
        self.where = where
        self.epoch = 0
        self.position = 0
        self.steps = 0
        self._order: np.ndarray | None = None
        self._ordered: np.ndarray | None = None  # lengths in that order

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for _ in range(self.num_batches):
            yield self.next_batch()

    def order(self) -> np.ndarray:
        """The current data epoch's global sample order (identical on every rank)."""
        if self._order is None:
            self._order = np.random.default_rng([self.seed, self.epoch]).permutation(self.lengths.size)
            self._ordered = self.lengths[self._order]
        return self._order

    def next_step(self) -> list[list[int]]:
        """The next step's bins (one list of dataset indices per rank), advancing the shared position."""
        while True:
            order = self.order()
            ordered = self._ordered
            if ordered.size - self.position >= self.num_ranks:
                taken, bins, short = multipack_window(ordered, self.position, self.num_ranks, self.tokens_per_batch)
                if not short:
                    self.position += taken
                    self.steps += 1
                    return [[int(order[i]) for i in b] for b in bins]
            self.epoch, self.position, self._order = self.epoch + 1, 0, None

    def next_batch(self) -> dict[str, Any]:
        """This rank's batch of the next step."""
        mine = self.next_step()[self.rank]
        items = [self.samples[i] for i in mine]
        pairs = [(np.asarray(it["ids"]), int(it["prefix_len"])) for it in items]
        return pack_batch(pairs, self.tokens_per_batch, self.pad_id)

    def state_dict(self) -> dict[str, Any]:
        return {"version": _STATE_VERSION, "kind": "multipack", "epoch": self.epoch, "position": self.position,
                "steps": self.steps, "num_ranks": self.num_ranks, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        where = f"{self.where}: MultipackTextLoader.load_state_dict"
        if not isinstance(state, dict) or state.get("kind") != "multipack":
            raise ValueError(f"{where}: expected a multipack loader state (field 'kind' == 'multipack'); the "
                             "checkpoint was written with another packing mode — resume with the same "
                             "TextDataModule.packing")
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"{where}: field 'version' is {state.get('version')!r}, this hrmkit writes "
                             f"{_STATE_VERSION}")
        for name, mine in (("num_ranks", self.num_ranks), ("seed", self.seed)):
            if state.get(name) != mine:
                raise ValueError(f"{where}: field '{name}' is {state.get(name)!r} but this run has {mine}; the global "
                                 "plan depends on it, so resume with the same value")
        self.epoch, self.position, self.steps = int(state["epoch"]), int(state["position"]), int(state["steps"])
        self._order = None

"""Pack whole instruction/response samples into fixed-size token streams (spec §4.4-4.5).

The batch contract (what :func:`pack_batch` returns and ``TextDataModule`` yields)::

    input_ids     int64 [1, T]  the samples' tokens back to back; the tail after the last sample is pad_id
    labels        int64 [1, T]  next-token targets, -100 where nothing is predicted (below)
    position_ids  int64 [1, T]  0, 1, ... restarting at every sample; 0 all along the padding tail
    cu_seqlens    int32 [n+1]   document boundaries; the padding tail is a last pseudo-document, so [-1] == T
    prefix_lens   int32 [n]     instruction length per document (the padding pseudo-document: its full length)
    num_samples   int           real samples (the padding pseudo-document excluded)

Labels are shifted inside the batch, so the model computes logits at every position and takes cross-entropy against
``labels`` directly: ``labels[t] = input_ids[t + 1]`` when token ``t + 1`` is a response token of the same sample,
else -100. Hence every instruction position is -100 *except the last one* (EOQ), which predicts the first response
token; each sample's last position is -100 (nothing follows it within the sample); padding is -100. A sample of
``L`` tokens with an instruction of ``P >= 1`` tokens supervises exactly ``L - P`` targets (its response, EOA
included), as the reference's ``inputs = i || o[:-1]`` layout does; here the final EOA is also fed as an input.

The padding tail carries position 0 throughout: it is no text (never supervised, never seen by a sample), and
numbering it would run up to ``T - 1``, past the RoPE table of any core whose ``max_seq_len`` is below the token
budget (every shipped text recipe: 4096 against 12,288-24,576) on the mostly empty last validation batch. So every
position of a row is below its longest sample, whatever ``T``.

Packing: samples are never split. :class:`StreamPacker` fills one batch at a time from a lookahead window of the
stream (the oldest waiting sample first, then the longest ones that still fit), and each batch lists its samples
longest first. :func:`plan_multipack` is the reference's rank-aware multipack: each step takes the longest prefix of
the stream that longest-processing-time-first (LPT) assignment can place on ``num_ranks`` bins of the capacity.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import torch

IGNORE_INDEX = -100

Item = TypeVar("Item")
Sample = tuple[np.ndarray, int]  # (token ids [L], prefix_len)


def as_sample(item: Any, where: str = "sample") -> Sample:
    """``(ids, prefix_len)`` from a tuple or a stored ``{"ids", "prefix_len"}`` dict, checked."""
    if isinstance(item, Mapping):
        if "ids" not in item or "prefix_len" not in item:
            raise ValueError(f"{where}: expected keys 'ids' and 'prefix_len', got {sorted(item)}")
        ids, prefix = item["ids"], item["prefix_len"]
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        ids, prefix = item
    else:
        raise ValueError(f"{where}: expected (ids, prefix_len) or a dict, got {type(item).__name__}")
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.size == 0 or ids.dtype.kind not in "iu":
        raise ValueError(f"{where}: ids must be a non-empty 1-D integer array, got {ids.dtype} {ids.shape}")
    prefix = int(prefix)
    if not 0 <= prefix <= ids.size:
        raise ValueError(f"{where}: prefix_len {prefix} outside 0..{ids.size}")
    return ids, prefix


def pack_batch(samples: Sequence[Any], tokens_per_batch: int, pad_id: int) -> dict[str, Any]:
    """Lay ``samples`` out in the given order as one batch of the contract above (see the module docstring)."""
    t = tokens_per_batch
    input_ids = np.full(t, pad_id, dtype=np.int64)
    labels = np.full(t, IGNORE_INDEX, dtype=np.int64)
    positions = np.zeros(t, dtype=np.int64)
    cu, prefixes = [0], []
    off = 0
    for k, item in enumerate(samples):
        ids, prefix = as_sample(item, f"sample {k} of the batch")
        n = ids.size
        if off + n > t:
            raise ValueError(f"samples of {sum(as_sample(s)[0].size for s in samples)} tokens exceed the batch budget "
                             f"of {t} tokens (sample {k} has {n})")
        input_ids[off:off + n] = ids
        positions[off:off + n] = np.arange(n)
        first = max(prefix, 1) - 1  # the last instruction token predicts the first response token
        # position j predicts token j + 1 of the same sample: positions first..n-2; the last predicts nothing
        labels[off + first:off + n - 1] = ids[first + 1:]
        off += n
        cu.append(off)
        prefixes.append(prefix)
    if off < t:  # the padding tail: its own fully bidirectional pseudo-document, at position 0 (module docstring)
        cu.append(t)
        prefixes.append(t - off)
    return {"input_ids": torch.from_numpy(input_ids).unsqueeze(0), "labels": torch.from_numpy(labels).unsqueeze(0),
            "position_ids": torch.from_numpy(positions).unsqueeze(0),
            "cu_seqlens": torch.tensor(cu, dtype=torch.int32), "prefix_lens": torch.tensor(prefixes, dtype=torch.int32),
            "num_samples": len(samples)}


def longest_first(samples: Sequence[Any]) -> list[Any]:
    """``samples`` sorted by length, longest first (stable: equal lengths keep their order)."""
    return sorted(samples, key=lambda s: -as_sample(s)[0].size)


class PackingCollate:
    """Collate for a list of samples that fit one batch: longest first, then :func:`pack_batch`."""

    def __init__(self, tokens_per_batch: int, pad_id: int) -> None:
        if tokens_per_batch < 1:
            raise ValueError(f"tokens_per_batch must be >= 1, got {tokens_per_batch}")
        self.tokens_per_batch = tokens_per_batch
        self.pad_id = pad_id

    def __call__(self, samples: Sequence[Any]) -> dict[str, Any]:
        return pack_batch(longest_first(samples), self.tokens_per_batch, self.pad_id)


class StreamPacker(Generic[Item]):
    """Single-process greedy packer over a stream, with bounded lookahead.

    Items wait in arrival order until at least ``lookahead_tokens`` are queued (or the stream ends). A batch then
    takes the oldest waiting item — so nothing waits for more than about ``lookahead_tokens / capacity`` batches —
    and fills the rest of the capacity longest-first from the queue. Deterministic: equal streams give equal batches.
    """

    def __init__(self, capacity: int, lookahead_tokens: int, length: Callable[[Item], int]) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.lookahead_tokens = max(lookahead_tokens, capacity)
        self.length = length
        self.pending: list[Item] = []
        self.pending_tokens = 0

    def wants_more(self) -> bool:
        """Whether another item should be pushed before the next :meth:`pop_bin`."""
        return self.pending_tokens < self.lookahead_tokens

    def push(self, item: Item) -> None:
        n = self.length(item)
        if n > self.capacity:
            raise ValueError(f"a sample of {n} tokens does not fit a batch of {self.capacity} tokens; raise "
                             "tokens_per_batch to at least the dataset's max sample length (metadata max_len)")
        self.pending.append(item)
        self.pending_tokens += n

    def pop_bin(self) -> list[Item]:
        """The next batch's items, longest first (empty when nothing is queued)."""
        if not self.pending:
            return []
        lengths = [self.length(x) for x in self.pending]
        chosen = [0]  # the oldest waiting item always goes, so no sample waits forever behind longer ones
        room = self.capacity - lengths[0]
        for i in sorted(range(1, len(lengths)), key=lambda i: (-lengths[i], i)):
            if lengths[i] <= room:
                chosen.append(i)
                room -= lengths[i]
                if room == 0:
                    break
        taken = set(chosen)
        out = [self.pending[i] for i in sorted(chosen, key=lambda i: (-lengths[i], i))]
        self.pending = [x for i, x in enumerate(self.pending) if i not in taken]
        self.pending_tokens -= sum(lengths[i] for i in chosen)
        return out


def plan_greedy(lengths: Sequence[int], capacity: int, lookahead_tokens: int) -> list[list[int]]:
    """The batches :class:`StreamPacker` makes from a whole stream of ``lengths``, as lists of indices."""
    packer: StreamPacker[int] = StreamPacker(capacity, lookahead_tokens, lambda i: int(lengths[i]))
    bins: list[list[int]] = []
    for i in range(len(lengths)):
        packer.push(i)
        if not packer.wants_more():
            bins.append(packer.pop_bin())
    while packer.pending:
        bins.append(packer.pop_bin())
    return bins


# ----------------------------------------------------------------------------------------- rank-aware multipack


def lpt_assign(lengths: Sequence[int], num_bins: int) -> tuple[list[list[int]], list[int]]:
    """Longest-processing-time-first: items sorted longest first, each onto the least-loaded bin (ties: the lowest
    bin). Returns the bins (indices into ``lengths``, longest first) and their loads."""
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    bins: list[list[int]] = [[] for _ in range(num_bins)]
    loads = [0] * num_bins
    heap = [(0, b) for b in range(num_bins)]  # (load, bin): ties pop the lower bin, so every rank plans the same
    for i in sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i)):
        load, b = heapq.heappop(heap)
        bins[b].append(i)
        loads[b] = load + int(lengths[i])
        heapq.heappush(heap, (loads[b], b))
    return bins, loads


def multipack_step(lengths: Sequence[int], num_ranks: int, capacity: int) -> tuple[int, list[list[int]]]:
    """The longest prefix ``m`` of ``lengths`` that LPT places on ``num_ranks`` bins of ``capacity`` (binary
    search, as the reference sampler), and that placement: one list of indices per rank."""
    lo, hi = 0, len(lengths)
    best: list[list[int]] = [[] for _ in range(num_ranks)]
    while lo < hi:
        mid = (lo + hi + 1) // 2  # upper middle: ``lo = mid`` always moves; assumes fitting is monotone in the prefix
        bins, loads = lpt_assign(lengths[:mid], num_ranks)
        if max(loads) <= capacity:
            lo, best = mid, bins
        else:
            hi = mid - 1
    return lo, best


def multipack_window(lengths: Sequence[int], start: int, num_ranks: int,
                     capacity: int) -> tuple[int, list[list[int]], bool]:
    """One multipack step of a stream at position ``start``: the window is the next samples whose lengths sum to at
    least ``capacity * num_ranks`` (or the rest of the stream, then ``short`` is True); returns how many samples the
    step takes, one bin of absolute indices per rank (longest first) and ``short``. Needs ``num_ranks`` samples left.
    """
    n, end, total = len(lengths), start, 0
    if n - start < num_ranks:
        raise ValueError(f"only {n - start} samples left at position {start}, fewer than the {num_ranks} ranks")
    # no step can hold more than capacity * num_ranks tokens, so LPT never needs to look further than that
    while end < n and total < capacity * num_ranks:
        total += int(lengths[end])
        end += 1
    m, bins = multipack_step(lengths[start:end], num_ranks, capacity)
    if m == 0:
        raise ValueError(f"sample {start} has {int(lengths[start])} tokens, more than the capacity {capacity}")
    return m, [[start + i for i in b] for b in bins], total < capacity * num_ranks


def plan_multipack(lengths: Sequence[int], num_ranks: int, capacity: int,
                   drop_last: bool = True) -> list[list[list[int]]]:
    """A whole epoch of reference multipack steps over ``lengths`` (in stream order): ``plan[step][rank]`` is the
    indices that rank packs at that step. Every rank computes the same plan and takes its own bins
    (:func:`rank_batches`), so bins of one step are disjoint and balanced (loads differ by at most one sample).

    Each step is a :func:`multipack_window`; the loop stops when fewer samples than ranks remain, and ``drop_last``
    drops a final step built from a short (end-of-data) window.
    """
    if num_ranks < 1 or capacity < 1:
        raise ValueError(f"need num_ranks >= 1 and capacity >= 1, got {num_ranks} and {capacity}")
    steps: list[list[list[int]]] = []
    start, short = 0, False
    while len(lengths) - start >= num_ranks:
        m, bins, short = multipack_window(lengths, start, num_ranks, capacity)
        steps.append(bins)
        start += m
    if drop_last and steps and short:
        steps.pop()
    return steps


def rank_batches(plan: Iterable[list[list[int]]], rank: int) -> list[list[int]]:
    """One rank's bins of a :func:`plan_multipack` plan, step by step."""
    out = []
    for step in plan:
        if not 0 <= rank < len(step):
            raise ValueError(f"rank {rank} outside 0..{len(step) - 1}")
        out.append(step[rank])
    return out

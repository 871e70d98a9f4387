"""Packing: the batch contract (labels, positions, documents), budgets, longest-first greedy packing, multipack."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrmkit.data.text.packing import (
    IGNORE_INDEX,
    PackingCollate,
    StreamPacker,
    lpt_assign,
    multipack_step,
    pack_batch,
    plan_greedy,
    plan_multipack,
    rank_batches,
)
from hrmkit.nn.attn_spec import positions_from_cu_seqlens

PAD = 0


def check_contract(batch: dict, samples: list[tuple[np.ndarray, int]], budget: int, pad_id: int = PAD) -> None:
    """Assert ``batch`` is exactly the contract for ``samples`` laid out in the given order."""
    assert set(batch) == {"input_ids", "labels", "position_ids", "cu_seqlens", "prefix_lens", "num_samples"}
    for key in ("input_ids", "labels", "position_ids"):
        assert batch[key].shape == (1, budget) and batch[key].dtype == torch.int64, key
    assert batch["cu_seqlens"].dtype == batch["prefix_lens"].dtype == torch.int32
    assert isinstance(batch["num_samples"], int) and batch["num_samples"] == len(samples)
    ids, labels, pos = (batch[k][0].tolist() for k in ("input_ids", "labels", "position_ids"))
    cu, prefixes = batch["cu_seqlens"].tolist(), batch["prefix_lens"].tolist()
    used = sum(len(s) for s, _ in samples)
    padded = used < budget
    assert cu[0] == 0 and cu[-1] == budget and len(cu) == len(samples) + 1 + padded
    assert len(prefixes) == len(cu) - 1
    for k, (sample, prefix) in enumerate(samples):
        a, b = cu[k], cu[k + 1]
        assert ids[a:b] == list(sample) and pos[a:b] == list(range(len(sample))) and prefixes[k] == prefix
        for t in range(len(sample)):
            supervised = t + 1 < len(sample) and t + 1 >= prefix  # next token is a response token of this sample
            assert labels[a + t] == (int(sample[t + 1]) if supervised else IGNORE_INDEX), (k, t)
        assert labels[b - 1] == IGNORE_INDEX  # a sample's last position predicts nothing
        if 0 < prefix < len(sample):
            assert labels[a + prefix - 1] == sample[prefix]  # EOQ predicts the first response token
            assert all(x == IGNORE_INDEX for x in labels[a:a + prefix - 1])  # the rest of the instruction does not
        assert sum(x != IGNORE_INDEX for x in labels[a:b]) == len(sample) - max(prefix, 1)
    if padded:
        assert ids[used:] == [pad_id] * (budget - used) and labels[used:] == [IGNORE_INDEX] * (budget - used)
        assert pos[used:] == [0] * (budget - used) and prefixes[-1] == budget - used  # no position: no text
    assert torch.equal(positions_from_cu_seqlens(batch["cu_seqlens"].long(), budget)[:used],
                       batch["position_ids"][0, :used])


def _sample(n: int, prefix: int, base: int = 100) -> tuple[np.ndarray, int]:
    return np.arange(base, base + n, dtype=np.int32), prefix


def test_pack_batch_hand_checked_example():
    # sample A: instruction [10, 11, 12], response [13, 14]; sample B: instruction [20], response [21, 22]
    a, b = (np.array([10, 11, 12, 13, 14]), 3), (np.array([20, 21, 22]), 1)
    batch = pack_batch([a, b], 10, pad_id=7)
    assert batch["input_ids"][0].tolist() == [10, 11, 12, 13, 14, 20, 21, 22, 7, 7]
    assert batch["labels"][0].tolist() == [-100, -100, 13, 14, -100, 21, 22, -100, -100, -100]
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 0, 0]
    assert batch["cu_seqlens"].tolist() == [0, 5, 8, 10] and batch["prefix_lens"].tolist() == [3, 1, 2]
    assert batch["num_samples"] == 2
    check_contract(batch, [a, b], 10, pad_id=7)


def test_exactly_full_batch_has_no_padding_document():
    s = [_sample(6, 2), _sample(4, 4, 200)]  # the second has no response at all: nothing supervised
    batch = pack_batch(s, 10, PAD)
    assert batch["cu_seqlens"].tolist() == [0, 6, 10] and batch["prefix_lens"].tolist() == [2, 4]
    assert (batch["labels"][0, 6:] == IGNORE_INDEX).all()
    check_contract(batch, s, 10)


def test_prefix_zero_is_plain_causal_and_empty_batch_is_all_padding():
    s = [_sample(5, 0)]
    batch = pack_batch(s, 8, PAD)
    assert batch["labels"][0, :5].tolist() == [101, 102, 103, 104, -100]
    check_contract(batch, s, 8)
    empty = pack_batch([], 4, PAD)
    assert empty["cu_seqlens"].tolist() == [0, 4] and empty["prefix_lens"].tolist() == [4]
    assert empty["num_samples"] == 0 and (empty["labels"] == IGNORE_INDEX).all()


def test_padding_positions_never_pass_the_longest_sample():
    """Issue #13 item 1: a mostly empty row (the last validation batch) once numbered its padding tail 0..T-1,
    past any RoPE table shorter than tokens_per_batch; positions must stay below the longest sample, whatever T."""
    s = [_sample(20, 5), _sample(7, 2, 300)]
    batch = pack_batch(s, 4096, PAD)
    assert int(batch["position_ids"].max()) == 19
    assert int(pack_batch([], 4096, PAD)["position_ids"].max()) == 0
    check_contract(batch, s, 4096)


def test_random_batches_follow_the_contract():
    rng = np.random.default_rng(0)
    for _ in range(30):
        budget = int(rng.integers(8, 64))
        samples, used = [], 0
        while True:
            n = int(rng.integers(1, 12))
            if used + n > budget:
                break
            samples.append((rng.integers(1, 500, n).astype(np.uint16), int(rng.integers(0, n + 1))))
            used += n
        check_contract(pack_batch(samples, budget, PAD), samples, budget)


def test_collate_orders_longest_first_and_dicts_work():
    s = [{"ids": np.arange(1, 3), "prefix_len": 1}, {"ids": np.arange(1, 6), "prefix_len": 2},
         {"ids": np.arange(1, 4), "prefix_len": 1}]
    batch = PackingCollate(16, PAD)(s)
    assert batch["cu_seqlens"].tolist() == [0, 5, 8, 10, 16]


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="exceed the batch budget of 8"):
        pack_batch([_sample(5, 1), _sample(4, 1)], 8, PAD)
    with pytest.raises(ValueError, match="sample 0 of the batch: prefix_len 6 outside 0..5"):
        pack_batch([_sample(5, 6)], 8, PAD)
    with pytest.raises(ValueError, match="non-empty 1-D integer"):
        pack_batch([(np.array([1.5]), 0)], 8, PAD)
    with pytest.raises(ValueError, match="'ids' and 'prefix_len'"):
        pack_batch([{"ids": [1]}], 8, PAD)
    with pytest.raises(ValueError, match="does not fit a batch of 4 tokens"):
        StreamPacker(4, 8, len).push([1, 2, 3, 4, 5])


def test_stream_packer_exact_sequence():
    lengths = [3, 9, 2, 7, 4, 1, 6]
    packer: StreamPacker[int] = StreamPacker(10, 100, lambda i: lengths[i])
    for i in range(len(lengths)):
        packer.push(i)
    bins = []
    while packer.pending:
        bins.append(packer.pop_bin())
    # oldest-first seed, then longest that still fits, each bin listed longest first
    assert bins == [[3, 0], [1, 5], [6, 2], [4]]
    assert packer.pending_tokens == 0


def test_plan_greedy_never_splits_and_fills_well():
    rng = np.random.default_rng(1)
    lengths = rng.integers(20, 400, 2000).tolist()
    bins = plan_greedy(lengths, 1024, 4 * 1024)
    flat = [i for b in bins for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every sample exactly once, whole
    loads = [sum(lengths[i] for i in b) for b in bins]
    assert max(loads) <= 1024
    assert all(lengths[b[k]] >= lengths[b[k + 1]] for b in bins for k in range(len(b) - 1))  # longest first
    assert sum(lengths) / (1024 * (len(bins) - 1)) > 0.97  # packing efficiency (last bin excluded)
    # no starvation: every batch takes the oldest sample still waiting
    done: set[int] = set()
    for b in bins:
        assert min(b) == min(set(range(len(lengths))) - done)
        done.update(b)


def test_lpt_assign_is_longest_first_onto_least_loaded():
    bins, loads = lpt_assign([5, 9, 2, 7, 4], 2)
    assert bins == [[1, 4], [3, 0, 2]] and loads == [13, 14]


def test_multipack_ranks_get_disjoint_balanced_bins():
    rng = np.random.default_rng(2)
    lengths = rng.integers(10, 300, 1500).tolist()
    capacity, ranks = 1024, 4
    plan = plan_multipack(lengths, ranks, capacity)
    seen: list[int] = []
    for step in plan:
        assert len(step) == ranks
        loads = [sum(lengths[i] for i in b) for b in step]
        assert max(loads) <= capacity
        assert max(loads) - min(loads) <= max(lengths[i] for b in step for i in b)  # LPT balance
        ids = [i for b in step for i in b]
        assert len(ids) == len(set(ids))  # disjoint within a step
        seen += ids
    assert len(seen) == len(set(seen))  # and across steps
    assert seen and sorted(seen) == list(range(len(seen)))  # a prefix of the stream, in order of steps
    per_rank = [rank_batches(plan, r) for r in range(ranks)]
    assert all(len(b) == len(plan) for b in per_rank)
    assert sorted(i for r in per_rank for b in r for i in b) == sorted(seen)
    efficiency = sum(lengths[i] for i in seen) / (capacity * ranks * len(plan))
    assert efficiency > 0.95


def test_multipack_step_finds_longest_fitting_prefix_and_drop_last():
    m, bins = multipack_step([6, 6, 6, 6, 6], 2, 12)
    assert m == 4 and sorted(len(b) for b in bins) == [2, 2]
    plan = plan_multipack([6] * 5, 2, 12, drop_last=False)
    assert [sorted(i for b in s for i in b) for s in plan] == [[0, 1, 2, 3]]  # 1 left < 2 ranks: stops
    assert plan_multipack([5, 5, 5], 1, 10, drop_last=True) == [[[0, 1]]]  # the short tail step is dropped
    assert plan_multipack([5, 5, 5], 1, 10, drop_last=False) == [[[0, 1]], [[2]]]
    with pytest.raises(ValueError, match="sample 0 has 20 tokens"):
        plan_multipack([20, 1], 1, 10)
    with pytest.raises(ValueError, match="rank 3 outside"):
        rank_batches(plan, 3)

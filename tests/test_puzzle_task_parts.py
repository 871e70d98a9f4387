import math

import torch

from hrmkit.tasks.act import ACTCarry, exploration_min_steps
from hrmkit.tasks.losses import IGNORE, sequence_mean, softmax_cross_entropy, stablemax_cross_entropy


def test_stablemax_matches_its_definition():
    logits = torch.tensor([[[2.0, -1.0, 0.0, -3.0]]])
    labels = torch.tensor([[0]])
    s = [3.0, 1 / 2, 1.0, 1 / 4]
    expected = -math.log(s[0] / sum(s))
    out = stablemax_cross_entropy(logits, labels)
    assert out.dtype == torch.float64
    assert abs(out.item() - expected) < 1e-12
    assert stablemax_cross_entropy(logits, torch.tensor([[IGNORE]])).item() == 0.0


def test_softmax_ce_and_sequence_mean():
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 2, IGNORE], [IGNORE, IGNORE, IGNORE]])
    per = softmax_cross_entropy(logits, labels)
    ref = torch.nn.functional.cross_entropy(logits[0, :2], labels[0, :2], reduction="none")
    torch.testing.assert_close(per[0, :2], ref)
    means = sequence_mean(per, labels)
    torch.testing.assert_close(means[0], ref.mean())
    assert means[1] == 0  # a fully ignored sequence contributes nothing (and no NaN)


def _batch(values: list[int]) -> dict[str, torch.Tensor]:
    v = torch.tensor(values)
    return {"inputs": v.view(-1, 1).repeat(1, 3), "labels": v.view(-1, 1).repeat(1, 3), "puzzle_identifiers": v}


def test_act_carry_refills_only_halted_slots():
    carry = ACTCarry.empty(_batch([1, 2, 3]))
    assert carry.halted.all()
    carry.refill(_batch([1, 2, 3]))
    carry.state = {"z": torch.arange(3.0).view(3, 1, 1).expand(3, 3, 2).clone()}
    carry.steps = torch.tensor([1, 4, 2], dtype=torch.int32)
    carry.halted = torch.tensor([False, True, False])
    carry.refill(_batch([7, 8, 9]))
    assert carry.data["inputs"][:, 0].tolist() == [1, 8, 3]  # slot 1 took the new row, others kept theirs
    assert carry.steps.tolist() == [1, 0, 2]
    fresh = {"z": torch.full((3, 3, 2), -1.0)}
    state = carry.reset_state(fresh)
    assert state["z"][:, 0, 0].tolist() == [0.0, -1.0, 2.0]


def test_act_carry_rejects_changing_batch_size():
    carry = ACTCarry.empty(_batch([1, 2]))
    try:
        carry.refill(_batch([1, 2, 3]))
    except ValueError as e:
        assert "constant local batch size" in str(e)
    else:
        raise AssertionError("expected a ValueError")


def test_exploration_min_steps_distribution():
    g = torch.Generator().manual_seed(0)
    m = exploration_min_steps(20000, 0.1, 16, torch.device("cpu"), g)
    explored = m > 0
    assert abs(explored.float().mean().item() - 0.1) < 0.01
    assert m[explored].min() >= 2 and m.max() <= 16

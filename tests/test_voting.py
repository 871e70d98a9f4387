import pytest
import torch

from hrmkit.tasks.voting import vote


def test_answer_vote_takes_the_most_frequent_whole_answer():
    a, b = [1, 2, 3], [1, 2, 4]
    samples = torch.tensor([[a], [b], [b], [a], [b]])  # [N=5, B=1, L=3]
    assert vote(samples).tolist() == [b]


def test_answer_vote_breaks_ties_by_mean_q_halt_then_by_order():
    samples = torch.tensor([[[1, 1]], [[2, 2]], [[1, 1]], [[2, 2]]])
    q = torch.tensor([[-3.0], [2.0], [-1.0], [0.0]])
    assert vote(samples, q).tolist() == [[2, 2]]
    assert vote(samples).tolist() == [[1, 1]]  # no confidence: the earliest sample's answer


def test_position_vote_can_build_an_answer_no_sample_gave():
    samples = torch.tensor([[[1, 9, 3]], [[1, 2, 8]], [[7, 2, 3]]])
    assert vote(samples, rule="position").tolist() == [[1, 2, 3]]
    assert vote(samples, rule="answer").tolist() == [[1, 9, 3]]  # all distinct: the first


def test_vote_is_per_puzzle_and_checks_its_input():
    samples = torch.tensor([[[1], [5]], [[2], [5]], [[2], [6]]])  # B=2
    assert vote(samples).tolist() == [[2], [5]]
    with pytest.raises(ValueError, match=r"\[N, B, L\]"):
        vote(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="vote rule must be one of"):
        vote(samples, rule="mean")
    with pytest.raises(ValueError, match="q_halt must have shape"):
        vote(samples, torch.zeros(2, 2))

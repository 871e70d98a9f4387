"""Majority voting over N sampled answers to the same puzzle (inference-time width scaling of stochastic cores).

Two rules:

* ``answer``: whole-answer plurality. Identical predicted sequences pool their votes; the most voted sequence wins,
  ties going to the candidate whose voters have the highest mean ``sigmoid(q_halt)`` (the same tie-break as ARC
  voting in :mod:`hrmkit.eval.arc`). The result is always one of the sampled answers, so it stays a consistent
  solution (a Sudoku grid is never stitched together from different samples).
* ``position``: per-position plurality. Every position independently takes its most frequent token (ties: the
  smaller token id). It can repair an answer that most samples get right almost everywhere, but the voted sequence
  may be one that no trajectory produced.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

VoteRule = Literal["answer", "position"]
VOTE_RULES: tuple[str, ...] = ("answer", "position")


def vote(samples: Tensor, q_halt: Tensor | None = None, rule: VoteRule = "answer") -> Tensor:
    """Aggregate ``samples`` ``[N, B, L]`` (token ids) into one answer per puzzle ``[B, L]``.

    ``q_halt`` ``[N, B]`` (halting logits) only breaks ``answer`` ties; without it ties go to the earliest sample.
    """
    if samples.dim() != 3:
        raise ValueError(f"vote expects samples of shape [N, B, L], got {tuple(samples.shape)}")
    if rule == "answer":
        return _vote_answer(samples, q_halt)
    if rule == "position":
        return _vote_position(samples)
    raise ValueError(f"vote rule must be one of {VOTE_RULES}, got {rule!r}")


def _vote_answer(samples: Tensor, q_halt: Tensor | None) -> Tensor:
    n, b, _ = samples.shape
    same = (samples.unsqueeze(1) == samples.unsqueeze(0)).all(-1).to(torch.float32)  # [N, N, B]
    votes = same.sum(1)  # [N, B]: how many samples agree with sample i
    if q_halt is None:
        confidence = torch.zeros(n, b, device=samples.device)
    else:
        if q_halt.shape != (n, b):
            raise ValueError(f"q_halt must have shape {(n, b)} to match the samples, got {tuple(q_halt.shape)}")
        confidence = (same * torch.sigmoid(q_halt.float()).unsqueeze(0)).sum(1) / votes  # mean over i's group
    # votes are integers and confidence lies in [0, 1]: rank by votes first, then by confidence, then earliest
    order = torch.arange(n, 0, -1, device=samples.device, dtype=torch.float32).unsqueeze(-1) * 1e-3
    score = votes * 4.0 + confidence * 2.0 + order / n
    best = score.argmax(0)  # [B]
    return samples.gather(0, best.view(1, b, 1).expand(1, b, samples.shape[-1])).squeeze(0)


def _vote_position(samples: Tensor) -> Tensor:
    counts = F.one_hot(samples.long(), int(samples.max()) + 1).sum(0)  # [B, L, V]
    return counts.argmax(-1).to(samples.dtype)  # argmax returns the first maximum: ties go to the smaller id

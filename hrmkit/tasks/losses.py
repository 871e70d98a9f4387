"""Token losses of HRM-Symbolic: stablemax cross-entropy (small-sample runs) and softmax cross-entropy.

Both return *per-token* losses with 0 at ignored positions, so the caller can form HRM's "mean over each sequence's
valid tokens, summed over the batch" without a second masking pass.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -100
LossType = Literal["stablemax", "softmax"]


def _stablemax_s(x: Tensor) -> Tensor:
    """s(x) = x + 1 for x ≥ 0, 1 / (1 − x) otherwise: a softmax substitute that grows linearly, not exponentially."""
    return torch.where(x >= 0, x + 1, 1 / (1 - x + 1e-30))


def stablemax_cross_entropy(logits: Tensor, labels: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """Per-token ``−log(s(x_y) / Σ_j s(x_j))`` in ``dtype`` (float64 by default, as the reference), 0 where ignored."""
    s = _stablemax_s(logits.to(dtype))
    logp = torch.log(s / s.sum(dim=-1, keepdim=True))
    valid = labels != IGNORE
    picked = torch.gather(logp, -1, torch.where(valid, labels, 0).unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, -picked, torch.zeros_like(picked))


def softmax_cross_entropy(logits: Tensor, labels: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    flat = F.cross_entropy(logits.to(dtype).flatten(0, -2), labels.flatten(), ignore_index=IGNORE, reduction="none")
    return flat.view(labels.shape)


def token_loss(kind: LossType, logits: Tensor, labels: Tensor, dtype: torch.dtype) -> Tensor:
    if kind == "stablemax":
        return stablemax_cross_entropy(logits, labels, dtype)
    if kind == "softmax":
        return softmax_cross_entropy(logits, labels, dtype)
    raise ValueError(f"loss must be 'stablemax' or 'softmax', got {kind!r}")


def sequence_mean(per_token: Tensor, labels: Tensor) -> Tensor:
    """Mean over each sequence's valid tokens (``[B]``); sequences without labels contribute 0."""
    counts = (labels != IGNORE).sum(-1).clamp_min(1)
    return per_token.sum(-1) / counts.to(per_token.dtype)

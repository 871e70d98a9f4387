"""Log-likelihood of token continuations under a TextTask, the way HRM-Text was trained (PrefixLM).

A scoring item is ``tokens`` with a ``prefix_len`` and a ``score_from``: the model reads ``tokens[:-1]``, the first
``prefix_len`` of them attend to each other bidirectionally (the instruction), everything after is causal (the
response), and the targets ``tokens[score_from:]`` are scored, each from the position before it. This is exactly the
response-only objective of training (``hrmkit.data.text.packing``: the instruction's last token, EOQ, predicts the
first response token), so a continuation's score here equals the training loss of the same sample.

Batches are right-padded: under PrefixLM and causal masks no real position attends to a later one outside its own
prefix, so padding after a row's last token changes nothing (tested against the packed training batch). The LM head
runs only on scored positions, so long contexts with a 65k vocabulary stay cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from hrmkit.nn.attn_spec import AttnSpec

if TYPE_CHECKING:
    from hrmkit.tasks.text import TextTask


@dataclass(frozen=True)
class ScoreItem:
    """``tokens`` fed as ``tokens[:-1]``; positions ``< prefix_len`` form the bidirectional prefix; the targets
    ``tokens[score_from:]`` are scored (``prefix_len <= score_from < len(tokens)``, ``score_from >= 1``)."""

    tokens: tuple[int, ...]
    prefix_len: int
    score_from: int

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if not 1 <= self.score_from < n:
            raise ValueError(f"ScoreItem: score_from must be in [1, {n}) for {n} tokens, got {self.score_from} "
                             "(nothing to score, or no token to condition on)")
        if not 0 <= self.prefix_len <= self.score_from:
            raise ValueError(f"ScoreItem: prefix_len {self.prefix_len} must be in [0, score_from={self.score_from}]: "
                             "a scored token inside the bidirectional prefix would be visible to its own prediction")


@dataclass(frozen=True)
class Score:
    """Sum of the targets' log-probabilities, whether every target is the argmax, and the per-token values."""

    logprob: float
    is_greedy: bool
    token_logprobs: tuple[float, ...]


@torch.no_grad()
def score_items(task: TextTask, items: Sequence[ScoreItem], batch_size: int = 8) -> list[Score]:
    """Score ``items`` (any order, any lengths) in right-padded batches of ``batch_size``, longest first.

    The model's own attention setting decides the mask: ``prefixlm`` uses each item's ``prefix_len``; a model trained
    ``causal`` (the ablation baseline) is scored causally.
    """
    if batch_size < 1:
        raise ValueError(f"score_items: batch_size must be >= 1, got {batch_size}")
    vocab = task.embed_tokens.num_embeddings
    for n, item in enumerate(items):
        bad = [t for t in item.tokens if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"score_items: item {n} has token ids outside the vocabulary [0, {vocab}): {bad[:5]}")
    order = sorted(range(len(items)), key=lambda i: -len(items[i].tokens))
    out: list[Score | None] = [None] * len(items)
    was_training = task.training
    task.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start: start + batch_size]
            for i, score in zip(chunk, _score_batch(task, [items[i] for i in chunk])):
                out[i] = score
    finally:
        task.train(was_training)
    return out  # type: ignore[return-value]


def _score_batch(task: TextTask, items: list[ScoreItem]) -> list[Score]:
    device = task.embed_tokens.weight.device
    width = max(len(it.tokens) - 1 for it in items)
    ids = torch.full((len(items), width), int(task.hparams.pad_id), dtype=torch.long, device=device)
    for r, it in enumerate(items):
        ids[r, : len(it.tokens) - 1] = torch.tensor(it.tokens[:-1], dtype=torch.long)
    if task.hparams.attention == "prefixlm":
        prefix = torch.tensor([it.prefix_len for it in items], dtype=torch.int32, device=device)
        attn = AttnSpec("prefixlm", prefix_lens=prefix)
    else:
        attn = AttnSpec("causal")
    hidden = task.hidden(ids, attn)
    rows = torch.cat([torch.full((len(it.tokens) - it.score_from,), r, dtype=torch.long)
                      for r, it in enumerate(items)]).to(device)
    cols = torch.cat([torch.arange(it.score_from - 1, len(it.tokens) - 1) for it in items]).to(device)
    targets = torch.tensor([t for it in items for t in it.tokens[it.score_from:]], dtype=torch.long, device=device)
    logits = task.lm_head(hidden[rows, cols]).float()
    logprobs = torch.log_softmax(logits, dim=-1)
    picked = logprobs.gather(1, targets[:, None])[:, 0].tolist()
    greedy = (logits.argmax(-1) == targets).tolist()
    scores, at = [], 0
    for it in items:
        n = len(it.tokens) - it.score_from
        per_token = tuple(picked[at: at + n])
        scores.append(Score(float(sum(per_token)), bool(all(greedy[at: at + n])), per_token))
        at += n
    return scores

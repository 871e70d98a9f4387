"""Prompt batches for ``hrmkit predict`` on a text dataset: each stored sample split at its ``prefix_len``.

A batch is ``{"index": int64 [B], "prompt_ids": [[...]], "reference_ids": [[...]], "max_new_tokens": [B],
"stop_ids": [eoa]}``: the instruction (``<|im_start|>`` conditions, prompt, ``<|im_end|>``) to continue, the stored
response to compare with, and each sample's generation budget (the dataset's ``max_len`` minus the prompt, unless
a fixed budget is given). ``TextTask.predict_step`` generates from it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from litdata import StreamingDataLoader


class PromptLoader:
    """Batches of ``batch_size`` prompts in stored order (one pass). ``len`` is exact for one process; under DDP
    LitData splits the samples between ranks, so ``len`` raises ``TypeError`` and Lightning runs to the end."""

    def __init__(self, samples: StreamingDataLoader, batch_size: int, max_len: int, stop_ids: list[int],
                 max_new_tokens: int | None = None, total_samples: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"predict batch size must be >= 1, got {batch_size}")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError(f"predict max_new_tokens must be >= 1 or None, got {max_new_tokens}")
        self.samples = samples
        self.batch_size = batch_size
        self.max_len = max_len
        self.stop_ids = list(stop_ids)
        self.max_new_tokens = max_new_tokens
        self.total_samples = total_samples

    def __len__(self) -> int:
        if self.total_samples is None:
            raise TypeError("the number of prompt batches per rank is unknown under DDP")
        return math.ceil(self.total_samples / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rows: list[tuple[int, list[int], list[int]]] = []
        for index, item in enumerate(self.samples):
            ids, prefix = np.asarray(item["ids"]).tolist(), int(item["prefix_len"])
            rows.append((index, ids[:prefix], ids[prefix:]))
            if len(rows) == self.batch_size:
                yield self._batch(rows)
                rows = []
        if rows:
            yield self._batch(rows)

    def _batch(self, rows: list[tuple[int, list[int], list[int]]]) -> dict[str, Any]:
        budgets = [self.max_new_tokens or max(1, self.max_len - len(p)) for _, p, _ in rows]
        return {"index": torch.tensor([r[0] for r in rows], dtype=torch.long),
                "prompt_ids": [r[1] for r in rows], "reference_ids": [r[2] for r in rows],
                "max_new_tokens": torch.tensor(budgets, dtype=torch.long), "stop_ids": self.stop_ids}

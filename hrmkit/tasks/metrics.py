"""Sum/count metrics that sync correctly across ranks (torchmetrics states reduced by sum)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class TaggedMean(Metric):
    """Mean of a per-sample value, overall and per integer tag (e.g. puzzle difficulty), over valid samples only."""

    full_state_update = False

    def __init__(self, num_tags: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_tags = num_tags
        self.add_state("total", default=torch.zeros(num_tags, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(num_tags, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: Tensor, valid: Tensor | None = None, tag: Tensor | None = None) -> None:
        value = value.detach().to(torch.float64).flatten()
        valid = torch.ones_like(value, dtype=torch.bool) if valid is None else valid.flatten().bool()
        tag = torch.zeros_like(value, dtype=torch.long) if tag is None else tag.flatten().long()
        tag = tag.clamp(0, self.num_tags - 1)
        self.total.index_add_(0, tag, torch.where(valid, value, 0.0))
        self.count.index_add_(0, tag, valid.to(torch.float64))

    def compute(self) -> Tensor:
        return self.total.sum() / self.count.sum().clamp_min(1)

    def per_tag(self) -> Tensor:
        """Per-tag means (NaN where a tag had no samples), synced across ranks like :meth:`compute`."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=True):
            return torch.where(self.count > 0, self.total / self.count.clamp_min(1), torch.nan)


def fresh_metric_states(module: torch.nn.Module) -> None:
    """Reset every torchmetrics state of ``module`` outside inference mode.

    ``trainer.validate`` runs under ``torch.inference_mode`` and leaves metric states as inference tensors; a later
    ``fit`` validates under ``no_grad`` and would fail to update them in place. Tasks call this in ``on_fit_start``.
    """
    with torch.inference_mode(False):
        for child in module.modules():
            if isinstance(child, Metric):
                child.reset()

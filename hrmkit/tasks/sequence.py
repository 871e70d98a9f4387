"""SequenceTask: the smallest complete hrmkit task: position-wise sequence→sequence with any core.

Tokens are embedded (scaled by √d), the core runs ``segments`` full passes with the state detached between them
(deep supervision: every segment is supervised), and a linear head predicts the target token at each position. It
trains the synthetic tasks of :mod:`hrmkit.data.synthetic` and is the quickest way to try a new core.
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from hrmkit.cores.base import RecursiveCore, core_from_config
from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.init import trunc_normal_
from hrmkit.tasks.metrics import fresh_metric_states


class SequenceTask(L.LightningModule):
    def __init__(self, core: RecursiveCore, vocab_size: int = 16, segments: int = 1, lr: float = 3e-3,
                 weight_decay: float = 0.0, warmup_steps: int = 20) -> None:
        """
        Args:
            core: any registered core (YAML: ``class_path`` + ``init_args``); a ``to_config()`` dict also works.
            vocab_size: input and output vocabulary size.
            segments: full core passes per batch, each supervised (deep supervision).
            lr: AdamW learning rate.
            weight_decay: AdamW decoupled weight decay.
            warmup_steps: linear learning-rate warmup.
        """
        super().__init__()
        if isinstance(core, dict):  # reloaded from a checkpoint's hyper-parameters
            core = core_from_config(core)
        self.save_hyperparameters(ignore=["core"])
        self.hparams["core"] = core.to_config()
        self.core = core
        d = core.hidden_size
        self.embed_scale = math.sqrt(d)
        self.embed = nn.Embedding(vocab_size, d)
        trunc_normal_(self.embed.weight, 1.0 / self.embed_scale, core.init)
        self.head = nn.Linear(d, vocab_size, bias=False)
        trunc_normal_(self.head.weight, 1.0 / self.embed_scale, core.init)
        self.val_token_acc, self.val_exact_acc = MeanMetric(), MeanMetric()

    def forward(self, inputs: Tensor) -> list[Tensor]:
        """Logits ``[B, T, V]`` after each segment."""
        x = self.embed(inputs) * self.embed_scale
        state = self.core.initial_state(x)
        spec = AttnSpec("bidirectional")
        logits = []
        for _ in range(self.hparams.segments):
            state, out = self.core(x, state, spec)
            state = {k: v.detach() for k, v in state.items()}
            logits.append(self.head(out.to(self.head.weight.dtype)))
        return logits

    def _loss(self, logits: list[Tensor], targets: Tensor) -> Tensor:
        return torch.stack([F.cross_entropy(lg.flatten(0, 1).float(), targets.flatten()) for lg in logits]).mean()

    def on_fit_start(self) -> None:
        fresh_metric_states(self)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, targets = batch
        logits = self(inputs)
        loss = self._loss(logits, targets)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/token_acc", (logits[-1].argmax(-1) == targets).float().mean())
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        inputs, targets = batch
        logits = self(inputs)
        correct = logits[-1].argmax(-1) == targets
        self.val_token_acc.update(correct.float().mean(dim=1))
        self.val_exact_acc.update(correct.all(dim=1).float())
        self.log("val/loss", self._loss(logits, targets), prog_bar=True)
        self.log("val/token_acc", self.val_token_acc)
        self.log("val/exact_acc", self.val_exact_acc, prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
                                betas=(0.9, 0.95))
        warmup = max(1, self.hparams.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

"""TextTask: HRM-Text language modelling (instruction → response) on packed token streams, with any core.

One packed row ``[1, T]`` holds several instruction→response samples (see the batch contract below). Tokens are
embedded and scaled by √d (the table starts at std 1/√d, so embeddings start near unit variance; spec §2.5), the
core runs one full pass under a PrefixLM mask (bidirectional over each instruction, causal over its response, never
across samples), and an untied LM head gives logits at every position. The loss is fp32 cross-entropy summed over
supervised positions and divided by their count (averaged over ranks, so DDP's gradient averaging yields the global
token mean, spec §5.4).

Batch contract (what :class:`hrmkit.data` text datamodules produce)::

    input_ids     int64 [1, T]   packed token stream, tail padded with pad_id
    labels        int64 [1, T]   shifted next-token targets, -100 where unsupervised
    position_ids  int64 [1, T]   restart at 0 per sample
    cu_seqlens    int32 [n+1]    document boundaries (the padding tail is a last pseudo-document), ends at T
    prefix_lens   int32 [n]      instruction length per document
    num_samples   int            real samples (documents past it are padding)
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from hrmkit.callbacks.summary import format_flops
from hrmkit.cores.base import RecursiveCore
from hrmkit.cores.flops import core_flops_per_token
from hrmkit.errors import HrmkitInputError
from hrmkit.nn.attention import plan_wanted
from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.backends import with_plan
from hrmkit.nn.cache import KVCache
from hrmkit.nn.init import trunc_normal_
from hrmkit.nn.linear import Linear
from hrmkit.optim.schedules import warmup_constant, warmup_cosine
from hrmkit.registry import TASKS
from hrmkit.tasks.base import Task
from hrmkit.tasks.step_logging import stash_late_row, step_logging

Objective = Literal["response", "full"]
AttentionKind = Literal["prefixlm", "causal"]
Schedule = Literal["constant", "cosine"]
IGNORE = -100
_BATCH_KEYS = ("input_ids", "labels", "position_ids", "cu_seqlens", "prefix_lens")


@TASKS.register("TextTask")
class TextTask(Task):
    def __init__(self, core: RecursiveCore, vocab_size: int | None = None, objective: Objective = "response",
                 attention: AttentionKind = "prefixlm", lr: float = 2.2e-4, betas: tuple[float, float] = (0.9, 0.95),
                 weight_decay: float = 0.1, warmup_steps: int = 2000, schedule: Schedule = "constant",
                 min_lr_ratio: float = 0.1, pad_id: int | None = 0, embedding_scale: float | None = None,
                 init_from: str | None = None, freeze: list[str] | None = None, reinit: list[str] | None = None,
                 init_strict: bool = True, compile: bool | dict[str, Any] = False) -> None:
        """
        Args:
            core: any registered core, e.g. ``build_core("hrm", "text-XL")`` (YAML ``class_path`` + ``init_args``;
                a ``to_config()`` dict also works, which is how checkpoints reload).
            vocab_size: rows of the embedding table and LM head (HRM-Text: 65,536). None: read from the
                datamodule's ``vocab_size`` in ``configure_model`` (the resolved value is saved in the hyper-parameters,
                so checkpoints reload without the data).
            objective: ``response`` = −log P(x_a | x_q), the labels as the datamodule gives them; ``full`` = the
                paper's P(x) ablation, every next token of each sample (instruction included) built here from
                ``input_ids`` and ``cu_seqlens``. ``full`` needs ``attention="causal"``: with a bidirectional
                instruction each instruction token could read the token it must predict.
            attention: ``prefixlm`` (HRM-Text) or ``causal`` (the ablation baseline; ``prefix_lens`` is ignored).
            lr: AdamATan2 peak learning rate (HRM-Text XL 2.2e-4, SFT 3e-5).
            betas: AdamATan2 (β1, β2).
            weight_decay: decoupled weight decay, applied to every parameter as in the reference.
            warmup_steps: linear warmup length in optimizer steps.
            schedule: ``constant`` after warmup (pretraining) or ``cosine`` down to ``min_lr_ratio``·lr (SFT);
                cosine needs a finite ``trainer.max_steps``/epochs.
            min_lr_ratio: cosine floor as a fraction of ``lr`` (ignored by ``constant``).
            pad_id: the padding token id (used by generation and interop; padding is never supervised). None: the
                datamodule's ``pad_id`` (0 without one), resolved in ``configure_model`` and saved like ``vocab_size``,
                so a recipe that takes its vocabulary from the data (CPU derivations) fits any tokenizer.
            embedding_scale: embedding output multiplier; None = √d (HRM-Text). Imported HF configs may carry
                another value (``embedding_scale = 1 / initializer_range``).
            init_from: start from a trained model's weights (not a resume: no optimizer or step state): a task
                checkpoint (.ckpt, puzzle or text) or an HF hrm_text directory. Its core is copied exactly (strict
                shape check, see :mod:`hrmkit.transfer`); embedding and head too when it is a TextTask.
            freeze: parts to keep fixed: ``core``, a core part (``H``, ``L``) or a task layer (``embed_tokens``).
            reinit: task layers to keep freshly initialised although ``init_from`` has them (e.g. ``lm_head``).
            init_strict: fail on any core mismatch (default); False copies what matches and reports the rest.
            compile: ``torch.compile`` the core (the recursive schedule) on any strategy, single device included:
                ``true`` with inductor's defaults, or a dict of ``torch.compile`` arguments (``mode``, ``backend``,
                ``fullgraph``, ``dynamic``). A strategy preset that compiles already wins (no double compile).
        """
        super().__init__()
        core = self._core_from(core)
        if objective not in ("response", "full"):
            raise ValueError(f"TextTask.objective must be 'response' or 'full', got {objective!r}")
        if attention not in ("prefixlm", "causal"):
            raise ValueError(f"TextTask.attention must be 'prefixlm' or 'causal', got {attention!r}")
        if objective == "full" and attention == "prefixlm":
            raise ValueError("TextTask(objective='full', attention='prefixlm') would let every instruction token see "
                             "the next token it has to predict (the prefix is bidirectional); use attention='causal' "
                             "for the P(x) ablation")
        if schedule not in ("constant", "cosine"):
            raise ValueError(f"TextTask.schedule must be 'constant' or 'cosine', got {schedule!r}")
        self.save_hyperparameters(ignore=["core"])
        self._adopt_core(core)
        d = core.hidden_size
        self.embed_scale = math.sqrt(d) if embedding_scale is None else float(embedding_scale)
        self.embed_tokens: nn.Embedding | None = None
        self.lm_head: Linear | None = None
        if vocab_size is not None:
            self._build_io(vocab_size)
        self.val_loss = SumRatio()
        self.val_token_acc = SumRatio()
        self.val_exact_acc = SumRatio()

    def _build_io(self, vocab_size: int) -> None:
        """Embedding table and LM head, the parts sized by the vocabulary."""
        if int(vocab_size) != vocab_size or vocab_size < 1:
            raise ValueError(f"TextTask.vocab_size must be a positive integer, got {vocab_size}")
        vocab_size = int(vocab_size)
        pad_id = self.hparams.pad_id
        if pad_id is not None and not 0 <= pad_id < vocab_size:
            raise ValueError(f"TextTask.pad_id={pad_id} is outside the vocabulary [0, {vocab_size})")
        d = self.core.hidden_size
        self.embed_tokens = nn.Embedding(vocab_size, d)
        trunc_normal_(self.embed_tokens.weight, 1.0 / math.sqrt(d), self.core.init)
        self.lm_head = Linear(d, vocab_size, self.core.init, std=1.0 / math.sqrt(d))
        self.hparams["vocab_size"] = vocab_size

    def _configure_io(self) -> None:
        """Size the embedding and LM head from the datamodule's ``vocab_size`` when not given, or check it, and check
        the longest stored document against the core's positions (``configure_model`` in :class:`Task`)."""
        dm = self._datamodule()
        data_vocab = getattr(dm, "vocab_size", None)
        if self.hparams.pad_id is None:
            self.hparams["pad_id"] = int(getattr(dm, "pad_id", 0))
            if self.embed_tokens is not None and not 0 <= self.hparams.pad_id < self.hparams.vocab_size:
                raise ValueError(f"TextTask.pad_id: the datamodule's pad_id {self.hparams.pad_id} is outside the "
                                 f"vocabulary [0, {self.hparams.vocab_size})")
        if self.embed_tokens is None:
            if data_vocab is None:
                raise ValueError("TextTask was built without vocab_size and the datamodule has no vocab_size to read "
                                 "it from; pass model.init_args.vocab_size explicitly")
            self._build_io(data_vocab)
        elif data_vocab is not None and int(data_vocab) > self.hparams.vocab_size:
            raise ValueError(f"TextTask.vocab_size={self.hparams.vocab_size} but the datamodule's tokenizer has "
                             f"{data_vocab} tokens; leave vocab_size unset to take it from the data")
        self._check_core_length(getattr(dm, "longest_sample", None), getattr(dm, "data_dir", "the dataset"))

    def _check_core_length(self, longest: int | None, where: str) -> None:
        """Refuse, before any step, a dataset whose longest document has more tokens than the core's RoPE table
        holds positions (it would otherwise stop mid-run, at the first batch that holds that document)."""
        rope = getattr(self.core, "rope", None)
        if longest is not None and rope is not None and int(longest) > rope.max_seq_len:
            raise HrmkitInputError(f"{where}: the longest stored document has {int(longest)} tokens but the core's "
                                   f"max_seq_len is {rope.max_seq_len} (its RoPE table holds positions "
                                   f"0..{rope.max_seq_len - 1}); set model.init_args.core.init_args.max_seq_len >= "
                                   f"{int(longest)} or rebuild the dataset with --max_len {rope.max_seq_len}")

    # -- model ----------------------------------------------------------------------------------------------------
    def embed(self, input_ids: Tensor) -> Tensor:
        """Scaled token embeddings ``[B, T, d]`` (the HRM-Text core's initial z_H)."""
        return self.embed_tokens(input_ids) * self.embed_scale

    def hidden(self, input_ids: Tensor, attn: AttnSpec, cache: KVCache | None = None,
               targets: Tensor | None = None) -> Tensor:
        """The core's output ``[B, T, d]`` for ``input_ids`` (one full pass of the schedule from a fresh state)."""
        x = self.embed(input_ids)
        _, out = self.core(x, self.core.initial_state(x), attn, cache, targets=targets)
        return out

    def forward(self, input_ids: Tensor, attn: AttnSpec, cache: KVCache | None = None,
                targets: Tensor | None = None) -> Tensor:
        """Logits ``[B, T, V]`` at every position (in the compute dtype; the loss casts to fp32).

        ``cache`` makes this a generation step: the KV entries of every (module call, layer) grow by ``T``.
        ``targets`` (training only) is :meth:`embed_targets` for cores that declare ``uses_targets``.
        """
        return self.lm_head(self.hidden(input_ids, attn, cache, targets))

    def embed_targets(self, labels: Tensor) -> Tensor:
        """Each position's next-token label embedded like an input (unsupervised positions as ``pad_id``): the
        teacher signal a core with ``uses_targets`` reads in training (e.g. an amortised posterior)."""
        return self.embed(torch.where(labels == IGNORE, self.hparams.pad_id or 0, labels))

    # -- batch plumbing -------------------------------------------------------------------------------------------
    @staticmethod
    def check_batch(batch: dict[str, Any]) -> None:
        """Shape checks only (no device syncs), so a wrong datamodule fails with the field named."""
        missing = [k for k in _BATCH_KEYS if k not in batch]
        if missing:
            raise KeyError(f"TextTask batch is missing {missing}; it needs {list(_BATCH_KEYS)} (+ num_samples)")
        ids = batch["input_ids"]
        if ids.dim() != 2 or ids.shape[0] != 1:
            raise ValueError(f"TextTask batch 'input_ids' must be one packed row [1, T], got {tuple(ids.shape)}")
        for key in ("labels", "position_ids"):
            if tuple(batch[key].shape) != tuple(ids.shape):
                raise ValueError(f"TextTask batch '{key}' has shape {tuple(batch[key].shape)}, expected "
                                 f"{tuple(ids.shape)} like 'input_ids'")
        cu, pre = batch["cu_seqlens"], batch["prefix_lens"]
        if cu.dim() != 1 or pre.dim() != 1 or cu.numel() != pre.numel() + 1:
            raise ValueError(f"TextTask batch 'cu_seqlens' {tuple(cu.shape)} must be [n+1] for 'prefix_lens' "
                             f"{tuple(pre.shape)} = [n]")

    def attn_spec(self, batch: dict[str, Any]) -> AttnSpec:
        """PrefixLM (or causal) over the packed documents, positions restarting per sample.

        When the core's attention may run a block-diagonal backend (``varlen``, ``xformers``), the varlen plan is
        built here, once per batch and outside the (possibly compiled) core: it reads document lengths on the host.
        """
        if self.hparams.attention == "prefixlm":
            spec = AttnSpec("prefixlm", batch["cu_seqlens"], batch["prefix_lens"], batch["position_ids"])
        else:
            spec = AttnSpec("causal", batch["cu_seqlens"], position_ids=batch["position_ids"])
        ids = batch["input_ids"]
        if plan_wanted(self.core, spec, ids.device.type, ids.shape[1]):
            spec = with_plan(spec, ids.shape[0], ids.shape[1], ids.device)
        return spec

    @staticmethod
    def document_ids(cu_seqlens: Tensor, seq_len: int) -> Tensor:
        """Document index ``[T]`` of every position of the packed row."""
        idx = torch.arange(seq_len, device=cu_seqlens.device)
        doc = torch.searchsorted(cu_seqlens[1:].contiguous().long(), idx, right=True)
        return doc.clamp(max=cu_seqlens.numel() - 2)

    def targets(self, batch: dict[str, Any]) -> Tensor:
        """Labels ``[1, T]`` of the configured objective."""
        if self.hparams.objective == "response":
            return batch["labels"]
        ids = batch["input_ids"]
        t = ids.shape[1]
        doc = self.document_ids(batch["cu_seqlens"], t)
        real = doc < _num_samples(batch)
        same = (doc[:-1] == doc[1:]) & real[:-1]
        labels = torch.full_like(ids, IGNORE)
        labels[0, :-1] = torch.where(same, ids[0, 1:], torch.full_like(ids[0, 1:], IGNORE))
        return labels

    # -- loss and metrics -----------------------------------------------------------------------------------------
    def _step(self, batch: dict[str, Any], metrics: bool = True) -> dict[str, Any]:
        """Summed CE and the token count (what the loss needs); with ``metrics`` also the accuracy sums."""
        self.check_batch(batch)
        labels = self.targets(batch)
        extra = {"targets": self.embed_targets(labels)} if self.training and self.core.uses_targets else {}
        logits = self(batch["input_ids"], self.attn_spec(batch), **extra).float()
        aux = dict(self.core.aux_losses)  # the core's own loss terms of this pass (e.g. a KL), already means
        flat = labels.reshape(-1)
        ce_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat, ignore_index=IGNORE, reduction="sum")
        with torch.no_grad():
            valid = flat != IGNORE
            count = valid.sum()
            if not metrics:
                return {"ce_sum": ce_sum, "count": count, "aux": aux}
            correct = valid & (logits.detach().reshape(-1, logits.shape[-1]).argmax(-1) == flat)
            cu = batch["cu_seqlens"]
            n_docs = cu.numel() - 1
            doc = self.document_ids(cu, flat.numel())
            supervised = torch.zeros(n_docs, dtype=torch.long, device=flat.device).index_add_(0, doc, valid.long())
            right = torch.zeros(n_docs, dtype=torch.long, device=flat.device).index_add_(0, doc, correct.long())
            counted = (torch.arange(n_docs, device=flat.device) < _num_samples(batch)) & (supervised > 0)
        return {"ce_sum": ce_sum, "count": count, "correct": correct.sum(),
                "exact": (counted & (right == supervised)).sum(), "samples": counted.sum(), "aux": aux}

    def _mean_over_ranks(self, value: Tensor) -> Tensor:
        trainer = self._trainer
        if trainer is None or trainer.world_size <= 1:
            return value
        return trainer.strategy.reduce(value, reduce_op="mean")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        logging = step_logging(self, batch_idx)  # metrics only on steps whose values somebody reads
        r = self._step(batch, metrics=logging == "all")
        # Σ CE / (mean over ranks of the local count): after DDP's gradient mean this is the global token mean.
        denom = self._mean_over_ranks(r["count"].float()).clamp_min(1.0)
        loss = r["ce_sum"] / denom
        for value in r["aux"].values():
            loss = loss + value.to(loss.dtype)
        if logging == "none":
            stash_late_row(self, {"train/loss": loss.detach()})
            return loss
        with torch.no_grad():
            # mean over ranks of Σ CE_r / mean count = the global token mean, whatever the world size
            self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, sync_dist=True)
            if logging != "all":
                return loss
            n = r["count"].clamp_min(1)
            self.log_dict({"train/token_acc": r["correct"].float() / n,
                           "train/exact_acc": r["exact"].float() / r["samples"].clamp_min(1),
                           "train/tokens": r["count"].float()}, on_step=True, on_epoch=False)
            self._log_aux(r["aux"])
        return loss

    headline_name = "val/loss"  # what :meth:`headline` scores (known on ranks that saw no validation batch)

    def headline(self, batch: dict[str, Any]) -> tuple[str, Tensor, Tensor]:
        """The headline validation metric on one batch as (name, sum, count), without touching metric state: the
        EMA callback scores the raw weights with it next to the EMA's ``val/loss``."""
        r = self._step(batch)
        return self.headline_name, r["ce_sum"].detach(), r["count"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        r = self._step(batch)
        self.val_loss.update(r["ce_sum"], r["count"])
        self.val_token_acc.update(r["correct"], r["count"])
        self.val_exact_acc.update(r["exact"], r["samples"])

    def on_validation_epoch_end(self) -> None:
        metrics = {"val/loss": self.val_loss, "val/token_acc": self.val_token_acc, "val/exact_acc": self.val_exact_acc}
        self.log_dict({name: m.compute().float() for name, m in metrics.items()}, prog_bar=True)
        for m in metrics.values():
            m.reset()

    test_step = validation_step
    on_test_epoch_end = on_validation_epoch_end

    # -- prediction -----------------------------------------------------------------------------------------------
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Greedy generations for a prompt batch (:class:`hrmkit.data.text.prompts.PromptLoader`): per prompt the
        generated ids (ending at a stop id, which is kept, or at the budget) next to its index, prompt and the
        stored reference response."""
        from hrmkit.generate import generate

        missing = [k for k in ("prompt_ids", "max_new_tokens") if k not in batch]
        if missing:
            raise KeyError(f"TextTask.predict_step needs a prompt batch with {missing} (TextDataModule's "
                           "predict_dataloader makes one; see hrmkit.data.text.prompts)")
        prompts, budgets = batch["prompt_ids"], _column(batch["max_new_tokens"], len(batch["prompt_ids"]))
        generated: list[list[int]] = [[] for _ in prompts]
        by_budget: dict[int, list[int]] = {}
        for i, budget in enumerate(budgets):
            by_budget.setdefault(int(budget), []).append(i)
        for budget, rows in by_budget.items():
            outs = generate(self, [prompts[i] for i in rows], budget, stop_ids=batch.get("stop_ids", ()))
            for i, out in zip(rows, outs):
                generated[i] = out
        out = {"prompt_ids": [list(map(int, p)) for p in prompts], "generated_ids": generated}
        if "index" in batch:
            out = {"index": batch["index"], **out}
        if "reference_ids" in batch:
            out["reference_ids"] = [list(map(int, r)) for r in batch["reference_ids"]]
        return out

    # -- summary --------------------------------------------------------------------------------------------------
    def flops_summary(self) -> str:
        """Training FLOPs per token (samples vary in length), App. A count: the core's forward over every call and
        backward over the calls inside the gradient horizon."""
        return (f"{format_flops(core_flops_per_token(self.core))} per token (App. A: embedding, LM head and "
                "attention scores not counted)")

    # -- optimisation ---------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        if hp.schedule == "constant":
            fn = partial(warmup_constant, warmup_steps=hp.warmup_steps)
        else:
            total = self._total_steps(float("inf"))
            if not math.isfinite(total):
                raise ValueError("TextTask(schedule='cosine') needs a finite trainer.max_steps or max_epochs to know "
                                 "where the cosine ends")
            fn = partial(warmup_cosine, warmup_steps=hp.warmup_steps, total_steps=max(1, int(total)),
                         min_ratio=hp.min_lr_ratio)
        return self._per_step(self._main_optimizer(), fn)


class SumRatio(Metric):
    """``Σ numerator / Σ denominator`` over an epoch, summed across ranks (token-weighted means; NaN when empty).

    Unlike ``MeanMetric`` it takes the two sums directly, so updating never needs a host sync to skip empty batches.
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("num", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("den", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, numerator: Tensor, denominator: Tensor) -> None:
        self.num += numerator.detach().to(torch.float64).sum()
        self.den += denominator.detach().to(torch.float64).sum()

    def compute(self) -> Tensor:
        return torch.where(self.den > 0, self.num / self.den.clamp_min(1e-300), torch.nan)


def _num_samples(batch: dict[str, Any]) -> int:
    """Real samples in the packed row (documents past them are the padding tail); default: every document."""
    n = batch.get("num_samples")
    return batch["cu_seqlens"].numel() - 1 if n is None else int(n)


def _column(value: Any, n: int) -> list[int]:
    """A per-prompt integer column given as a tensor, a list, or one number for every prompt."""
    if isinstance(value, Tensor):
        value = value.tolist()
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * n

"""PuzzleTask: HRM-Symbolic / TRM training on grid puzzles (Sudoku, Maze, ARC) with any registered core.

One training step is one ACT segment for every slot of the carry (see :mod:`hrmkit.tasks.act`): token embedding
plus a puzzle-embedding prefix, scaled by √d, one full pass of the core from the carried state, an LM head over the
grid positions and a halting head over the first prefix position. Every segment is supervised (deep supervision).
Evaluation runs a fixed number of segments (``eval_segments``, the test-time-scaling knob) and also reports what
the halting head would have answered had each sequence stopped when it first asked to.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrmkit.callbacks.summary import format_flops
from hrmkit.cores.base import RecursiveCore
from hrmkit.cores.flops import core_flops_per_token, core_forward_flops_per_token
from hrmkit.distributed import gather_per_rank, pick_rank
from hrmkit.dtypes import dtype_table
from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.init import trunc_normal_
from hrmkit.nn.linear import Linear
from hrmkit.nn.puzzle_embedding import PuzzleEmbedding
from hrmkit.optim import SparseSignSGD
from hrmkit.optim.schedules import warmup_cosine
from hrmkit.registry import TASKS
from hrmkit.tasks.act import ACTCarry, exploration_min_steps
from hrmkit.tasks.base import Task
from hrmkit.tasks.judges import Judge, judge_for
from hrmkit.tasks.losses import IGNORE, LossType, sequence_mean, token_loss
from hrmkit.tasks.metrics import TaggedMean
from hrmkit.tasks.step_logging import stash_late_row, step_logging
from hrmkit.tasks.voting import VOTE_RULES, VoteRule
from hrmkit.tasks.voting import vote as vote_samples

Halting = Literal["hrm", "trm", "none"]
_LOSS_DTYPES = dtype_table("float64", "float32")


@TASKS.register("PuzzleTask")
class PuzzleTask(Task):
    def __init__(self, core: RecursiveCore, vocab_size: int | None = None, seq_len: int | None = None,
                 num_puzzle_identifiers: int | None = None,
                 puzzle_emb_len: int = 1, puzzle_emb_ndim: int | None = None, halting: Halting = "hrm",
                 halt_max_steps: int = 16, halt_exploration_prob: float = 0.1, eval_segments: int | None = None,
                 num_samples: int = 1, vote: VoteRule = "answer",
                 loss: LossType = "stablemax", loss_dtype: Literal["float64", "float32"] = "float64",
                 lr: float = 1e-4, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.95),
                 puzzle_emb_lr: float = 1e-2, puzzle_emb_weight_decay: float = 0.1, warmup_steps: int = 2000,
                 lr_min_ratio: float = 1.0, num_tags: int = 8, tag_names: list[str] | None = None,
                 init_from: str | None = None, freeze: list[str] | None = None, reinit: list[str] | None = None,
                 init_strict: bool = True, compile: bool | dict[str, Any] = False) -> None:
        """
        Args:
            core: any registered core (YAML ``class_path`` + ``init_args``; a ``to_config()`` dict also works).
            vocab_size: token vocabulary (Sudoku 11, Maze 6, ARC 12). None: read from the datamodule's metadata
                when training starts (then stored in the checkpoint's hyper-parameters).
            seq_len: grid positions (Sudoku 81, Maze/ARC 900); None: from the datamodule.
            num_puzzle_identifiers: rows of the puzzle-embedding table (1 for Sudoku/Maze, ~1000 per ARC task);
                None: from the datamodule.
            puzzle_emb_len: prefix positions holding the puzzle embedding (HRM 1, TRM 16; 0 = none).
            puzzle_emb_ndim: puzzle-embedding width (default: the core's hidden size; 0 disables the table).
            halting: ``hrm`` (Q-learning with halt/continue heads and a bootstrapped target from a second no-grad
                pass), ``trm`` (halt head only, BCE to exact correctness), or ``none`` (always run halt_max_steps).
            halt_max_steps: M_max, segments before a sequence is forced to halt.
            halt_exploration_prob: ε: probability of drawing a random minimum segment count in training.
            eval_segments: segments run at evaluation (default halt_max_steps).
            num_samples: trajectories sampled per puzzle at evaluation (width scaling); > 1 needs a core whose
                forward is stochastic (``core.stochastic``). Their answers are voted; see :mod:`hrmkit.tasks.voting`.
            vote: ``answer`` (whole-answer majority, ties by mean q_halt) or ``position`` (per-position majority).
            loss: ``stablemax`` (reference default for small-sample runs) or ``softmax`` cross-entropy.
            loss_dtype: dtype of the token loss (float64 as the reference, float32 is faster).
            lr: AdamATan2 learning rate for all parameters.
            weight_decay: AdamATan2 decoupled weight decay.
            betas: AdamATan2 (β1, β2).
            puzzle_emb_lr: SignSGD learning rate of the puzzle-embedding table.
            puzzle_emb_weight_decay: SignSGD lazy decoupled weight decay.
            warmup_steps: linear warmup shared by both optimizers.
            lr_min_ratio: cosine floor after warmup (1.0 = constant, the reference default).
            num_tags: how many dataset tags (difficulty levels, sources) evaluation keeps apart.
            tag_names: names of those tags for logging (default: the datamodule's metadata, else numbers).
            init_from: start from a trained model's weights (not a resume: no optimizer or step state): a task
                checkpoint (.ckpt, puzzle or text) or an HF hrm_text directory. Its core is copied exactly (strict
                shape check, see :mod:`hrmkit.transfer`); embeddings and heads too when it is a PuzzleTask.
            freeze: parts to keep fixed: ``core``, a core part (``H``, ``L``, ``net``) or a task layer.
            reinit: task layers to keep freshly initialised although ``init_from`` has them (e.g. ``puzzle_emb``).
            init_strict: fail on any core mismatch (default); False copies what matches and reports the rest.
            compile: ``torch.compile`` the core (the recursive schedule) on any strategy, single device included:
                ``true`` with inductor's defaults, or a dict of ``torch.compile`` arguments (``mode``, ``backend``,
                ``fullgraph``, ``dynamic``). A strategy preset that compiles already wins (no double compile).
        """
        super().__init__()
        core = self._core_from(core)
        _check_settings(core, halting, halt_max_steps, num_samples, vote, loss_dtype)
        self.save_hyperparameters(ignore=["core"])
        self._adopt_core(core)
        d = core.hidden_size
        self.embed_scale = math.sqrt(d)
        ndim = d if puzzle_emb_ndim is None else puzzle_emb_ndim
        self.prefix_len = puzzle_emb_len if ndim > 0 else 0
        if ndim > self.prefix_len * d:
            raise ValueError(f"puzzle_emb_ndim={ndim} does not fit in puzzle_emb_len={puzzle_emb_len} positions of "
                             f"width {d}")
        self._puzzle_emb_ndim = ndim
        self.embed_tokens: nn.Embedding | None = None
        self.puzzle_emb: PuzzleEmbedding | None = None
        self.lm_head: Linear | None = None
        self.q_head = _halting_head(d)
        if None not in (vocab_size, seq_len, num_puzzle_identifiers):
            self._build_io(vocab_size, seq_len, num_puzzle_identifiers)

        self.eval_segments = eval_segments or halt_max_steps
        self.loss_dtype = _LOSS_DTYPES[loss_dtype]
        self.carry: ACTCarry | None = None
        self._act_rng: torch.Generator | None = None  # exploration draws; saved in checkpoints for exact resume
        self.last_act: dict[str, Tensor | None] = {}  # the last training step's halting decisions (ACT statistics)
        self._emb_opt: SparseSignSGD | None = None
        self._emb_sched: torch.optim.lr_scheduler.LambdaLR | None = None
        self._add_val_metrics(num_tags)

    def _add_val_metrics(self, num_tags: int) -> None:
        """Validation means kept apart per dataset tag (difficulty level, source)."""
        self.val_token_acc = TaggedMean(num_tags)
        self.val_exact_acc = TaggedMean(num_tags)
        self.val_exact_acc_halted = TaggedMean(num_tags)
        self.val_segments_halted = TaggedMean(num_tags)
        self.val_q_halt_acc = TaggedMean(num_tags)
        self.val_exact_acc_any = TaggedMean(num_tags)  # with num_samples > 1: some trajectory solved it
        self.val_exact_acc_single = TaggedMean(num_tags)  # with num_samples > 1: the first trajectory alone
        self.val_exact_acc_judge = TaggedMean(num_tags)  # datasets with a judge (maze): any correct answer counts

    def _build_io(self, vocab_size: int, seq_len: int, num_puzzle_identifiers: int) -> None:
        """Token embedding, puzzle-embedding table and LM head: the parts whose sizes come from the dataset."""
        self._check_core_length(seq_len + self.prefix_len)
        d = self.core.hidden_size
        self.embed_tokens = nn.Embedding(vocab_size, d)
        trunc_normal_(self.embed_tokens.weight, 1.0 / self.embed_scale, self.core.init)
        ndim = self._puzzle_emb_ndim
        self.puzzle_emb = PuzzleEmbedding(num_puzzle_identifiers, ndim) if ndim > 0 else None
        self.lm_head = Linear(d, vocab_size, self.core.init)
        self.hparams.update(vocab_size=vocab_size, seq_len=seq_len, num_puzzle_identifiers=num_puzzle_identifiers)

    def _configure_io(self) -> None:
        """Size the dataset-dependent layers from the datamodule's metadata (when not given), or check them."""
        dm = self._datamodule()
        meta = getattr(dm, "metadata", None)
        if meta is None:
            if self.embed_tokens is None:
                raise ValueError("PuzzleTask was built without vocab_size/seq_len/num_puzzle_identifiers and the "
                                 "datamodule has no puzzle metadata to read them from; pass them explicitly")
            return
        wanted = {"vocab_size": meta.vocab_size, "seq_len": meta.seq_len,
                  "num_puzzle_identifiers": meta.num_puzzle_identifiers}
        if self.embed_tokens is None:
            self._build_io(**wanted)
            return
        for key, value in wanted.items():
            if self.hparams[key] != value:
                raise ValueError(f"PuzzleTask.{key}={self.hparams[key]} but the dataset's metadata.json says {value}; "
                                 f"leave {key} unset to take it from the data")

    def _check_core_length(self, length: int) -> None:
        rope = getattr(self.core, "rope", None)
        if rope is not None and rope.max_seq_len < length:
            raise ValueError(f"the core's RoPE table holds {rope.max_seq_len} positions but puzzles need {length} "
                             f"(seq_len + puzzle prefix); set the core's max_seq_len >= {length}")
        for module in self.core.modules():
            if hasattr(module, "seq_len") and type(module).__name__ == "TokenMixer" and module.seq_len != length:
                raise ValueError(f"the core's token-mixing MLP was built for seq_len={module.seq_len}, but puzzles "
                                 f"need {length} positions (seq_len + puzzle prefix)")

    # -- model ----------------------------------------------------------------------------------------------------
    def embed(self, inputs: Tensor, puzzle_ids: Tensor) -> Tensor:
        """``√d · [puzzle prefix ; token embeddings]`` ``[B, P + L, d]``."""
        tokens = self.embed_tokens(inputs)
        if self.prefix_len:
            b, d = inputs.shape[0], self.core.hidden_size
            prefix = self.puzzle_emb(puzzle_ids).to(tokens.dtype)
            prefix = F.pad(prefix, (0, self.prefix_len * d - prefix.shape[-1])).view(b, self.prefix_len, d)
            tokens = torch.cat([prefix, tokens], dim=1)
        return tokens * self.embed_scale

    def heads(self, out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """LM logits over the grid, and (q_halt, q_continue) logits from the first position, all fp32."""
        logits = self.lm_head(out[:, self.prefix_len:]).float()
        q = self.q_head(out[:, 0].float())
        return logits, q[:, 0], q[:, 1]

    def segment(self, x: Tensor, state: dict[str, Tensor], targets: Tensor | None = None
                ) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
        state, out = self.core(x, state, AttnSpec("bidirectional"), targets=targets)
        return (state, *self.heads(out))

    def embed_targets(self, labels: Tensor) -> Tensor:
        """Labels embedded like inputs (ignored positions as token 0, a zero puzzle prefix): the teacher signal for
        cores that read ``ctx.targets`` in training (an amortised posterior)."""
        tokens = self.embed_tokens(torch.where(labels == IGNORE, 0, labels))
        return F.pad(tokens, (0, 0, self.prefix_len, 0)) * self.embed_scale

    @torch.no_grad()
    def predict(self, inputs: Tensor, puzzle_ids: Tensor | None = None,
                segments: int | None = None) -> tuple[Tensor, Tensor]:
        """Predicted grids ``[B, L]`` and the final segment's q_halt logits ``[B]`` after ``segments`` segments
        from a fresh state (default ``eval_segments``): what the reference evaluator records for voting."""
        if puzzle_ids is None:
            puzzle_ids = torch.zeros(inputs.shape[0], dtype=torch.long, device=inputs.device)
        x = self.embed(inputs, puzzle_ids)
        state = self.core.initial_state(x)
        for _ in range(segments or self.eval_segments):
            state, logits, q_halt, _ = self.segment(x, state)
        return logits.argmax(-1), q_halt

    def solve(self, inputs: Tensor, puzzle_ids: Tensor | None = None, segments: int | None = None) -> Tensor:
        """Predicted grids ``[B, L]`` after ``segments`` segments (default ``eval_segments``)."""
        return self.predict(inputs, puzzle_ids, segments)[0]

    # -- training -------------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One ACT segment for every carry slot: forward, then halting → losses → logging."""
        x, state, labels, targets = self._segment_inputs(batch)
        new_state, logits, q_halt, q_cont = self.segment(x, state, targets)
        aux_losses = dict(self.core.aux_losses)  # read before the bootstrap pass in _halting overwrites them
        new_state = {k: v.detach() for k, v in new_state.items()}  # gradients stop at the segment boundary
        steps, halted, target_q_cont = self._halting(x, new_state, targets, labels, q_halt, q_cont)
        loss, parts = self._losses(logits, labels, q_halt, q_cont, target_q_cont, aux_losses)
        self.carry.state, self.carry.steps, self.carry.halted = new_state, steps, halted
        self.last_act = {"steps": steps, "halted": halted, "q_halt": q_halt.detach(), "q_continue": q_cont.detach(),
                         "seq_correct": parts["seq_correct"], "target_q_continue": target_q_cont}
        self._log_training_step(loss, parts, aux_losses, halted, steps, q_halt, batch_idx)
        return loss

    def _segment_inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor | None]:
        """Refill the halted carry slots from ``batch``; the embedded inputs, the carried state (fresh for refilled
        slots), the labels and, for cores that read them, the embedded targets."""
        batch = {k: v for k, v in batch.items() if k in ("inputs", "labels", "puzzle_identifiers", "tag", "valid")}
        if self.carry is None or self.carry.halted.shape[0] != batch["inputs"].shape[0]:
            self.carry = ACTCarry.empty(batch)  # starts all-halted, so the refill below takes the whole batch
        carry = self.carry
        carry.refill(batch)  # only halted slots take a new puzzle; busy ones keep theirs (and their step count)
        data = carry.data
        x = self.embed(data["inputs"], data["puzzle_identifiers"])
        state = carry.reset_state(self.core.initial_state(x))  # refilled slots restart from the initial state
        labels = data["labels"]
        targets = self.embed_targets(labels) if self.core.uses_targets else None
        return x, state, labels, targets

    @torch.no_grad()
    def _halting(self, x: Tensor, new_state: dict[str, Tensor], targets: Tensor | None, labels: Tensor,
                 q_halt: Tensor, q_cont: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Which slots halt after this segment, and HRM's Q-continue target: (steps, halted, target_q_cont)."""
        hp = self.hparams
        steps = self.carry.steps + 1
        is_last = steps >= hp.halt_max_steps
        halted = is_last
        if hp.halting != "none" and hp.halt_max_steps > 1:
            wants_halt = q_halt > q_cont if hp.halting == "hrm" else q_halt > 0
            # exploration: with prob. ε a slot must run a random minimum number of segments before it may halt
            min_steps = exploration_min_steps(labels.shape[0], hp.halt_exploration_prob, hp.halt_max_steps,
                                              torch.device("cpu"), self._exploration_rng()).to(labels.device)
            halted = (is_last | wants_halt) & (steps >= min_steps)
        target_q_cont = None
        if hp.halting == "hrm" and hp.halt_max_steps > 1:
            # Q-learning bootstrap: the value of continuing is the next segment's best Q (only halting at the last)
            _, _, next_halt, next_cont = self.segment(x, new_state, targets)
            target_q_cont = torch.sigmoid(torch.where(is_last, next_halt, torch.maximum(next_halt, next_cont)))
        return steps, halted, target_q_cont

    def _losses(self, logits: Tensor, labels: Tensor, q_halt: Tensor, q_cont: Tensor, target_q_cont: Tensor | None,
                aux_losses: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The step's loss (LM + ½ halt BCE + ½ continue BCE, per sequence, plus the core's own terms) and its
        parts for logging: lm_loss, q_halt_loss (sums over the batch), counts, correct and seq_correct."""
        hp = self.hparams
        per_token = token_loss(hp.loss, logits, labels, self.loss_dtype)
        lm_loss = sequence_mean(per_token, labels).sum()
        with torch.no_grad():
            mask = labels != IGNORE
            counts = mask.sum(-1)
            correct = mask & (logits.argmax(-1) == labels)
            seq_correct = correct.sum(-1) == counts
        # the halt head learns to predict whether the current answer is already exactly right
        q_halt_loss = F.binary_cross_entropy_with_logits(q_halt, seq_correct.to(q_halt.dtype), reduction="sum")
        total = lm_loss + 0.5 * q_halt_loss.to(lm_loss.dtype)
        if target_q_cont is not None:
            q_cont_loss = F.binary_cross_entropy_with_logits(q_cont, target_q_cont, reduction="sum")
            total = total + 0.5 * q_cont_loss.to(lm_loss.dtype)
        # DDP averages over ranks: the gradient is "sum over global batch / global batch"
        loss = total / labels.shape[0]
        for value in aux_losses.values():  # the core's own terms (e.g. a KL), already batch means
            loss = loss + value.to(loss.dtype)
        return loss, {"lm_loss": lm_loss, "q_halt_loss": q_halt_loss, "counts": counts, "correct": correct,
                      "seq_correct": seq_correct}

    @torch.no_grad()
    def _log_training_step(self, loss: Tensor, parts: dict[str, Tensor], aux_losses: dict[str, Tensor],
                           halted: Tensor, steps: Tensor, q_halt: Tensor, batch_idx: int) -> None:
        """Accumulate the halted-only metrics every step; log the step's row only when somebody reads it."""
        logging = step_logging(self, batch_idx)
        counts, seq_correct = parts["counts"], parts["seq_correct"]
        b = counts.shape[0]
        done = halted & (counts > 0)
        # every step: the halted-only metrics average over all sequences halted since the last logged row
        self._accumulate_halted(done, parts["correct"].sum(-1).float() / counts.clamp_min(1), seq_correct,
                                (q_halt >= 0) == seq_correct, steps)
        row = {"train/loss": loss.detach().float(), "train/lm_loss": (parts["lm_loss"].detach() / b).float(),
               "train/q_halt_loss": parts["q_halt_loss"].detach() / b, "train/halted_frac": done.float().mean()}
        if logging != "all":
            stash_late_row(self, row)
            return
        self.log_dict(row, prog_bar=False, on_step=True, on_epoch=False)
        self._log_aux(aux_losses)

    def _accumulate_halted(self, done: Tensor, token_acc: Tensor, exact: Tensor, q_halt_correct: Tensor,
                           steps: Tensor) -> None:
        """Add this step's halted sequences to the sums behind the halted-only training metrics (no host sync)."""
        d = done.float()
        step_sums = torch.stack([d.sum(), (token_acc * d).sum(), (exact.float() * d).sum(),
                                 (q_halt_correct.float() * d).sum(), (steps.float() * d).sum()])
        sums = getattr(self, "_halted_sums", None)
        self._halted_sums = step_sums if sums is None or sums.device != step_sums.device else sums + step_sums

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """On the steps the trainer writes a row: accuracy, halting accuracy and segments of the sequences that
        halted since the last row. A row with no halted sequence leaves them out rather than logging a false 0
        (runs the Timer stops mid-interval, early steps before any sequence halts)."""
        super().on_train_batch_end(outputs, batch, batch_idx)
        sums = getattr(self, "_halted_sums", None)
        # Lightning's own "this step writes a row" test (log_every_n_steps, or should_stop set by a callback such as
        # the Timer before this hook runs); there is no public equivalent in lightning 2.6.
        if sums is None or not self.trainer._logger_connector.should_update_logs:
            return
        self._halted_sums = None
        count = float(sums[0])  # the one host sync, on logging steps only
        if count == 0:
            return
        means = sums[1:] / count
        self.log_dict({"train/token_acc": means[0], "train/exact_acc": means[1], "train/q_halt_acc": means[2],
                       "train/segments": means[3]}, prog_bar=False, on_step=True, on_epoch=False)
        self.log("train/exact", means[1], prog_bar=True, on_step=True, on_epoch=False)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Step the sparse puzzle-embedding optimizer with the same gradients the main optimizer is about to use."""
        if self._emb_opt is not None:
            self._emb_opt.step()
            self._emb_opt.zero_grad()
            self._emb_sched.step()

    def on_train_start(self) -> None:
        accumulate = getattr(self.trainer, "accumulate_grad_batches", 1)
        if self.puzzle_emb is not None and accumulate > 1:
            raise ValueError("PuzzleTask does not support accumulate_grad_batches > 1 with puzzle embeddings: each "
                             "micro-batch makes a new local embedding copy; raise the batch size instead")

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        total = self._total_steps(1)
        if not math.isfinite(total):  # a time budget only (max_steps=-1): the cosine needs a known length
            if hp.lr_min_ratio != 1.0:
                raise ValueError("lr_min_ratio < 1 (cosine decay) needs a finite trainer.max_steps")
            total = 1
        total = max(1, int(total))
        schedule = lambda step: warmup_cosine(step, hp.warmup_steps, total, hp.lr_min_ratio)  # noqa: E731
        main = self._main_optimizer()
        if self.puzzle_emb is not None:
            self._emb_opt = SparseSignSGD([self.puzzle_emb], lr=hp.puzzle_emb_lr,
                                          weight_decay=hp.puzzle_emb_weight_decay)
            self._emb_sched = torch.optim.lr_scheduler.LambdaLR(self._emb_opt, schedule)
        return self._per_step(main, schedule)

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers this task steps itself, beside Lightning's (for ``hrmkit.callbacks.LearningRates``)."""
        return {} if self._emb_opt is None else {"puzzle_emb": self._emb_opt}

    def _exploration_rng(self) -> torch.Generator:
        """The task's own (CPU) generator for ACT exploration, seeded once from the global one: unlike the global
        generator it is not advanced by dataloader iterators, so a resumed run redraws exactly the same numbers."""
        if self._act_rng is None:
            self._act_rng = torch.Generator()
            self._act_rng.manual_seed(int(torch.randint(0, 2**62, ()).item()))
        return self._act_rng

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._emb_opt is not None:
            checkpoint["puzzle_emb_optimizer"] = self._emb_opt.state_dict()
            checkpoint["puzzle_emb_scheduler"] = self._emb_sched.state_dict()
        # per process (each rank has its own slots and exploration stream); gathered, so collective under DDP/FSDP
        carry = None if self.carry is None else self.carry.to(torch.device("cpu")).state_dict()
        rng = None if self._act_rng is None else self._act_rng.get_state()
        checkpoint["act_carry"] = gather_per_rank(carry)
        checkpoint["act_rng"] = gather_per_rank(rng)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._pending_emb_state = (checkpoint.get("puzzle_emb_optimizer"), checkpoint.get("puzzle_emb_scheduler"))
        # absent in checkpoints written before the carry was saved: those start every slot fresh, silently
        carry = pick_rank(checkpoint["act_carry"], "act_carry") if "act_carry" in checkpoint else None
        self.carry = ACTCarry.from_state_dict(carry, "checkpoint field 'act_carry'") if carry is not None else None
        rng = pick_rank(checkpoint["act_rng"], "act_rng") if "act_rng" in checkpoint else None
        if rng is not None:
            self._act_rng = torch.Generator()
            self._act_rng.set_state(rng)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        pending = getattr(self, "_pending_emb_state", None)
        if pending and pending[0] is not None and self._emb_opt is not None:
            self._emb_opt.load_state_dict(pending[0])
            self._emb_sched.load_state_dict(pending[1])
        self._pending_emb_state = None
        if self.carry is not None:
            self.carry = self.carry.to(self.device)

    # -- evaluation -----------------------------------------------------------------------------------------------
    def _evaluate(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Run ``eval_segments`` segments from a fresh state; also keep each sequence's answer at its first halt.
        With ``num_samples`` N > 1, N trajectories run per puzzle and their answers are voted."""
        hp = self.hparams
        inputs, labels = batch["inputs"], batch["labels"]
        x = self.embed(inputs, batch["puzzle_identifiers"])
        if hp.num_samples > 1:  # sample-major rows: row s·B + j is trajectory s of puzzle j
            x = x.repeat(hp.num_samples, 1, 1)
        state = self.core.initial_state(x)
        b = x.shape[0]
        halted_at = torch.full((b,), self.eval_segments, dtype=torch.long, device=inputs.device)
        halted_pred = None
        for seg in range(1, self.eval_segments + 1):
            state, logits, q_halt, q_cont = self.segment(x, state)
            pred = logits.argmax(-1)
            if halted_pred is None:
                halted_pred = pred.clone()
            if hp.halting != "none":
                wants = (q_halt > q_cont) if hp.halting == "hrm" else (q_halt > 0)
                first = wants & (halted_at == self.eval_segments) & (seg < self.eval_segments)
                halted_at = torch.where(first, torch.full_like(halted_at, seg), halted_at)
                halted_pred = torch.where((halted_at >= seg).unsqueeze(-1), pred, halted_pred)
            else:
                halted_pred = pred
        samples = None
        if hp.num_samples > 1:
            samples, q_all = pred.view(hp.num_samples, *labels.shape), q_halt.view(hp.num_samples, -1)
            pred = vote_samples(samples, q_all, hp.vote)
            halted_pred = vote_samples(halted_pred.view_as(samples), q_all, hp.vote)
            halted_at, q_halt = halted_at.view_as(q_all).float().mean(0), q_all.mean(0)
        mask = labels != IGNORE
        counts = mask.sum(-1)
        correct = mask & (pred == labels)
        seq_correct = (correct.sum(-1) == counts) & (counts > 0)
        halted_correct = ((mask & (halted_pred == labels)).sum(-1) == counts) & (counts > 0)
        result = {"pred": pred, "pred_halted": halted_pred,
                  "token_acc": correct.sum(-1).float() / counts.clamp_min(1), "exact": seq_correct,
                  "exact_halted": halted_correct, "segments_halted": halted_at, "q_halt": q_halt,
                  "q_halt_correct": (q_halt >= 0) == seq_correct}
        if samples is not None:
            each = ((mask & (samples == labels)).sum(-1) == counts) & (counts > 0)  # [N, B]
            result.update(samples=samples, exact_any=each.any(0), exact_single=each[0])
        return result

    headline_name = "val/exact_acc"  # what :meth:`headline` scores (known on ranks that saw no validation batch)

    def headline(self, batch: dict[str, Tensor]) -> tuple[str, Tensor, Tensor]:
        """The headline validation metric on one batch as (name, sum, count), without touching metric state: the
        EMA callback scores the raw weights with it next to the EMA's ``val/exact_acc``."""
        r = self._evaluate(batch)
        valid = batch.get("valid", torch.ones_like(r["exact"])).bool()
        return self.headline_name, (r["exact"] & valid).sum(), valid.sum()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        r = self._evaluate(batch)
        valid = batch.get("valid", torch.ones_like(r["exact"]))
        tag = batch.get("tag")
        self.val_token_acc.update(r["token_acc"], valid, tag)
        self.val_exact_acc.update(r["exact"], valid, tag)
        self.val_exact_acc_halted.update(r["exact_halted"], valid, tag)
        self.val_segments_halted.update(r["segments_halted"], valid, tag)
        self.val_q_halt_acc.update(r["q_halt_correct"], valid, tag)
        if "samples" in r:
            self.val_exact_acc_any.update(r["exact_any"], valid, tag)
            self.val_exact_acc_single.update(r["exact_single"], valid, tag)
        judged = self._judged(batch["inputs"], r["pred"])
        if judged is not None:
            self.val_exact_acc_judge.update(judged, valid, tag)

    def on_validation_epoch_end(self) -> None:
        metrics = {"val/exact_acc": self.val_exact_acc, "val/token_acc": self.val_token_acc,
                   "val/exact_acc_halted": self.val_exact_acc_halted,
                   "val/segments_halted": self.val_segments_halted, "val/q_halt_acc": self.val_q_halt_acc}
        if self.hparams.num_samples > 1:
            metrics.update({"val/exact_acc_any": self.val_exact_acc_any,
                            "val/exact_acc_single": self.val_exact_acc_single})
        if self._judge() is not None:
            metrics["val/exact_acc_judge"] = self.val_exact_acc_judge
        values = {name: m.compute() for name, m in metrics.items()}
        per_tag = self.val_exact_acc.per_tag()
        names = self._tag_names()
        for i, v in enumerate(per_tag.tolist()):
            if not math.isnan(v):
                values[f"val/exact_acc_by_tag/{names[i] if i < len(names) else i}"] = torch.tensor(v)
        self.log_dict({k: v.float() for k, v in values.items()}, prog_bar=False)
        self.log("val/exact", values["val/exact_acc"].float(), prog_bar=True)
        for m in metrics.values():
            m.reset()

    def _tag_names(self) -> list[str]:
        if self.hparams.tag_names:
            return list(self.hparams.tag_names)
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        meta = getattr(dm, "metadata", None)
        return list(getattr(meta, "tag_names", None) or [])

    test_step = validation_step
    on_test_epoch_end = on_validation_epoch_end

    # -- judge and prediction -------------------------------------------------------------------------------------
    def _judge(self) -> Judge | None:
        """The dataset's answer judge (``metadata.task``, see :mod:`hrmkit.tasks.judges`), or None."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        return judge_for(getattr(getattr(dm, "metadata", None), "task", None))

    def _judged(self, inputs: Tensor, pred: Tensor) -> Tensor | None:
        """The judge's verdict ``[B]`` on each predicted grid, or None when the dataset has no judge."""
        judge = self._judge()
        if judge is None:
            return None
        verdict = judge(inputs.detach().cpu().numpy(), pred.detach().cpu().numpy())
        return torch.from_numpy(verdict).to(pred.device)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """Per example: the predicted grid after ``eval_segments``, the grid at the first segment the halting head
        asked to stop (``halted_segment``) and that segment's prediction, the final q_halt logit, exactness
        against the label, and the judge's verdict where the dataset has one (maze: any shortest path)."""
        if "labels" not in batch:
            batch = {**batch, "labels": torch.full_like(batch["inputs"], IGNORE)}
        if "puzzle_identifiers" not in batch:
            batch = {**batch, "puzzle_identifiers": torch.zeros_like(batch["inputs"][:, 0])}
        r = self._evaluate(batch)
        tag = batch.get("tag", torch.zeros_like(batch["puzzle_identifiers"]))
        out = {"inputs": batch["inputs"], "labels": batch["labels"], "pred": r["pred"],
               "halted_segment": r["segments_halted"], "pred_halted": r["pred_halted"], "q_halt": r["q_halt"],
               "exact": r["exact"], "puzzle_identifier": batch["puzzle_identifiers"], "tag": tag}
        judged = self._judged(batch["inputs"], r["pred"])
        if judged is not None:
            out["judge"] = judged
        if "valid" in batch:
            out["valid"] = batch["valid"]
        return out

    # -- summary --------------------------------------------------------------------------------------------------
    def flops_summary(self) -> str | None:
        """Training FLOPs per sample of one step (one ACT segment), App. A count: the core's forward and backward
        over the grid and prefix positions, plus the no-grad bootstrap pass of ``halting="hrm"``."""
        if self.hparams.get("seq_len") is None:
            return None
        tokens = self.hparams.seq_len + self.prefix_len
        per_token = core_flops_per_token(self.core)
        bootstrap = self.hparams.halting == "hrm" and self.hparams.halt_max_steps > 1
        if bootstrap:
            per_token += core_forward_flops_per_token(self.core)
        note = " incl. the Q-target pass" if bootstrap else ""
        return (f"{format_flops(per_token * tokens)} per sample per segment ({tokens} positions{note}; App. A: "
                "heads and attention scores not counted)")


def _check_settings(core: RecursiveCore, halting: str, halt_max_steps: int, num_samples: int, vote: str,
                    loss_dtype: str) -> None:
    """Refuse PuzzleTask settings that cannot work, naming the argument."""
    if halting not in ("hrm", "trm", "none"):
        raise ValueError(f"halting must be 'hrm', 'trm' or 'none', got {halting!r}")
    if halt_max_steps < 1:
        raise ValueError(f"halt_max_steps must be >= 1, got {halt_max_steps}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if num_samples > 1 and not core.stochastic:
        raise ValueError(f"num_samples={num_samples} needs a stochastic core, but {type(core).__name__} is "
                         "deterministic (every trajectory would be identical); use num_samples=1")
    if vote not in VOTE_RULES:
        raise ValueError(f"vote must be one of {VOTE_RULES}, got {vote!r}")
    if loss_dtype not in _LOSS_DTYPES:
        raise ValueError(f"loss_dtype must be 'float64' or 'float32', got {loss_dtype!r}")


def _halting_head(d: int) -> nn.Linear:
    """The Q head (halt, continue) over the first prefix position, biased so nothing halts early at first."""
    head = nn.Linear(d, 2, bias=True)
    with torch.no_grad():  # Q values start near 0 and equal, so nothing halts early at initialisation
        head.weight.zero_()
        head.bias.fill_(-5.0)
    return head

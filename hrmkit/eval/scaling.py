"""Test-time compute curves of a puzzle model: accuracy against reasoning depth (segments) and width (samples).

One pass per batch: the model runs ``max(segments)`` segments on ``max(samples)`` trajectories per puzzle, and every
smaller setting is read on the way. Depth ``S`` is the answer after segment ``S`` (what ``eval_segments=S`` gives);
width ``N`` is the first ``N`` trajectories (what ``num_samples=N`` gives), voted by the task's rule. The halting
head's early-exit answer at depth ``S`` is the answer at the first segment before ``S`` whose halting logits asked to
stop (else the answer at ``S``), exactly as :meth:`PuzzleTask._evaluate` records it, so the numbers at the model's
own ``eval_segments`` equal ``hrmkit validate``'s.

For a deterministic core one pass equals separate runs at each depth. For a stochastic core the first ``N`` of
``N_max`` trajectories are a sample of ``N`` trajectories like any other, but not the same random draws as a
separate ``num_samples=N`` run.

Compute per setting and example: core passes (segments × samples), module calls, and App. A FLOPs
(:mod:`hrmkit.cores.flops`: ``2·N_call`` per token and module call; embeddings and heads not counted). Seconds are
the measured model time of the shared pass up to that depth (all widths of one pass share it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hrmkit.cores.flops import core_forward_flops_per_token
from hrmkit.eval.arc import ArcVoter
from hrmkit.tasks.judges import Judge, judge_for  # judge(inputs [B, L], preds [B, L]) -> bool [B]
from hrmkit.tasks.losses import IGNORE
from hrmkit.tasks.puzzle import PuzzleTask
from hrmkit.tasks.voting import VOTE_RULES, vote

DEFAULT_SEGMENTS: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
DEFAULT_SAMPLES: tuple[int, ...] = (1, 2, 4, 8, 16)
#: Per-example metrics of every setting, in table order (``*_any`` / ``*_single`` only with N > 1, ``judge_*`` only
#: with a judge).
METRICS: tuple[str, ...] = ("exact_acc", "token_acc", "exact_acc_halted", "segments_halted", "q_halt_acc",
                            "exact_acc_any", "exact_acc_single", "judge_acc", "judge_acc_halted")


def dataset_judge(task_name: str | None) -> Judge | None:
    """The answer judge of a dataset kind (``metadata.task``; maze: any shortest path, :mod:`hrmkit.tasks.judges`);
    None: answers are scored against the label only."""
    return judge_for(task_name)


@dataclass
class _Tally:
    """Per-tag sums and counts of each metric (float64, like :class:`hrmkit.tasks.metrics.TaggedMean`)."""

    num_tags: int
    total: dict[str, np.ndarray] = field(default_factory=dict)
    count: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, name: str, value: Tensor, valid: np.ndarray, tag: np.ndarray) -> None:
        v = value.detach().to(torch.float64).cpu().numpy().reshape(-1)
        if name not in self.total:
            self.total[name], self.count[name] = np.zeros(self.num_tags), np.zeros(self.num_tags)
        np.add.at(self.total[name], tag, np.where(valid, v, 0.0))
        np.add.at(self.count[name], tag, valid.astype(np.float64))

    def mean(self, name: str) -> float:
        return float(self.total[name].sum() / max(self.count[name].sum(), 1.0))

    def per_tag(self, name: str) -> list[float | None]:
        c = self.count[name]
        return [float(t / n) if n > 0 else None for t, n in zip(self.total[name], c)]


def parse_ints(value: int | str | Sequence[int] | None, name: str) -> list[int] | None:
    """``1,2,4`` / ``[1, 2, 4]`` / ``4`` → sorted distinct positive ints (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p for p in value.replace("[", "").replace("]", "").replace(" ", "").split(",") if p]
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"{name}: expected comma-separated positive integers such as 1,2,4, "
                             f"got {value!r}") from None
    elif isinstance(value, int):
        value = [value]
    out = sorted({int(v) for v in value})
    if not out or out[0] < 1:
        raise ValueError(f"{name}: expected positive integers, got {list(value)}")
    return out


def _wants_halt(halting: str, q_halt: Tensor, q_cont: Tensor) -> Tensor:
    if halting == "hrm":
        return q_halt > q_cont
    if halting == "trm":
        return q_halt > 0
    return torch.zeros_like(q_halt, dtype=torch.bool)


def _exact(pred: Tensor, labels: Tensor, mask: Tensor, counts: Tensor) -> Tensor:
    return ((mask & (pred == labels)).sum(-1) == counts) & (counts > 0)


class PuzzleScaling:
    """Accumulates every (segments, samples) setting of one model over evaluation batches (see the module doc)."""

    def __init__(self, task: PuzzleTask, segments: Sequence[int], samples: Sequence[int] = (1,),
                 num_tags: int = 1, vote_rule: str | None = None, judge: Judge | None = None,
                 arc_voter: ArcVoter | None = None) -> None:
        hp = task.hparams
        self.task, self.judge, self.arc = task, judge, arc_voter
        self.segments, self.samples = sorted(set(segments)), sorted(set(samples))
        if not self.segments or self.segments[0] < 1 or not self.samples or self.samples[0] < 1:
            raise ValueError(f"segments and samples must be positive integers, got {segments} and {samples}")
        if self.samples[-1] > 1 and not task.core.stochastic:
            raise ValueError(f"samples={self.samples} needs a stochastic core, but {type(task.core).__name__} is "
                             "deterministic (every trajectory would be identical); use samples 1")
        self.vote_rule = vote_rule or hp.vote
        if self.vote_rule not in VOTE_RULES:
            raise ValueError(f"vote must be one of {VOTE_RULES}, got {self.vote_rule!r}")
        self.halting = hp.halting
        self.tallies = {(s, n): _Tally(num_tags) for s in self.segments for n in self.samples}
        self.seconds = dict.fromkeys(self.segments, 0.0)
        self.examples = 0
        self.tokens_per_example = 0
        self.flops_per_token = core_forward_flops_per_token(task.core)
        self.calls_per_pass = task.core.num_calls
        self.num_tags = num_tags

    @torch.no_grad()
    def update(self, batch: dict[str, Tensor]) -> None:
        """Run one evaluation batch through the deepest and widest setting, recording every smaller one."""
        task = self.task
        inputs, labels = batch["inputs"], batch["labels"]
        b, n_max = inputs.shape[0], self.samples[-1]
        valid = batch.get("valid", torch.ones(b, dtype=torch.bool, device=inputs.device)).bool()
        tag = batch.get("tag", torch.zeros(b, dtype=torch.long, device=inputs.device))
        valid_np = valid.cpu().numpy()
        tag_np = tag.long().clamp(0, self.num_tags - 1).cpu().numpy()
        sync = torch.cuda.synchronize if inputs.is_cuda else (lambda: None)
        start = time.perf_counter()
        x = task.embed(inputs, batch["puzzle_identifiers"])
        if n_max > 1:  # sample-major rows, as PuzzleTask: row s·B + j is trajectory s of puzzle j
            x = x.repeat(n_max, 1, 1)
        state = task.core.initial_state(x)
        never = self.segments[-1] + 1
        first_seg = torch.full((x.shape[0],), never, dtype=torch.long, device=inputs.device)
        first_pred = None
        elapsed = 0.0
        for seg in range(1, self.segments[-1] + 1):
            state, logits, q_halt, q_cont = task.segment(x, state)
            pred = logits.argmax(-1)
            first = _wants_halt(self.halting, q_halt, q_cont) & (first_seg == never)
            first_seg = torch.where(first, torch.full_like(first_seg, seg), first_seg)
            first_pred = pred.clone() if first_pred is None else torch.where(first.unsqueeze(-1), pred, first_pred)
            if seg in self.seconds:
                sync()
                elapsed += time.perf_counter() - start
                self.seconds[seg] += elapsed
                self._record(seg, inputs, labels, pred, q_halt, first_seg, first_pred, batch, valid_np, tag_np)
                start = time.perf_counter()
        self.examples += int(valid_np.sum())
        self.tokens_per_example = x.shape[1]

    def _record(self, seg: int, inputs: Tensor, labels: Tensor, pred: Tensor, q_halt: Tensor, first_seg: Tensor,
                first_pred: Tensor, batch: dict[str, Tensor], valid: np.ndarray, tag: np.ndarray) -> None:
        """Metrics of every width at depth ``seg``: the answer after ``seg`` segments, and the early-exit answer
        (first halt before ``seg``, as an ``eval_segments=seg`` run records it)."""
        shape = (self.samples[-1], *labels.shape)
        halted_before = first_seg < seg
        halted_at = torch.where(halted_before, first_seg, torch.full_like(first_seg, seg))
        halted_pred = torch.where(halted_before.unsqueeze(-1), first_pred, pred)
        all_pred, all_halted = pred.view(shape), halted_pred.view(shape)
        all_q, all_at = q_halt.view(shape[:2]), halted_at.view(shape[:2])
        mask = labels != IGNORE
        counts = mask.sum(-1)
        judge = self._judge_fn(inputs)
        for n in self.samples:
            if n == 1:
                answer, early, q, at = all_pred[0], all_halted[0], all_q[0], all_at[0].float()
            else:
                answer = vote(all_pred[:n], all_q[:n], self.vote_rule)
                early = vote(all_halted[:n], all_q[:n], self.vote_rule)
                q, at = all_q[:n].mean(0), all_at[:n].float().mean(0)
            exact = _exact(answer, labels, mask, counts)
            t = self.tallies[(seg, n)]
            t.add("exact_acc", exact, valid, tag)
            t.add("token_acc", (mask & (answer == labels)).sum(-1).float() / counts.clamp_min(1), valid, tag)
            t.add("exact_acc_halted", _exact(early, labels, mask, counts), valid, tag)
            t.add("segments_halted", at, valid, tag)
            t.add("q_halt_acc", (q >= 0) == exact, valid, tag)
            if n > 1:
                each = torch.stack([_exact(all_pred[s], labels, mask, counts) for s in range(n)])
                t.add("exact_acc_any", each.any(0), valid, tag)
                t.add("exact_acc_single", each[0], valid, tag)
            if judge is not None:
                t.add("judge_acc", exact | judge(answer), valid, tag)
                t.add("judge_acc_halted", _exact(early, labels, mask, counts) | judge(early), valid, tag)
            if self.arc is not None:
                for s in range(n):
                    self._vote_arc(f"{seg}x{n}", batch, all_pred[s], all_q[s], valid)

    def _judge_fn(self, inputs: Tensor) -> Callable[[Tensor], Tensor] | None:
        if self.judge is None:
            return None
        q = inputs.detach().cpu().numpy()

        def judged(pred: Tensor) -> Tensor:
            verdict = np.asarray(self.judge(q, pred.detach().cpu().numpy()), dtype=bool).reshape(-1)
            if verdict.shape[0] != q.shape[0]:
                raise ValueError(f"the answer judge returned {verdict.shape[0]} verdicts for {q.shape[0]} answers")
            return torch.from_numpy(verdict).to(pred.device)

        return judged

    def _vote_arc(self, key: str, batch: dict[str, Tensor], pred: Tensor, q_halt: Tensor, valid: np.ndarray) -> None:
        self.arc.add_sequences(batch["puzzle_identifiers"].cpu().numpy()[valid], batch["inputs"].cpu().numpy()[valid],
                               pred.cpu().numpy()[valid], q_halt.float().cpu().numpy()[valid], checkpoint=key)

    def results(self, tag_names: Sequence[str]) -> list[dict[str, Any]]:
        """One row per (segments, samples): overall and per-tag metrics, compute spent, and ARC pass@K."""
        names = list(tag_names) or [str(i) for i in range(self.num_tags)]
        rows = []
        for (seg, n), tally in self.tallies.items():
            if not tally.total:
                continue
            metrics = [m for m in METRICS if m in tally.total]
            passes = seg * n
            row: dict[str, Any] = {"segments": seg, "samples": n}
            row.update({m: tally.mean(m) for m in metrics})
            row["per_tag"] = {names[i] if i < len(names) else str(i): {m: tally.per_tag(m)[i] for m in metrics}
                              for i in range(self.num_tags) if tally.count["exact_acc"][i] > 0}
            row.update(core_passes=passes, module_calls=passes * self.calls_per_pass,
                       flops_per_example=passes * self.tokens_per_example * self.flops_per_token,
                       flops=passes * self.tokens_per_example * self.flops_per_token * self.examples,
                       seconds=self.seconds[seg])
            if self.arc is not None:
                key = f"{seg}x{n}"
                row["pass_at_k"] = {s: {f"pass@{k}": v for k, v in self.arc.pass_at_k(s, key).items()}
                                    for s in ("task", "fraction")}
            rows.append(row)
        return rows

"""ACTStats: halting histograms and Q-halt accuracy from PuzzleTask.last_act, cross-checked against the raw values."""

from __future__ import annotations

from collections import Counter
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader

from hrmkit.callbacks import ACTStats
from hrmkit.callbacks.act_stats import act_metrics
from hrmkit.cores import build_core
from hrmkit.data import SyntheticDataModule
from hrmkit.tasks import SequenceTask
from hrmkit.tasks.puzzle import PuzzleTask

MAX_SEGMENTS = 3


class _HistLogger(Logger):
    """Records log_metrics calls; its experiment has TensorBoard's ``add_histogram``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []
        self.hists: list[tuple[str, Any, int, Any]] = []

    @property
    def name(self) -> str:
        return "hist"

    @property
    def version(self) -> int:
        return 0

    @property
    def experiment(self) -> _HistLogger:
        return self

    def add_histogram(self, tag: str, values: Any, global_step: int, bins: Any = None) -> None:
        self.hists.append((tag, values, global_step, bins))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


class _KeepAct(Callback):
    """Copies last_act after each batch (runs after ACTStats: same values it read)."""

    def __init__(self) -> None:
        self.acts: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.acts[trainer.global_step - 1] = {k: v.clone() for k, v in pl_module.last_act.items() if v is not None}


def _puzzle_loader(n: int = 64, b: int = 16, seq: int = 9, vocab: int = 5) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    rows = [{"inputs": torch.randint(1, vocab, (seq,), generator=g), "labels": torch.randint(1, vocab, (seq,),
             generator=g), "puzzle_identifiers": torch.tensor(0)} for _ in range(n)]
    return DataLoader(rows, batch_size=b, drop_last=True)


def _trainer(steps: int, callbacks: list[Callback], logger: Logger | bool = False) -> L.Trainer:
    return L.Trainer(max_steps=steps, accelerator="cpu", logger=logger, callbacks=callbacks, log_every_n_steps=1000,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, limit_val_batches=0)


def test_tiny_puzzle_run_logs_histograms_that_match_last_act(tmp_path):
    L.seed_everything(0)
    core = build_core("hrm", "tiny", hidden_size=16, num_heads=2, max_seq_len=16)
    task = PuzzleTask(core, vocab_size=5, seq_len=9, num_puzzle_identifiers=1, halting="trm",
                      halt_max_steps=MAX_SEGMENTS, halt_exploration_prob=0.5, puzzle_emb_ndim=0)
    with torch.no_grad():
        task.q_head.bias.copy_(torch.tensor([1.0, 0.0]))  # wants to halt: exploration decides 1, 2 or 3 segments
    logger, keep = _HistLogger(), _KeepAct()
    _trainer(6, [ACTStats(every_n_steps=2), keep], logger).fit(task, _puzzle_loader())

    rows = {step: m for step, m in logger.rows if "act/halted_frac" in m}
    assert sorted(rows) == [0, 2, 4]
    seen_segments: set[int] = set()
    for step, m in rows.items():
        act = keep.acts[step]
        halted_at = act["steps"][act["halted"]].tolist()
        assert m["act/halted_frac"] == pytest.approx(len(halted_at) / len(act["steps"]))
        if not halted_at:
            assert "act/mean_segments" not in m
            continue
        seen_segments |= set(halted_at)
        counts = Counter(halted_at)
        for k in range(1, MAX_SEGMENTS + 1):  # bins from hparams.halt_max_steps, zeros included
            assert m[f"act/halted_at/{k}"] == pytest.approx(counts[k] / len(halted_at))
        assert m["act/mean_segments"] == pytest.approx(sum(halted_at) / len(halted_at))
        agree = ((act["q_halt"] >= 0) == act["seq_correct"])[act["halted"]]
        assert m["act/q_halt_acc"] == pytest.approx(agree.float().mean().item())
    assert len(seen_segments) >= 2  # the histogram is not degenerate
    hist_steps = [step for tag, _, step, _ in logger.hists if tag == "act/halted_at"]
    assert hist_steps == [s for s in (0, 2, 4) if "act/mean_segments" in rows[s]]
    _, values, _, bins = logger.hists[-1]
    assert list(bins) == [0.5, 1.5, 2.5, 3.5] and set(values.tolist()) <= {1, 2, 3}


def test_module_without_last_act_is_a_no_op():
    logger, cb = _HistLogger(), ACTStats(every_n_steps=1)
    task = SequenceTask(build_core("hrm", "tiny", hidden_size=16, num_heads=2), vocab_size=8)
    data = SyntheticDataModule("reverse", seq_len=4, vocab_size=8, num_train=64, num_val=8, batch_size=8)
    _trainer(2, [cb], logger).fit(task, data)
    assert not any(k.startswith("act/") for _, m in logger.rows for k in m) and cb.last_metrics == {}


def test_act_metrics_by_hand():
    act = {"steps": torch.tensor([1, 2, 2, 4, 3]), "halted": torch.tensor([True, True, True, False, False]),
           "q_halt": torch.tensor([0.5, -1.0, 2.0, 0.0, 0.0]), "seq_correct": torch.tensor([True, True, False, 0, 0])}
    m, halted_at = act_metrics(act, max_segments=4)
    assert halted_at.tolist() == [1, 2, 2]
    assert m == pytest.approx({"act/halted_frac": 0.6, "act/halted_at/1": 1 / 3, "act/halted_at/2": 2 / 3,
                               "act/halted_at/3": 0.0, "act/halted_at/4": 0.0, "act/mean_segments": 5 / 3,
                               "act/q_halt_acc": 1 / 3})
    m, _ = act_metrics({"steps": torch.tensor([2]), "halted": torch.tensor([False])})
    assert m == {"act/halted_frac": 0.0}
    with pytest.raises(ValueError, match="one entry per sequence"):
        act_metrics({"steps": torch.tensor([1, 2]), "halted": torch.tensor([True])})

"""The tasks' plain ``compile`` option: the core compiles as one graph (fullgraph, sdpa) on a single device."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hrmkit.cores import build_core
from hrmkit.data.text.packing import pack_batch
from hrmkit.tasks import PuzzleTask, TextTask

# the "eager" dynamo backend traces exactly like inductor but skips code generation (fast on a CPU); fullgraph makes
# any graph break an error
OPTS = {"backend": "eager", "fullgraph": True}


def fit_two_steps(task: L.LightningModule, batches: list) -> L.Trainer:
    trainer = L.Trainer(max_steps=len(batches), accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(task, DataLoader(batches, batch_size=None))
    return trainer


def graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("kind", ["text", "puzzle"])
def test_compile_option_compiles_the_core_without_graph_breaks_and_matches_eager(kind):
    rng = np.random.default_rng(0)
    if kind == "text":
        batches = [pack_batch([(rng.integers(3, 40, 10).astype(np.int64), 4)] * 2, 32, pad_id=0) for _ in range(2)]

        def make(compile):
            torch.manual_seed(0)
            return TextTask(build_core("hrm", "text-tiny"), vocab_size=40, warmup_steps=1, compile=compile)
    else:
        batches = [{"inputs": torch.from_numpy(rng.integers(1, 5, (4, 9))),
                    "labels": torch.from_numpy(rng.integers(1, 5, (4, 9))),
                    "puzzle_identifiers": torch.zeros(4, dtype=torch.long)} for _ in range(2)]

        def make(compile):
            torch.manual_seed(0)
            return PuzzleTask(build_core("hrm", "tiny", max_seq_len=10), vocab_size=5, seq_len=9,
                              num_puzzle_identifiers=2, halt_max_steps=2, warmup_steps=1, compile=compile)

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = make(OPTS)
    fit_two_steps(compiled, batches)
    assert graphs() >= 1 and not torch._dynamo.utils.counters["graph_break"]
    eager = make(False)
    fit_two_steps(eager, batches)
    assert compiled.hparams.compile == OPTS and eager.hparams.compile is False
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q, p, atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")

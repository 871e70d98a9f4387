"""2-process DDP run over a TextDataModule with ``packing="multipack"`` for tests/test_text_data.py.

Run as a script (``python tests/_dist_multipack.py DATA_DIR OUT_DIR STEPS``) so Lightning's launcher re-executes this
file for rank 1 instead of forking pytest. Every rank writes the documents of each of its training batches to
``OUT_DIR/seen-rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch

from hrmkit.data.text import TextDataModule

BUDGET = 128


class Recorder(L.LightningModule):
    def __init__(self, out: Path) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.out = out
        self.seen: list[list[list[int]]] = []

    def training_step(self, batch, batch_idx):
        cu, ids = batch["cu_seqlens"].tolist(), batch["input_ids"][0].tolist()
        self.seen.append([ids[cu[k]:cu[k + 1]] for k in range(batch["num_samples"])])
        return (self.w * batch["input_ids"].float().mean()).sum()

    def on_train_end(self) -> None:
        (self.out / f"seen-rank{self.global_rank}.json").write_text(json.dumps(self.seen))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def main(data_dir: str, out: str, steps: str) -> None:
    torch.set_num_threads(1)
    dm = TextDataModule(data_dir, tokens_per_batch=BUDGET, seed=5, packing="multipack")
    L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=int(steps), logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              limit_val_batches=0).fit(Recorder(Path(out)), datamodule=dm)


if __name__ == "__main__":
    main(*sys.argv[1:])

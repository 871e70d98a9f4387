"""NonFiniteGuard: a NaN/Inf loss or gradient never reaches the weights; ``skip`` counts and goes on, ``stop`` ends
the run with a checkpoint of the last good state. MagicNormHealth shares the same detection."""

from __future__ import annotations

import math
import warnings

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hrmkit.callbacks import MagicNormHealth, NonFiniteGuard
from hrmkit.callbacks.common import is_finite, nonfinite_names
from hrmkit.callbacks.nonfinite import grads_finite
from hrmkit.checkpointing import load_checkpoint_file
from hrmkit.cores import build_core
from hrmkit.tasks import PuzzleTask

BAD_BATCH = 2  # the batch whose input holds a NaN


class Regression(L.LightningModule):
    """A linear regression trained with AdamW: small enough to follow every weight."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.weights: list[torch.Tensor] = []  # weights after each step

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.weights.append(self.net.weight.detach().clone())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.1)


def loader(bad: float = float("nan")) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 4, generator=g), torch.randn(6, 1, generator=g)
    x[BAD_BATCH, 0] = bad
    return DataLoader(TensorDataset(x, y), batch_size=1)


def fit(guard: NonFiniteGuard, tmp_path, bad: float = float("nan")) -> Regression:
    L.seed_everything(0)
    model = Regression()
    trainer = L.Trainer(max_steps=6, callbacks=[guard], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, loader(bad))
    return model


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_skip_drops_the_bad_update_counts_it_and_trains_on(bad, tmp_path):
    guard = NonFiniteGuard(policy="skip")
    model = fit(guard, tmp_path, bad)
    assert guard.skipped == 1 and guard.skipped_steps == [BAD_BATCH]
    assert len(model.weights) == 6
    assert torch.equal(model.weights[BAD_BATCH], model.weights[BAD_BATCH - 1])  # the bad step changed nothing
    assert not torch.equal(model.weights[-1], model.weights[BAD_BATCH])  # later steps trained
    assert all(torch.isfinite(w).all() for w in model.weights)


def test_stop_saves_the_last_good_state(tmp_path):
    guard = NonFiniteGuard(policy="stop")
    model = fit(guard, tmp_path)
    assert len(model.weights) == BAD_BATCH + 1  # stopped at the end of the bad step
    saved = load_checkpoint_file(guard.saved_checkpoint)
    assert guard.saved_checkpoint.name == f"nonfinite-step{BAD_BATCH}.ckpt"
    assert torch.equal(saved["state_dict"]["net.weight"], model.weights[BAD_BATCH - 1])
    state = next(v for k, v in saved["callbacks"].items() if k.startswith("NonFiniteGuard"))
    assert state["skipped"] == 1


def test_without_the_guard_the_weights_are_poisoned(tmp_path):
    """The failure the guard prevents (so the tests above can fail)."""
    L.seed_everything(0)
    model = Regression()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        L.Trainer(max_steps=6, logger=False, enable_progress_bar=False, enable_model_summary=False,
                  enable_checkpointing=False, default_root_dir=tmp_path, accelerator="cpu").fit(model, loader())
    assert not torch.isfinite(model.weights[-1]).all()


def test_one_detection_shared_with_magicnorm():
    assert is_finite(1.0) and is_finite(None) and is_finite(torch.tensor([1.0, 2.0]))
    assert not is_finite(math.nan) and not is_finite(-math.inf) and not is_finite(torch.tensor([1.0, math.inf]))
    assert nonfinite_names({"rms": 1.0, "max_abs": math.inf, "grad_norm": None, "x": math.nan}) == ["max_abs", "x"]
    p = nn.Parameter(torch.ones(3, dtype=torch.float16))
    p.grad = torch.tensor([1.0, 65504.0, 3.0], dtype=torch.float16)  # finite, though its norm overflows fp16
    assert grads_finite([p])
    p.grad[0] = math.nan
    assert not grads_finite([p])
    health = MagicNormHealth()
    health._step = 0
    problems = health._check_forward([("L0", 1.0, math.inf, None), ("L1", 1.0, 1.0, math.nan)])
    assert [(p.kind, p.call) for p in problems] == [("non-finite", "L0"), ("non-finite", "L1")]


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="policy"):
        NonFiniteGuard(policy="ignore")
    with pytest.raises(ValueError, match="max_consecutive"):
        NonFiniteGuard(max_consecutive=0)


@pytest.mark.parametrize("case", ["no-response-tokens", "all-padding"])
def test_degenerate_text_batches_give_a_finite_zero_loss(case):
    """A packed batch with nothing to supervise (1-token responses whose only label is masked, or a row that is all
    padding) trains without NaN: loss 0, ``train/tokens`` 0 in the logs."""
    from hrmkit.cores import build_core
    from hrmkit.tasks import TextTask

    task = TextTask(build_core("hrm", "text-tiny"), vocab_size=64, warmup_steps=1)
    t = 16
    ids = torch.randint(1, 64, (1, t)) if case == "no-response-tokens" else torch.zeros(1, t, dtype=torch.long)
    batch = {"input_ids": ids, "labels": torch.full((1, t), -100), "position_ids": torch.arange(t)[None] % 8,
             "cu_seqlens": torch.tensor([0, 8, 16], dtype=torch.int32), "prefix_lens": torch.tensor([7, 7]),
             "num_samples": 2 if case == "no-response-tokens" else 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a Trainer
        loss = task.training_step(batch, 0)
    loss.backward()
    assert loss.item() == 0.0 and task._step(batch)["count"].item() == 0  # what train/tokens logs
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in task.parameters())


@pytest.mark.parametrize("halting", ["hrm", "trm"])
def test_all_padding_puzzle_batches_train_without_non_finite_values(halting):
    """A batch with no supervised cell (all labels ignored) contributes a finite loss, never NaN."""
    torch.manual_seed(0)
    core = build_core("hrm", "tiny", max_seq_len=13)
    task = PuzzleTask(core, vocab_size=6, seq_len=12, num_puzzle_identifiers=4, halting=halting,
                      halt_max_steps=1, warmup_steps=1)  # every slot restarts each step: the pad batch is all of it
    good = {"inputs": torch.randint(1, 6, (4, 12)), "labels": torch.randint(1, 6, (4, 12)),
            "puzzle_identifiers": torch.zeros(4, dtype=torch.long)}
    pad = {"inputs": torch.zeros(4, 12, dtype=torch.long), "labels": torch.full((4, 12), -100),
           "puzzle_identifiers": torch.zeros(4, dtype=torch.long)}
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[Record()]).fit(task, DataLoader([good, pad, good, pad],
                                                                                     batch_size=None))
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses), losses
    assert all(torch.isfinite(p).all() for p in task.parameters())

"""EMA users can trust: the warm-up ramp, the warning when the average is still mostly the initial weights, the raw
headline metric next to the EMA's, and a tiny text run whose EMA evaluation beats its initial weights."""

from __future__ import annotations

import json
import warnings

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from hrmkit.callbacks import EMA
from hrmkit.optim import ParameterEMA
from hrmkit.optim.ema import ema_staleness

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated", "ignore:.*IterableDataset.*")


def test_warmup_ramps_the_decay_and_tracks_the_initial_share():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    ema = ParameterEMA(net, decay=0.999, warmup=True)
    expected = {k: v.detach().clone() for k, v in net.named_parameters()}
    share = 1.0
    for n in range(30):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        mu = min(0.999, (1 + n) / (10 + n))
        for k, p in net.named_parameters():
            expected[k] = mu * expected[k] + (1 - mu) * p.detach()
        share *= mu
        ema.update(net)
    for k, v in expected.items():
        torch.testing.assert_close(ema.shadow[k], v)
    assert ema.initial_share == pytest.approx(share) and share < 1e-3
    closed = ParameterEMA(net, decay=0.999)  # the references' form stays the default of the plain class
    closed.update(net)
    assert closed.initial_share == pytest.approx(0.999)


def test_staleness_message_names_steps_horizon_and_share():
    message = ema_staleness(0.9999, 300, 0.9999**300)
    assert "300 steps" in message and "10,000" in message and "97%" in message and "warmup" in message
    assert ema_staleness(0.9999, 300, 1e-4) is None  # warmed up: the average is the recent weights
    assert ema_staleness(0.9999, 0, 1.0) is None  # no update yet: the EMA equals the live weights


class _Regression(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.lin(x), y)

    def headline(self, batch):
        x, y = batch
        return "val/loss", ((self.lin(x) - y) ** 2).sum(), torch.tensor(y.numel())

    def validation_step(self, batch, batch_idx):
        name, total, count = self.headline(batch)
        self.log(name, total / count)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def _fit(tmp_path, ema: EMA) -> tuple[pl.Trainer, list[str]]:
    trainer = pl.Trainer(max_steps=16, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, val_check_interval=8,
                         default_root_dir=tmp_path, callbacks=[ema])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(_Regression(), _loader(), _loader())
        trainer.save_checkpoint(tmp_path / "x.ckpt")
    return trainer, [str(w.message) for w in caught if "EMA: averaged over" in str(w.message)]


def test_validation_and_checkpoint_warn_when_the_ema_is_still_the_initial_weights(tmp_path):
    trainer, messages = _fit(tmp_path, EMA(decay=0.9999, warmup=False))
    assert any(m.endswith("[validation]") for m in messages) and any(m.endswith("[checkpoint]") for m in messages)
    metrics = trainer.callback_metrics
    # the raw weights' headline metric is logged next to the EMA's, and the gap is plain to see
    assert "val/loss_raw" in metrics and metrics["val/loss_raw"] < 0.5 * metrics["val/loss"]

    _, messages = _fit(tmp_path / "warm", EMA(decay=0.9999))  # warm-up (the default): nothing to warn about
    assert messages == []


def test_export_warns_about_a_stale_ema_checkpoint(tmp_path):
    from hrmkit.commands.text import _ema_warning

    torch.save({"state_dict": {}, "ema": {"decay": 0.9999, "num_updates": 300, "saved": "ema", "other": {}}},
               tmp_path / "old.ckpt")  # written before warm-up existed: the share follows from the closed form
    assert "97%" in _ema_warning(str(tmp_path / "old.ckpt"))
    torch.save({"state_dict": {}, "ema": {"decay": 0.9999, "num_updates": 300, "saved": "ema", "other": {},
                                          "initial_share": 1e-5}}, tmp_path / "warm.ckpt")
    assert _ema_warning(str(tmp_path / "warm.ckpt")) is None


def test_tiny_text_run_evaluates_better_than_its_initial_weights(tmp_path):
    """The issue's case: HRM-Text tiny with the recipe's EMA decay 0.9999 (warm-up on) on a few dozen steps; the
    EMA weights that validation, checkpoints and export use must beat the initial weights clearly."""
    from hrmkit.cli import main
    from hrmkit.cores import build_core
    from hrmkit.data.text import TextDataModule
    from hrmkit.tasks.text import TextTask

    rows = [{"instruction": f"add {a} and {b}", "response": f"{a + b}", "condition": "direct"}
            for a in range(8) for b in range(8)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    main(["data", "text", "--out_dir", str(tmp_path / "data"), "--jsonl", f"[{tmp_path / 'train.jsonl'}]",
          "--val_fraction", "0.2", "--max_len", "64"])
    dm = TextDataModule(str(tmp_path / "data"), tokens_per_batch=256)
    pl.seed_everything(0)
    task = TextTask(build_core("hrm", "text-tiny"), vocab_size=dm.vocab_size, warmup_steps=2, lr=1e-3,
                    betas=(0.9, 0.95), weight_decay=0.1)

    def trainer(**kw) -> pl.Trainer:
        return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path, **kw)

    initial = trainer(limit_val_batches=2).validate(task, dm, verbose=False)[0]["val/loss"]
    ema = EMA(decay=0.9999)
    fit = trainer(max_steps=20, val_check_interval=20, check_val_every_n_epoch=None, limit_val_batches=2,
                  callbacks=[ema])
    fit.fit(task, dm)
    after = fit.callback_metrics["val/loss"].item()  # validation ran on the EMA weights
    print(f"val/loss initial {initial:.3f}, EMA after 20 steps {after:.3f}")
    assert ema.ema.num_updates == 20
    assert after < initial - 1.0, (initial, after)
    assert "val/loss_raw" in fit.callback_metrics

"""EMA callback: closed form under automatic and manual optimization, evaluation swap, checkpoints, exact resume."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hrmkit.callbacks import EMA
from hrmkit.nn.puzzle_embedding import PuzzleEmbedding
from hrmkit.optim import AdamATan2, ParameterEMA, SparseSignSGD, warmup_cosine_scheduler

pytestmark = pytest.mark.filterwarnings(
    "ignore:You defined a `validation_step` but have no `val_dataloader`",
    "ignore:.*LeafSpec.*is deprecated",
)
DECAY = 0.7
PARAM_NAMES = ["lin.weight", "lin.bias", "head.weight"]


class _Net(pl.LightningModule):
    """Tiny task: a puzzle-embedding buffer, a fixed z_init buffer, and (manual) AdamATan2 + SparseSignSGD."""

    def __init__(self, manual: bool = False) -> None:
        super().__init__()
        self.automatic_optimization = not manual
        self.lin = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2, bias=False)
        self.puzzle = PuzzleEmbedding(5, 3, init_std=0.1)
        self.register_buffer("z_init", torch.randn(3))
        self.history: list[dict[str, torch.Tensor]] = []  # raw parameters after every training step
        self.seen: dict[str, list[dict[str, torch.Tensor]]] = {"val": [], "test": [], "predict": []}
        self.save_during_validation: str | None = None

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.lin(x + self.puzzle(ids) + self.z_init)))

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def training_step(self, batch, batch_idx):
        x, ids, y = batch
        loss = F.mse_loss(self(x, ids), y)
        if self.automatic_optimization:
            return loss
        for opt in self.optimizers():
            opt.zero_grad()
        self.manual_backward(loss)
        for opt in self.optimizers():
            opt.step()
        for sched in self.lr_schedulers():
            sched.step()
        return None

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.history.append(self._snapshot())

    def validation_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.seen["val"].append(self._snapshot())
            if self.save_during_validation:
                self.trainer.save_checkpoint(self.save_during_validation)

    def test_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.seen["test"].append(self._snapshot())

    def predict_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.seen["predict"].append(self._snapshot())
        return batch_idx

    def configure_optimizers(self):
        adam = AdamATan2(self.parameters(), lr=5e-2, weight_decay=0.1)
        if self.automatic_optimization:
            return adam
        sign = SparseSignSGD(self.puzzle, lr=1e-2, weight_decay=0.1)
        return [adam, sign], [warmup_cosine_scheduler(o, warmup_steps=3, total_steps=12) for o in (adam, sign)]


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(3)
    data = TensorDataset(torch.randn(8, 3, generator=g), torch.randint(0, 5, (8,), generator=g),
                         torch.randn(8, 2, generator=g))
    return DataLoader(data, batch_size=2, shuffle=False)


def _trainer(tmp_path, callbacks, **kw) -> pl.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                    default_root_dir=tmp_path, log_every_n_steps=1, max_epochs=1, limit_val_batches=1)
    return pl.Trainer(callbacks=callbacks, **(defaults | kw))


def _closed_form(p0: dict[str, torch.Tensor], history: list[dict[str, torch.Tensor]], decay: float):
    """shadow_k = μ^k·p_0 + Σ_i (1 − μ)·μ^(k−i)·p_i, in float64."""
    k = len(history)
    out = {}
    for name in PARAM_NAMES:
        acc = decay**k * p0[name].double()
        for i, snap in enumerate(history, start=1):
            acc = acc + (1 - decay) * decay ** (k - i) * snap[name].double()
        out[name] = acc
    return out


def _assert_params(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], exact: bool = False):
    for name in PARAM_NAMES:
        if exact:
            assert torch.equal(actual[name], expected[name]), name
        else:
            torch.testing.assert_close(actual[name].double(), expected[name].double(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("manual", [False, True])
def test_ema_closed_form_once_per_training_step(tmp_path, manual):
    torch.manual_seed(0)
    model = _Net(manual)
    p0 = model._snapshot()
    ema = EMA(decay=DECAY, warmup=False)
    trainer = _trainer(tmp_path, [ema], max_epochs=2)
    trainer.fit(model, _loader())

    assert ema.ema.num_updates == len(model.history) == 8
    assert trainer.global_step == (16 if manual else 8)  # two optimizers step per batch under manual optimization
    assert set(ema.ema.shadow) == set(PARAM_NAMES)  # parameters only: no puzzle table, no z_init
    _assert_params(ema.ema.shadow, _closed_form(p0, model.history, DECAY))
    _assert_params(model._snapshot(), model.history[-1], exact=True)  # the live module keeps the raw weights
    if manual:
        assert not torch.equal(model.puzzle.weight, p0["puzzle.weight"])  # the sparse optimizer did train it


def test_evaluation_sees_ema_weights_and_training_continues_raw(tmp_path):
    torch.manual_seed(0)
    model = _Net(manual=True)
    p0 = model._snapshot()
    ema = EMA(decay=DECAY, warmup=False)
    trainer = _trainer(tmp_path, [ema], max_epochs=2, num_sanity_val_steps=1)
    trainer.fit(model, _loader(), _loader())

    sanity, epoch1, epoch2 = model.seen["val"]
    _assert_params(sanity, p0, exact=True)  # no update yet: the EMA equals the initial weights
    _assert_params(epoch1, _closed_form(p0, model.history[:4], DECAY))
    _assert_params(epoch2, _closed_form(p0, model.history, DECAY))
    for snap, step in ((epoch1, 3), (epoch2, 7)):  # buffers stay the live ones
        assert torch.equal(snap["puzzle.weight"], model.history[step]["puzzle.weight"])
        assert torch.equal(snap["z_init"], p0["z_init"])

    trainer.test(model, _loader(), verbose=False)
    trainer.predict(model, _loader())
    _assert_params(model.seen["test"][0], ema.ema.shadow, exact=True)
    _assert_params(model.seen["predict"][0], ema.ema.shadow, exact=True)
    _assert_params(model._snapshot(), model.history[-1], exact=True)

    torch.manual_seed(0)
    plain = _Net(manual=True)
    _trainer(tmp_path, [], max_epochs=2, num_sanity_val_steps=1).fit(plain, _loader(), _loader())
    for name, value in plain._snapshot().items():  # evaluating with the EMA never perturbs training
        assert torch.equal(value, model._snapshot()[name]), name


@pytest.mark.parametrize("save", ["ema", "raw"])
def test_checkpoint_contents(tmp_path, save):
    torch.manual_seed(0)
    model = _Net(manual=True)
    ema = EMA(decay=DECAY, warmup=False, save=save)
    trainer = _trainer(tmp_path, [ema])
    trainer.fit(model, _loader())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)

    raw, shadow = model._snapshot(), ema.ema.shadow
    saved, other = (shadow, raw) if save == "ema" else (raw, shadow)
    _assert_params(ckpt["state_dict"], saved, exact=True)
    _assert_params(ckpt["ema"]["other"], other, exact=True)
    assert ckpt["ema"]["saved"] == save and ckpt["ema"]["num_updates"] == 4
    for buf in ("puzzle.weight", "z_init"):
        assert torch.equal(ckpt["state_dict"][buf], raw[buf])

    fresh = _Net(manual=True)
    fresh.load_state_dict(ckpt["state_dict"])  # an evaluation model straight from the file
    _assert_params(fresh._snapshot(), saved, exact=True)


def test_checkpoint_saved_while_ema_is_swapped_in(tmp_path):
    torch.manual_seed(0)
    model = _Net(manual=True)
    model.save_during_validation = str(tmp_path / "in_val.ckpt")
    ema = EMA(decay=DECAY, warmup=False)
    _trainer(tmp_path, [ema]).fit(model, _loader(), _loader())
    ckpt = torch.load(tmp_path / "in_val.ckpt", weights_only=True)
    _assert_params(ckpt["state_dict"], ema.ema.shadow, exact=True)
    _assert_params(ckpt["ema"]["other"], model.history[-1], exact=True)  # raw, not the swapped-in EMA


@pytest.mark.parametrize("save", ["ema", "raw"])
def test_resume_is_identical_to_uninterrupted_run(tmp_path, save):
    torch.manual_seed(0)
    full = _Net(manual=True)
    full_ema = EMA(decay=DECAY, warmup=False, save=save)
    _trainer(tmp_path / "full", [full_ema], max_epochs=2).fit(full, _loader())

    torch.manual_seed(0)
    first = _Net(manual=True)
    trainer = _trainer(tmp_path / "a", [EMA(decay=DECAY, warmup=False, save=save)], max_epochs=1)
    trainer.fit(first, _loader())
    trainer.save_checkpoint(tmp_path / "half.ckpt")

    torch.manual_seed(123)  # a differently initialised module: everything must come from the checkpoint
    resumed = _Net(manual=True)
    resumed_ema = EMA(decay=DECAY, warmup=False, save=save)
    _trainer(tmp_path / "b", [resumed_ema], max_epochs=2).fit(resumed, _loader(), ckpt_path=tmp_path / "half.ckpt")

    for name, value in full._snapshot().items():  # raw parameters and buffers (puzzle table, z_init)
        assert torch.equal(value, resumed._snapshot()[name]), name
    _assert_params(resumed_ema.ema.shadow, full_ema.ema.shadow, exact=True)
    assert resumed_ema.ema.num_updates == full_ema.ema.num_updates == 8


def test_evaluating_a_checkpoint_uses_the_ema(tmp_path):
    torch.manual_seed(0)
    model = _Net(manual=True)
    ema = EMA(decay=DECAY, warmup=False, save="raw")
    trainer = _trainer(tmp_path, [ema])
    trainer.fit(model, _loader())
    trainer.save_checkpoint(tmp_path / "raw.ckpt")
    expected = {k: v.clone() for k, v in ema.ema.shadow.items()}

    fresh = _Net(manual=True)
    _trainer(tmp_path, [EMA(decay=DECAY, warmup=False)]).validate(fresh, _loader(), ckpt_path=tmp_path / "raw.ckpt",
                                                    verbose=False)
    _assert_params(fresh.seen["val"][0], expected, exact=True)
    _assert_params(fresh._snapshot(), model._snapshot(), exact=True)  # raw weights back after validation


def test_resume_from_checkpoint_without_ema_restarts_average(tmp_path):
    torch.manual_seed(0)
    model = _Net()
    trainer = _trainer(tmp_path, [])
    trainer.fit(model, _loader())
    trainer.save_checkpoint(tmp_path / "plain.ckpt")
    loaded = model._snapshot()

    resumed = _Net()
    ema = EMA(decay=DECAY, warmup=False)
    with pytest.warns(UserWarning, match="no EMA state"):
        _trainer(tmp_path, [ema], max_epochs=2).fit(resumed, _loader(), ckpt_path=tmp_path / "plain.ckpt")
    _assert_params(ema.ema.shadow, _closed_form(loaded, resumed.history, DECAY))


def test_parameter_ema_excludes_buffers_and_frozen_params():
    net = _Net()
    net.head.weight.requires_grad_(False)
    ema = ParameterEMA(net, decay=0.5)
    assert set(ema.shadow) == {"lin.weight", "lin.bias"}
    before = net.lin.weight.detach().clone()
    with torch.no_grad():
        net.lin.weight.add_(2.0)
    ema.update(net)
    torch.testing.assert_close(ema.shadow["lin.weight"], before + 1.0)
    with pytest.raises(ValueError):
        EMA(save="both")

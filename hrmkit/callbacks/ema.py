"""EMA of the trainable parameters as a Lightning callback: TRM (μ = 0.999) and HRM-Text (μ = 0.9999).

Why not Lightning 2.6.6's ``WeightAveraging`` / ``EMAWeightAveraging``: read against hrm-symbolic.md §5.5 it

* deep-copies the whole LightningModule, buffers included (for ARC the puzzle table alone is ~2 GB), and with
  ``use_buffers=False`` still swaps and copies those stale buffer copies into the live model at validation, at
  ``on_train_end`` and into the checkpoint ``state_dict``: the learned puzzle table would be replaced by its
  setup-time value (zeros);
* copies the parameters on its first update instead of ``shadow ← (1 − μ)·p + μ·shadow`` from the initial weights,
  so the result is not TRM's closed form;
* only swaps for validation (not test / predict), only exists in the ``fit`` stage, and always writes the average
  into ``state_dict`` (no raw option).

Overriding all of that would leave nothing of the base class, so this is a small callback over
:class:`hrmkit.optim.ema.ParameterEMA` instead.

Behaviour:

* **Updates** once per training batch in which at least one optimizer stepped (``trainer.global_step`` grew).
  Under manual optimization each ``LightningOptimizer.step()`` adds 1 to ``global_step``, so a module that steps
  AdamATan2 and SparseSignSGD advances it by 2 per batch and the EMA still updates exactly once; with
  ``accumulate_grad_batches`` it updates only on batches that stepped. (Manual-optimization modules must step
  the wrappers from ``self.optimizers()``, as Lightning requires anyway.)
* **Evaluation** (validate, test, predict; sanity check included) swaps the EMA values into the parameters and the
  raw values back afterwards; training always continues from the raw values. Buffers are never touched.
* **Checkpoints** store, in ``checkpoint["state_dict"]``, the EMA parameters (``save="ema"``, default: the file
  loads straight into an evaluation model, buffers live) or the raw ones (``save="raw"``), and under
  ``checkpoint["ema"]`` the other set plus the update count. ``fit(ckpt_path=...)`` restores raw parameters for
  training and the EMA exactly, whichever was saved; ``validate/test/predict(ckpt_path=...)`` evaluate the EMA.
  ``ModelCheckpoint(save_weights_only=True)`` bypasses callbacks in Lightning 2.6.6, so such files hold the raw
  weights and no EMA (a warning says so).
* After ``fit`` the live module holds the raw weights; ``callback.ema.copy_to(model)`` exports the average.
* **Warm-up** (``warmup=True``, the default) ramps the decay as ``min(decay, (1 + n) / (10 + n))``, so a short run
  evaluates an average of its recent weights; ``warmup=False`` keeps the references' exact closed form (the
  reproduction recipes set it). Whenever the average is still mostly the initial weights (far fewer updates than
  the horizon ``1 / (1 − decay)``), validation, checkpoints and ``hrmkit export`` say so in a warning.
* **Raw headline** (``log_raw=True``): during ``fit`` validation also scores the raw weights on the task's headline
  metric (``headline(batch)``: ``val/exact_acc`` for puzzles, ``val/loss`` for text) and logs it as
  ``<name>_raw`` next to the EMA's value, so a gap between the two is visible (one more forward per batch).
"""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor, nn

from hrmkit.optim.ema import ParameterEMA, ema_staleness

EMA_CHECKPOINT_KEY = "ema"


class EMA(Callback):
    """Parameter EMA for evaluation and checkpoints; see the module docstring.

    Args:
        decay: μ in ``shadow ← (1 − μ)·param + μ·shadow`` (TRM 0.999, HRM-Text pretraining 0.9999).
        save: which parameter values go into the checkpoint's ``state_dict``: ``"ema"`` or ``"raw"``.
        warmup: ramp the decay as ``min(decay, (1 + n) / (10 + n))`` (default); False: the references' closed form.
        log_raw: during ``fit`` validation, also log the raw weights' headline metric as ``<name>_raw``.
    """

    def __init__(self, decay: float = 0.999, save: Literal["ema", "raw"] = "ema", warmup: bool = True,
                 log_raw: bool = True) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        if save not in ("ema", "raw"):
            raise ValueError(f"save must be 'ema' or 'raw', got {save!r}")
        self.decay = decay
        self.save = save
        self.warmup = warmup
        self.log_raw = log_raw
        self._ema: ParameterEMA | None = None
        self._warned: set[str] = set()
        self._raw_sums: dict[str, list[Tensor]] = {}
        self._module_id: int | None = None
        self._stored: list[Tensor] | None = None
        self._last_step = 0

    @property
    def ema(self) -> ParameterEMA | None:
        """The averaged parameters (None before ``fit`` starts or a checkpoint is loaded)."""
        return self._ema

    def _build(self, pl_module: nn.Module) -> ParameterEMA:
        self._ema = ParameterEMA(pl_module, self.decay, warmup=self.warmup)
        self._module_id = id(pl_module)
        return self._ema

    # ----------------------------------------------------------------------------------------------------- training
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.save == "ema":
            if any(getattr(cb, "save_weights_only", False) for cb in trainer.checkpoint_callbacks):
                rank_zero_warn("EMA: ModelCheckpoint(save_weights_only=True) skips callbacks, so those files hold the "
                               "raw weights and no EMA state; save full checkpoints to keep the EMA.")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start from the current weights unless this module already has an EMA (resumed, or a second ``fit``)."""
        if self._ema is None or self._module_id != id(pl_module):
            self._build(pl_module)
        else:
            self._ema.to_module_devices(pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # global_step is restored from a checkpoint only after on_fit_start.
        self._last_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._ema is not None and trainer.global_step > self._last_step:
            self._ema.update(pl_module)
            self._last_step = trainer.global_step

    # --------------------------------------------------------------------------------------------------- evaluation
    def _swap_in(self, pl_module: pl.LightningModule) -> None:
        if self._ema is None or self._stored is not None or self._module_id != id(pl_module):
            return
        self._ema.to_module_devices(pl_module)
        self._stored = self._ema.store(pl_module)
        self._ema.copy_to(pl_module)

    def _swap_out(self, pl_module: pl.LightningModule) -> None:
        if self._ema is None or self._stored is None:
            return
        self._ema.restore(pl_module, self._stored)
        self._stored = None

    def warn_if_stale(self, where: str) -> str | None:
        """Warn (once per ``where``) when the average is still mostly the initial weights; return the message."""
        if self._ema is None:
            return None
        message = ema_staleness(self.decay, self._ema.num_updates, self._ema.initial_share)
        if message is not None and where not in self._warned:
            self._warned.add(where)
            rank_zero_warn(f"{message} [{where}]")
        return message

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_in(pl_module)
        self._raw_sums = {}
        if not trainer.sanity_checking:
            self.warn_if_stale("validation")

    def _scores_raw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        return (self.log_raw and trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
                and self._stored is not None and self._ema is not None and self._ema.num_updates > 0
                and callable(getattr(pl_module, "headline", None)) and not _sharded(pl_module))

    @torch.no_grad()
    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        """Score the raw weights on the task's headline metric for this batch (EMA weights go back in after)."""
        if not self._scores_raw(trainer, pl_module):
            return
        ema_values = self._ema.store(pl_module)
        self._ema.restore(pl_module, self._stored)
        try:
            name, total, count = pl_module.headline(batch)
        finally:
            self._ema.restore(pl_module, ema_values)
        sums = self._raw_sums.setdefault(name, [torch.zeros((), dtype=torch.float64, device=pl_module.device)] * 2)
        sums[0] = sums[0] + total.detach().double()
        sums[1] = sums[1] + count.detach().double()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        name = getattr(pl_module, "headline_name", None)
        if name is not None and self._scores_raw(trainer, pl_module) and name not in self._raw_sums:
            # a rank whose share of a small validation split was empty still joins the reduction (else: a hang)
            zero = torch.zeros((), dtype=torch.float64, device=pl_module.device)
            self._raw_sums[name] = [zero, zero]
        for name, (total, count) in self._raw_sums.items():
            total = trainer.strategy.reduce(total, reduce_op="sum")
            count = trainer.strategy.reduce(count, reduce_op="sum")
            pl_module.log(f"{name}_raw", (total / count.clamp_min(1)).float(), prog_bar=False)
        self._raw_sums = {}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_out(pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_in(pl_module)
        self.warn_if_stale("test")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_out(pl_module)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_in(pl_module)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_out(pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._swap_out(pl_module)

    # -------------------------------------------------------------------------------------------------- checkpoints
    @staticmethod
    def _aliases(pl_module: nn.Module) -> dict[str, str]:
        """state-dict name → averaged name, so tied parameters saved under several names all get the same value."""
        canonical = {id(p): name for name, p in ParameterEMA.parameters(pl_module).items()}
        return {name: canonical[id(p)] for name, p in pl_module.named_parameters(remove_duplicate=False)
                if id(p) in canonical}

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._ema is None or self._module_id != id(pl_module):
            return
        names = list(self._ema.shadow)
        live = ParameterEMA.parameters(pl_module)
        raw = dict(zip(names, self._stored)) if self._stored is not None else {n: live[n].detach() for n in names}
        ema = self._ema.shadow
        saved, other = (ema, raw) if self.save == "ema" else (raw, ema)
        state_dict = checkpoint["state_dict"]
        aliases = self._aliases(pl_module)
        missing = [name for name in aliases if name not in state_dict]
        if missing:
            raise KeyError(f"EMA: parameters {missing[:5]} are not in the checkpoint state_dict under their own names "
                           "(a strategy with a different state-dict layout?)")
        for name, canonical in aliases.items():
            state_dict[name] = saved[canonical]
        if self.save == "ema":
            self.warn_if_stale("checkpoint")
        checkpoint[EMA_CHECKPOINT_KEY] = {
            "decay": self.decay,
            "warmup": self.warmup,
            "initial_share": self._ema.initial_share,
            "num_updates": self._ema.num_updates,
            "saved": self.save,
            "other": {n: other[n] for n in names},
        }

    @torch.no_grad()
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Rebuild the EMA from the checkpoint; when fitting, put the raw weights back into the module."""
        self._stored = None
        ema = self._build(pl_module)
        meta = checkpoint.get(EMA_CHECKPOINT_KEY)
        if meta is None:
            rank_zero_warn("EMA: the checkpoint has no EMA state; the average restarts from the loaded weights.")
            return
        loaded = {name: checkpoint["state_dict"][name] for name in ema.shadow}
        ema_values, raw_values = (loaded, meta["other"]) if meta["saved"] == "ema" else (meta["other"], loaded)
        ema.load_state_dict({"shadow": ema_values, "num_updates": meta["num_updates"], "decay": meta.get("decay"),
                             "initial_share": meta.get("initial_share")})
        if trainer.state.fn == TrainerFn.FITTING and meta["saved"] == "ema":
            params = ParameterEMA.parameters(pl_module)
            for name, value in raw_values.items():
                params[name].copy_(value)


def _sharded(module: nn.Module) -> bool:
    """Whether FSDP2 shards ``module`` (DTensor parameters): the per-batch raw-weight swap of the raw headline metric
    copies plain tensors, so it is skipped there (the EMA evaluation itself is unaffected)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())

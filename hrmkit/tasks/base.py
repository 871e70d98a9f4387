"""Task: what every hrmkit training task shares, so PuzzleTask and TextTask only say what differs.

The shared life cycle, in Lightning's hook order:

* construction: a core given as a ``to_config()`` dict (a checkpoint's hyper-parameters) is rebuilt, and the
  core's config is stored in ``hparams`` so the checkpoint reloads without the YAML (:meth:`_adopt_core`);
* ``configure_model``: size the dataset-dependent layers from the datamodule or check them (the subclass's
  :meth:`_configure_io`), then ``init_from``/``freeze`` (:func:`hrmkit.transfer.configure_init`), then let the
  strategy shard / compile (:func:`hrmkit.parallel.parallelize`), then hand the model summary the FLOPs line;
* ``on_fit_start`` / ``on_train_batch_end``: fresh metric states per fit, and the late logging row a callback may
  ask for (:mod:`hrmkit.tasks.step_logging`);
* optimisation: AdamATan2 over every parameter with a per-step ``LambdaLR`` schedule.

Why a base class and not a mixin of free functions: Lightning finds hooks by method name, and the order
(size → load → shard) must be the same for every task; one ``configure_model`` here keeps it so. Constructors are
not shared: LightningCLI reads each task's own ``__init__`` signature (``--print_config`` shows it as is).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor

from hrmkit.callbacks.summary import use_flops_summary
from hrmkit.cores.base import RecursiveCore, core_from_config
from hrmkit.optim import AdamATan2
from hrmkit.parallel import parallelize
from hrmkit.tasks.metrics import fresh_metric_states
from hrmkit.tasks.step_logging import log_late_row
from hrmkit.transfer import configure_init


class Task(L.LightningModule, metaclass=abc.ABCMeta):
    """Base of the training tasks: core adoption, ``configure_model`` order, optimizer set-up, logging helpers.

    Abstract: a task that does not say how its layers are sized from the data cannot be instantiated."""

    core: RecursiveCore

    @staticmethod
    def _core_from(core: RecursiveCore | dict[str, Any]) -> RecursiveCore:
        """The core itself, or rebuilt from the ``to_config()`` dict a checkpoint's hyper-parameters hold."""
        return core_from_config(core) if isinstance(core, dict) else core

    def _adopt_core(self, core: RecursiveCore) -> None:
        """Own ``core`` and store its config in place of the object (call after ``save_hyperparameters``)."""
        self.hparams["core"] = core.to_config()
        self.core = core

    # -- model set-up ---------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Size the dataset-dependent layers, apply ``init_from`` / ``freeze`` (:mod:`hrmkit.transfer`), then let the
        strategy preset shard / compile (:mod:`hrmkit.parallel`, idempotent: Lightning calls this once per stage)."""
        self._configure_io()
        configure_init(self)
        parallelize(self, compile=self.hparams.compile)
        use_flops_summary(self._trainer)  # the summary prints flops_summary() (hrmkit.callbacks.summary)

    @abc.abstractmethod
    def _configure_io(self) -> None:
        """Build the layers sized by the data (from :meth:`_datamodule`) or check the ones already built (PuzzleTask
        and TextTask implement it; ``ABCMeta`` refuses a subclass that does not)."""

    def _datamodule(self) -> Any:
        """The attached trainer's datamodule, or None (no trainer, or a bare dataloader)."""
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    # -- fit hooks ------------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        fresh_metric_states(self)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        log_late_row(self)  # a row Lightning writes after all (a callback stopped the run at this batch)

    # -- optimisation ---------------------------------------------------------------------------------------------
    def _total_steps(self, without_trainer: float) -> float:
        """Optimizer steps the fit will take (``inf`` under a time budget only), or ``without_trainer``."""
        return self.trainer.estimated_stepping_batches if self._trainer is not None else without_trainer

    def _main_optimizer(self) -> AdamATan2:
        """AdamATan2 over every parameter with the task's ``lr``, ``betas`` and ``weight_decay``."""
        hp = self.hparams
        return AdamATan2(self.parameters(), lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)

    @staticmethod
    def _per_step(optimizer: torch.optim.Optimizer, schedule: Callable[[int], float]) -> dict[str, Any]:
        """Lightning's optimizer config: ``optimizer`` with a ``LambdaLR(schedule)`` stepped every optimizer step."""
        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- logging --------------------------------------------------------------------------------------------------
    def _log_aux(self, aux_losses: dict[str, Tensor]) -> None:
        """The core's own loss terms (e.g. a KL) as ``train/aux/<name>``."""
        if aux_losses:
            self.log_dict({f"train/aux/{k}": v.detach().float() for k, v in aux_losses.items()}, on_step=True,
                          on_epoch=False)

"""Strategy presets: Lightning's own DDP and ModelParallel (FSDP2) strategies carrying a :class:`ParallelPlan`.

Selectable from a recipe by registered name (``strategy: hrmkit_fsdp2``) or by ``class_path`` with options::

    strategy:
      class_path: hrmkit.parallel.FSDP2
      init_args: {param_dtype: bfloat16, reduce_dtype: float32, compile: true}

Nothing distributed is implemented here: the strategies are Lightning's; they only add the plan that
:func:`hrmkit.parallel.apply.parallelize` applies inside the task's ``configure_model``.

Gradient semantics (both presets): DDP and FSDP2 average gradients over ranks, and the tasks normalise their
losses so that the average is the global-batch quantity (PuzzleTask: Σ over the local batch / local batch size;
TextTask: Σ CE / mean over ranks of the local supervised-token count). The update is then the same as one process
on the whole global batch, whatever the world size. (The reference sums instead, ×world size; AdamATan2 is
invariant to that scale.)
"""

from __future__ import annotations

import os
import secrets
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy, StrategyRegistry

from hrmkit.checkpointing import check_checkpoint
from hrmkit.errors import CheckpointError, HrmkitInputError
from hrmkit.parallel.apply import FSDP2_COMPILE_REFUSED
from hrmkit.parallel.plan import ParallelPlan, parse_dtype
from hrmkit.parallel.sharded_ema import load_sharded_ema, pop_sharded_ema, restore_full_ema, save_sharded_ema
from hrmkit.parallel.sharded_load import is_sharded_checkpoint, load_sharded
from hrmkit.sharded_checkpoints import remove_stale_temps, replace_directory, temp_name, write_completion_marker


class DDP(DDPStrategy):
    """Lightning DDP for the symbolic tasks (small models, bf16-mixed), optionally with a compiled core.

    Args:
        compile: ``torch.compile`` the core (before DDP wraps it).
        compile_kwargs: extra ``torch.compile`` arguments.
        broadcast_buffers: off by default: the sparse puzzle-embedding table is a buffer that every rank already
            updates identically (all-gathered gradients); broadcasting it each step would move gigabytes for ARC.
        find_unused_parameters: DDP's option (not needed by the shipped tasks).
        process_group_backend: ``nccl`` on GPUs, ``gloo`` on CPUs (None: Lightning picks).
        timeout: collective timeout.
    """

    def __init__(self, compile: bool = False, compile_kwargs: dict[str, Any] | None = None,
                 broadcast_buffers: bool = False, find_unused_parameters: bool = False,
                 process_group_backend: str | None = None, timeout: timedelta | None = default_pg_timeout,
                 **kwargs: Any) -> None:
        super().__init__(process_group_backend=process_group_backend, timeout=timeout,
                         broadcast_buffers=broadcast_buffers, find_unused_parameters=find_unused_parameters, **kwargs)
        self.plan = ParallelPlan(compile=compile, compile_kwargs=dict(compile_kwargs or {}))


class FSDP2(ModelParallelStrategy):
    """FSDP2 (``fully_shard``) data parallelism over every process, for the text LM; sharded DCP checkpoints.

    Args:
        param_dtype: dtype the gathered parameters compute in (HRM-Text: ``bfloat16``); masters and optimizer
            state stay fp32. None keeps fp32.
        reduce_dtype: dtype of the gradient reduce-scatter (HRM-Text: ``float32``).
        reshard_after_forward: see :class:`~hrmkit.parallel.plan.ParallelPlan` (False for recursive cores).
        compile: refused (a :class:`~hrmkit.errors.HrmkitInputError` naming the alternatives): compiled code under
            FSDP2 reads stale parameters (docs/scaling.md, *Known gaps*). Kept as an argument so that a recipe
            asking for it gets that message instead of an unknown-argument error.
        compile_kwargs: unused while ``compile`` is refused.
        save_distributed_checkpoint: True: one shard per rank (DCP directory), resumable on the same world size;
            False: gather a single file on rank 0.
        process_group_backend: ``nccl`` on GPUs, ``gloo`` on CPUs (None: Lightning picks).
        timeout: collective timeout.
    """

    def __init__(self, param_dtype: str | None = "bfloat16", reduce_dtype: str | None = "float32",
                 reshard_after_forward: bool = False, compile: bool = False,
                 compile_kwargs: dict[str, Any] | None = None, save_distributed_checkpoint: bool = True,
                 process_group_backend: str | None = None, timeout: timedelta | None = default_pg_timeout) -> None:
        if compile:
            raise HrmkitInputError(FSDP2_COMPILE_REFUSED)
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                         save_distributed_checkpoint=save_distributed_checkpoint,
                         process_group_backend=process_group_backend, timeout=timeout)
        self.plan = ParallelPlan(shard=True, param_dtype=parse_dtype(param_dtype, "FSDP2.param_dtype"),
                                 reduce_dtype=parse_dtype(reduce_dtype, "FSDP2.reduce_dtype"),
                                 reshard_after_forward=reshard_after_forward, compile=compile,
                                 compile_kwargs=dict(compile_kwargs or {}))

    def setup_environment(self) -> None:
        # Pure data parallelism: one mesh dimension over every process of every node (ModelParallelStrategy's
        # "auto" would put the processes of a node on the tensor-parallel dimension).
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        super().setup_environment()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> Any:
        # A unit that got no gradient this step (the text embedding while bp_steps=2) has no post-backward hook to
        # reshard it, so it would stay gathered into the next callbacks (EMA) and steps: reshard every unit here.
        out = super().optimizer_step(*args, **kwargs)
        reshard(self.model)
        return out

    # Evaluation forwards have no backward to reshard after them, and reshard_after_forward=False would leave the
    # parameters gathered (plain tensors) until the next training step; callbacks that read or swap parameters at the
    # end of evaluation (EMA) must see the same sharded DTensors they saw at its start.
    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        out = super().validation_step(*args, **kwargs)
        reshard(self.model)
        return out

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        out = super().test_step(*args, **kwargs)
        reshard(self.model)
        return out

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        out = super().predict_step(*args, **kwargs)
        reshard(self.model)
        return out

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The sharded state dict on every rank, also for ``save_distributed_checkpoint=False`` (Lightning's would
        be empty on ranks > 0, where callbacks such as EMA then cannot find the parameters by name); the single
        file's full tensors are gathered in :meth:`save_checkpoint`, on every rank in the same order."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(self.model)

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any = None) -> None:
        """Sharded: every rank writes its shards (and the EMA's second parameter set) into a hidden temporary
        directory; rank 0 then writes the completion marker and renames the directory into place, so a checkpoint
        under its final name is always complete. Single file: gathered to rank 0 and written by the CheckpointIO."""
        other = pop_sharded_ema(checkpoint, self._save_distributed_checkpoint, keep=self.is_global_zero)
        if not self._save_distributed_checkpoint:
            super().save_checkpoint(checkpoint, filepath, storage_options)
            return
        path = Path(self.broadcast(filepath))
        tmp = temp_name(path, self.broadcast(f"{os.getpid()}-{secrets.token_hex(4)}"))
        if self.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(path.parent)
            shutil.rmtree(tmp, ignore_errors=True)
        self.barrier("hrmkit.sharded_save.begin")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        if other is not None:
            save_sharded_ema(other, tmp)
        self.barrier("hrmkit.sharded_save.written")
        problem = None
        if self.is_global_zero:  # its failure (a full disk) is every rank's: shared, so no rank waits forever
            try:
                write_completion_marker(tmp)
                replace_directory(tmp, path)
            except (OSError, CheckpointError) as e:
                problem = f"{path}: the sharded checkpoint could not be completed ({type(e).__name__}: {e})"
        problem = self.broadcast(problem)
        if problem is not None:
            raise CheckpointError(problem)

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """Check the checkpoint first (rank 0, result shared: a torn file or an incomplete sharded directory is one
        ``CheckpointError`` on every rank), then: DCP load of the model and optimizers in place (parameters saved
        without optimizer state keep none) plus the sharded EMA set; single files through Lightning's loader, with
        the EMA set sharded again."""
        path = Path(self.broadcast(checkpoint_path))
        problem = None
        if self.is_global_zero:
            try:
                check_checkpoint(path)
            except CheckpointError as e:
                problem = str(e)
        problem = self.broadcast(problem)
        if problem is not None:
            raise CheckpointError(problem)
        if not is_sharded_checkpoint(path):
            checkpoint = super().load_checkpoint(path, weights_only=weights_only)
            restore_full_ema(checkpoint, self.lightning_module)
            return checkpoint
        checkpoint = load_sharded(path, self.model, list(self.optimizers), strict=self.lightning_module.strict_loading,
                                  weights_only=weights_only)
        load_sharded_ema(checkpoint, path, self.lightning_module)
        return checkpoint


def reshard(model: Any) -> None:
    """Free the gathered parameters of every FSDP2 unit (back to their DTensor shards)."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


PRESETS: dict[str, tuple[type, dict[str, Any], str]] = {
    "hrmkit_ddp": (DDP, {}, "DDP, buffers not broadcast (symbolic tasks)"),
    "hrmkit_ddp_compiled": (DDP, {"compile": True}, "DDP with a torch.compile'd core"),
    "hrmkit_fsdp2": (FSDP2, {}, "FSDP2 per block + children, bf16 params, fp32 reduce, DCP checkpoints"),
    "hrmkit_fsdp2_compiled": (FSDP2, {"compile": True}, "refused with the alternatives named: compiled FSDP2 reads "
                              "stale parameters (use hrmkit_fsdp2 or hrmkit_ddp_compiled)"),
    "hrmkit_fsdp2_fp32": (FSDP2, {"param_dtype": None}, "FSDP2 in fp32 (CPU tests, debugging)"),
}


def register_presets() -> None:
    """Make the presets selectable by name (``Trainer(strategy="hrmkit_fsdp2")``, ``strategy: hrmkit_fsdp2``)."""
    for name, (cls, kwargs, description) in PRESETS.items():
        if name not in StrategyRegistry:
            StrategyRegistry.register(name, cls, description=description, **kwargs)

"""The one function that shards or compiles a task's model: called from the tasks' ``configure_model``.

FSDP2 ``fully_shard`` goes on every Transformer block first, then on each top-level child of the task that still
owns parameters (embedding, LM head, the core's own parameters, halting head). ``torch.compile`` is applied without
sharding only (DDP, one process): under FSDP2 the compiled code read parameters FSDP2 had since swapped (a ~1e-3
drift on 2 processes), so a plan asking for both is refused with the alternatives named.

Why not ``fully_shard`` the LightningModule itself (the usual "root" wrap): FSDP2 gathers parameters in
``forward`` hooks, and :class:`~hrmkit.tasks.PuzzleTask` reaches its embeddings and heads through other methods, so
a root wrap would leave them sharded. Wrapping each child keeps every parameter behind a module whose ``forward``
is what the task calls. Buffers (the sparse puzzle-embedding table, RoPE tables) are never sharded.

Compiling uses ``nn.Module.compile`` (in place), so state-dict names and checkpoints stay the same with and
without it. The core's Python schedule loop reads ``bp_steps`` while tracing, so a compiled core recompiles once per
distinct ``bp_steps`` (the deep-credit warmup visits 2..5); the recompile limit is raised to allow that.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hrmkit.errors import HrmkitInputError
from hrmkit.nn.block import TransformerBlock
from hrmkit.parallel.plan import ParallelPlan

_DONE = "_hrmkit_parallelized"
FSDP2_COMPILE_REFUSED = (
    "torch.compile under FSDP2 (strategy hrmkit_fsdp2_compiled, or FSDP2 with compile: true) is refused: compiled "
    "code reads parameters FSDP2 has since swapped, so the loss drifts (~1e-3 from the second step on 2 processes; "
    "docs/scaling.md, Known gaps). Use `strategy: hrmkit_fsdp2` (FSDP2 without compile) for a model that needs "
    "sharding, or `strategy: hrmkit_ddp_compiled` (DDP + compiled core) for one that fits on each GPU")
DEFAULT_FSDP2_PLAN = ParallelPlan(shard=True, param_dtype=None, reduce_dtype=torch.float32)


def plan_for(strategy: Any) -> ParallelPlan | None:
    """The plan a strategy carries; a plain ``ModelParallelStrategy`` gets FSDP2 defaults (never left unsharded,
    which would silently train every rank on its own unsynchronised copy)."""
    plan = getattr(strategy, "plan", None)
    if isinstance(plan, ParallelPlan):
        return plan
    from lightning.pytorch.strategies import ModelParallelStrategy

    return DEFAULT_FSDP2_PLAN if isinstance(strategy, ModelParallelStrategy) else None


def parallelize(task: nn.Module) -> None:
    """Apply the attached trainer's strategy plan to ``task`` once (``configure_model`` runs for every stage)."""
    if getattr(task, _DONE, False):
        return
    plan = plan_for(getattr(getattr(task, "_trainer", None), "strategy", None))
    if plan is None:
        return
    if plan.shard and plan.compile:
        raise HrmkitInputError(FSDP2_COMPILE_REFUSED)
    if plan.shard:
        shard(task, task.device_mesh["data_parallel"], plan)
    if plan.compile:
        compile_core(task.core, **plan.compile_kwargs)
    setattr(task, _DONE, True)


def shard(task: nn.Module, mesh: Any, plan: ParallelPlan) -> None:
    """FSDP2 over ``mesh``: each Transformer block, then each top-level child of ``task`` that has parameters."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=plan.param_dtype, reduce_dtype=plan.reduce_dtype)
    for block in [m for m in task.modules() if isinstance(m, TransformerBlock)]:
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=plan.reshard_after_forward)
    for child in task.children():
        if any(True for _ in child.parameters()):
            fully_shard(child, mesh=mesh, mp_policy=mp, reshard_after_forward=plan.reshard_after_forward)


def compile_core(core: nn.Module, per_block: bool = False, **kwargs: Any) -> None:
    """``torch.compile`` the core in place: the whole schedule, or (``per_block``) each Transformer block."""
    from hrmkit.nn.backends import ATTENTION

    ATTENTION.names()  # plugin discovery reads entry points, which dynamo cannot trace: do it before the first trace
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 16)
    targets = [m for m in core.modules() if isinstance(m, TransformerBlock)] if per_block else [core]
    if not targets:
        raise ValueError(f"compile per block found no TransformerBlock in {type(core).__name__}; "
                         "compile the whole core (no FSDP2) instead")
    for module in targets:
        if per_block:  # compile forward only: FSDP2's pre/post-forward hooks must stay eager around the graph
            module.forward = torch.compile(module.forward, **kwargs)
        else:
            module.compile(**kwargs)

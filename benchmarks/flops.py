"""FLOPs and memory accounting for recursive cores, shared by gpu_check.py and memory.py.

The FLOP count (HRM-Text App. A) lives in :mod:`hrmkit.cores.flops`, which the model summary uses too; it is
re-exported here with an optional gradient horizon override.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from hrmkit.cores.flops import call_params, head_flops_per_token
from hrmkit.cores.flops import core_flops_per_token as _core_flops_per_token

__all__ = ["call_params", "core_flops_per_token", "head_flops_per_token", "MemoryBudget", "memory_budget"]

BYTES = {"fp32": 4, "bf16": 2}


def core_flops_per_token(core: nn.Module, bp_steps: int | None = None) -> float:
    """App. A (:func:`hrmkit.cores.flops.core_flops_per_token`), optionally at another gradient horizon
    ``bp_steps`` (set on the core)."""
    if bp_steps is not None:
        core.bp_steps = bp_steps
    return _core_flops_per_token(core)


@dataclass
class MemoryBudget:
    """Bytes per GPU for one HRM-Text training step (see docs/scaling.md for the assumptions)."""

    weights: float      # fp32 masters, sharded
    grads: float        # fp32 gradients, sharded
    optimizer: float    # AdamATan2 m, v (fp32), sharded
    ema: float          # EMA shadow (fp32), sharded
    gathered: float     # bf16 unsharded blocks kept between recursion calls (reshard_after_forward=False)
    activations: float  # saved tensors of the calls inside the bp horizon
    logits: float       # bf16 logits + their fp32 copy for the loss + its gradient

    @property
    def total(self) -> float:
        return sum(vars(self).values())


def memory_budget(core_params: int, io_params: int, hidden: int, layers_per_call: int, bp_steps: int,
                  tokens: int, vocab: int, world: int, act_bytes_per_token_dim: float = 34.0) -> MemoryBudget:
    """Estimate per-GPU memory: model states sharded over ``world`` (FSDP2), activations per local token.

    Activations: ``act_bytes_per_token_dim`` bytes per token per hidden unit per layer of a gradient call
    (Korthikanti et al.'s 34·s·h for a bf16 layer with a flash kernel: no s² term), times the layers per call and
    the ``bp_steps`` calls that keep gradients; calls outside the horizon run under no_grad and keep nothing.
    """
    total = core_params + io_params
    shard = total / world
    return MemoryBudget(weights=4 * shard, grads=4 * shard, optimizer=8 * shard, ema=4 * shard,
                        gathered=2 * core_params,
                        activations=act_bytes_per_token_dim * tokens * hidden * layers_per_call * bp_steps,
                        logits=tokens * vocab * (2 + 4 + 4))

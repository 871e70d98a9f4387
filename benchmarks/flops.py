"""FLOPs and memory accounting for recursive cores, shared by gpu_check.py and memory.py.

FLOPs follow the HRM-Text paper's App. A (specs/hrm-text.md §3.4): a module call costs ``2·N_call`` FLOPs per
token forward and, when it is inside the gradient horizon, ``4·N_call`` backward, where ``N_call`` is the parameter
count of the stack that call applies (HRM: the H or the L stack). Embedding, LM head and attention scores are not
counted (as in the paper); :func:`head_flops_per_token` gives the LM head separately.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from hrmkit.cores.flops import call_params  # noqa: F401  (re-exported: the benchmarks import it from here)

BYTES = {"fp32": 4, "bf16": 2}


def core_flops_per_token(core: nn.Module, bp_steps: int | None = None) -> float:
    """App. A: Σ over calls 2·N_call (forward) + Σ over gradient calls 4·N_call (backward)."""
    n = call_params(core)
    if bp_steps is not None:
        core.bp_steps = bp_steps
    grads = core.grad_calls()
    return sum(2.0 * c for c in n) + sum(4.0 * c for c, g in zip(n, grads) if g)


def head_flops_per_token(hidden: int, vocab: int) -> float:
    """The LM head's forward + backward matmuls (not in App. A), 6·d·V per token."""
    return 6.0 * hidden * vocab


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

"""Training FLOPs of a recursive core, counted as in the HRM-Text paper's App. A (specs/hrm-text.md §3.4).

A module call costs ``2·N_call`` FLOPs per token forward and, when it is inside the gradient horizon, ``4·N_call``
backward, where ``N_call`` is the parameter count of the stack that call applies (HRM: the H or the L stack).
Embedding, LM head and attention scores are not counted (as in the paper); :func:`head_flops_per_token` gives the
LM head separately. Used by the model summary (:mod:`hrmkit.callbacks.summary`) and the benchmarks.
"""

from __future__ import annotations

from torch import nn


def call_params(core: nn.Module) -> list[int]:
    """Parameters applied by each module call of ``core.schedule()``: the stack named by the call's kind (HRM's
    ``H``/``L``, RINS), else the whole core, which is right for cores whose every call runs one shared stack (TRM,
    UT, a one-call Transformer)."""
    sizes = {}
    for kind in set(core.schedule()):
        stack = getattr(core, kind, None)
        if stack is None and getattr(core, "shared", False):
            stack = core.L
        if not isinstance(stack, nn.Module):
            stack = core
        sizes[kind] = sum(p.numel() for p in stack.parameters())
    return [sizes[k] for k in core.schedule()]


def core_forward_flops_per_token(core: nn.Module) -> float:
    """App. A forward cost of one full pass of the schedule: Σ over calls 2·N_call."""
    return sum(2.0 * c for c in call_params(core))


def core_flops_per_token(core: nn.Module) -> float:
    """App. A training cost of one pass: Σ over calls 2·N_call (forward) + Σ over gradient calls 4·N_call."""
    n = call_params(core)
    return sum(2.0 * c for c in n) + sum(4.0 * c for c, g in zip(n, core.grad_calls()) if g)


def head_flops_per_token(hidden: int, vocab: int) -> float:
    """The LM head's forward + backward matmuls (not in App. A), 6·d·V per token."""
    return 6.0 * hidden * vocab

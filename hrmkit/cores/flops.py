"""App. A FLOPs of a core (HRM-Text paper, specs/hrm-text.md §3.4): what each module call of the schedule costs.

A module call costs ``2·N_call`` FLOPs per token forward (and ``4·N_call`` backward when inside the gradient
horizon), where ``N_call`` is the parameter count of the stack that call applies. Embedding, heads and attention
scores are not counted, as in the paper. Shared by the speed/memory benchmarks (``benchmarks/flops.py``) and the
test-time compute curves (:mod:`hrmkit.eval.scaling`).
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


def forward_flops_per_token(core: nn.Module) -> float:
    """App. A forward cost of one full pass of the schedule, per token: Σ over calls 2·N_call (inference)."""
    return sum(2.0 * c for c in call_params(core))

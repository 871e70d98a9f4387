"""AdamATan2: a faithful pure-PyTorch port of the ``adam-atan2`` CUDA kernel used by HRM, TRM and HRM-Text.

Per element, with step ``t`` counted per parameter from 1 (hrm-symbolic.md §3.1, hrm-text.md §5.1)::

    p ← p·(1 − lr·wd)                                   # decoupled decay with the *scheduled* lr
    m ← m + (1 − β1)·(g − m)
    v ← v + (1 − β2)·(g² − v)
    p ← p − (lr / (1 − β1^t)) · atan2(m, √v / √(1 − β2^t))

Why a port instead of a package: there is no ε (atan2 is bounded and defined at 0/0), the m bias correction sits
*outside* atan2, and the reference builds its optimizers with ``lr = 0`` before the schedule sets it; the available
substitutes change the scaling or the default betas, or reject ``lr = 0``. Every step is bounded by
``(π/2)·lr/(1 − β1^t)``, and the update does not depend on the gradient scale (so a summed rather than averaged
gradient is harmless).

Parameters whose ``grad`` is None are skipped entirely (no decay, no step count), as in HRM-Text. Moments are kept in
fp32 (fp64 for fp64 parameters); hrmkit keeps fp32 master parameters, so that is the parameter dtype in practice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _state_dtype(p: Tensor) -> torch.dtype:
    """fp32 moments for low-precision parameters, so their updates do not lose the small (1 − β) increments."""
    return torch.float32 if p.dtype in _LOW_PRECISION else p.dtype


class AdamATan2(Optimizer):
    """Adam with ``atan2`` in place of the ε-guarded division; the exact update of the reference kernel.

    Args:
        params: parameters or param groups.
        lr: learning rate; 0 is allowed (the reference constructs with 0 and lets the schedule set it).
        betas: (β1, β2). β1 = 0 reduces the update to ``lr·atan2(g, √v̂)``.
        weight_decay: decoupled decay λ, applied as ``p·(1 − lr·λ)`` before the update.
        foreach: use ``torch._foreach_*`` multi-tensor ops (default: on when every parameter is on CUDA). Both paths
            run the same elementwise ops in the same order and give bit-identical results.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid betas: {betas}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        defaults = {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay, "foreach": foreach}
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)

    def _init_group(
        self, group: dict[str, Any]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Collect the parameters that have a gradient, creating their state lazily, and advance their step."""
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("AdamATan2 does not support sparse gradients; use SparseSignSGD for embeddings")
            if torch.is_complex(p):
                raise RuntimeError("AdamATan2 does not support complex parameters")
            state = self.state[p]
            if len(state) == 0:
                dtype = _state_dtype(p)
                state["step"] = torch.tensor(0, dtype=torch.int64)
                state["exp_avg"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
            state["step"] += 1
            params.append(p)
            grads.append(p.grad if p.grad.dtype == state["exp_avg"].dtype else p.grad.to(state["exp_avg"].dtype))
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        return params, grads, exp_avgs, exp_avg_sqs, steps

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = self._init_group(group)
            if not params:
                continue
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.is_cuda for p in params)
            fn = _foreach_adam_atan2 if foreach else _single_tensor_adam_atan2
            beta1, beta2 = group["betas"]
            fn(params, grads, exp_avgs, exp_avg_sqs, [int(s) for s in steps],
               lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"])
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load, then restore fp32 moments for low-precision parameters (torch casts state to the param dtype)."""
        super().load_state_dict(state_dict)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(saved_ids, params):
            saved = state_dict["state"].get(pid)
            if saved is None or p.dtype not in _LOW_PRECISION:
                continue
            for key in ("exp_avg", "exp_avg_sq"):
                self.state[p][key] = saved[key].to(device=p.device, dtype=torch.float32)


def _coefficients(step: int, lr: float, beta1: float, beta2: float) -> tuple[float, float]:
    """(lr/(1−β1^t), 1/√(1−β2^t)) as Python floats, shared by both paths.

    The v correction is applied as a multiplication by the reciprocal in both paths: CUDA turns a division by a
    scalar into exactly that in one path but not the other, which would break bit-equality of the two paths.
    """
    return lr / (1.0 - beta1**step), 1.0 / math.sqrt(1.0 - beta2**step)


def _single_tensor_adam_atan2(
    params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor], steps: list[int],
    *, lr: float, beta1: float, beta2: float, weight_decay: float,
) -> None:
    """Reference path: one parameter at a time, the four equations in order."""
    decay = 1.0 - lr * weight_decay
    for p, g, m, v, t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        step_size, inv_bc2_sqrt = _coefficients(t, lr, beta1, beta2)
        if decay != 1.0:
            p.mul_(decay)
        m.lerp_(g, 1.0 - beta1)
        v.lerp_(g * g, 1.0 - beta2)
        update = torch.atan2(m, v.sqrt().mul_(inv_bc2_sqrt))
        p.sub_(update.mul_(step_size))


def _foreach_adam_atan2(
    params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor], steps: list[int],
    *, lr: float, beta1: float, beta2: float, weight_decay: float,
) -> None:
    """Multi-tensor path: the same elementwise ops as the reference path, batched (there is no ``_foreach_atan2``)."""
    coeffs = [_coefficients(t, lr, beta1, beta2) for t in steps]
    decay = 1.0 - lr * weight_decay
    if decay != 1.0:
        torch._foreach_mul_(params, decay)
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(grads, grads), 1.0 - beta2)
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_mul_(denoms, [c[1] for c in coeffs])
    updates = [torch.atan2(m, d, out=d) for m, d in zip(exp_avgs, denoms)]
    torch._foreach_mul_(updates, [c[0] for c in coeffs])
    torch._foreach_sub_(params, updates)

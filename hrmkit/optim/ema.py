"""Exponential moving average of a module's trainable parameters (TRM ``EMAHelper``, HRM-Text's in-optimizer EMA).

``shadow ← (1 − μ)·param + μ·shadow`` after every optimizer step; the shadow starts as a copy of the parameters,
with no warmup and no bias correction, so after k updates
``shadow_k = μ^k·p_0 + Σ_{i=1..k} (1 − μ)·μ^(k−i)·p_i``. Only parameters with ``requires_grad`` are averaged;
buffers (puzzle-embedding tables, fixed ``z_init`` states) are never copied, so evaluation with the shadow always
uses the live buffers. Low-precision parameters get an fp32 shadow so the (1 − μ) increments are not rounded away.

This class is plain state; :class:`hrmkit.callbacks.EMA` decides when to update, swap and checkpoint it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class ParameterEMA:
    """Shadow copies of ``module``'s trainable parameters, keyed by parameter name."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {}
        for name, p in self.parameters(module).items():
            dtype = torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype
            self.shadow[name] = p.detach().to(dtype=dtype, copy=True)

    @staticmethod
    def parameters(module: nn.Module) -> dict[str, Tensor]:
        """The averaged set: named parameters that require grad (shared parameters once, under their first name)."""
        return {name: p for name, p in module.named_parameters() if p.requires_grad}

    def _pairs(self, module: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
        params = self.parameters(module)
        if params.keys() != self.shadow.keys():
            missing, extra = self.shadow.keys() - params.keys(), params.keys() - self.shadow.keys()
            raise KeyError(f"module parameters changed since the EMA was created: missing {missing}, new {extra}")
        names = list(self.shadow)
        return [params[n] for n in names], [self.shadow[n] for n in names]

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """One EMA step towards the module's current parameters."""
        params, shadows = self._pairs(module)
        params = [p.detach() if p.dtype == s.dtype else p.detach().to(s.dtype) for p, s in zip(params, shadows)]
        torch._foreach_lerp_(shadows, params, 1.0 - self.decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Write the averaged values into the module's parameters (buffers untouched)."""
        for p, s in zip(*self._pairs(module)):
            p.copy_(s)

    @torch.no_grad()
    def store(self, module: nn.Module) -> list[Tensor]:
        """A copy of the module's current (raw) parameter values, to give back to :meth:`restore`."""
        return [p.detach().clone() for p in self._pairs(module)[0]]

    @torch.no_grad()
    def restore(self, module: nn.Module, stored: list[Tensor]) -> None:
        """Put values from :meth:`store` back into the module's parameters."""
        for p, s in zip(self._pairs(module)[0], stored):
            p.copy_(s)

    def to_module_devices(self, module: nn.Module) -> None:
        """Move each shadow to its parameter's device (after a strategy moved the module, or after loading)."""
        params = self.parameters(module)
        for name, s in self.shadow.items():
            if name in params and s.device != params[name].device:
                self.shadow[name] = s.to(params[name].device)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load shadows and the update count; the configured decay is kept (it may change between runs)."""
        shadow = state["shadow"]
        if shadow.keys() != self.shadow.keys():
            missing, extra = self.shadow.keys() - shadow.keys(), shadow.keys() - self.shadow.keys()
            raise KeyError(f"EMA state does not match the module: missing {missing}, unexpected {extra}")
        for name, value in shadow.items():
            self.shadow[name].copy_(value)
        self.num_updates = int(state.get("num_updates", 0))

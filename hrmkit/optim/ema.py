"""Exponential moving average of a module's trainable parameters (TRM ``EMAHelper``, HRM-Text's in-optimizer EMA).

``shadow ← (1 − μ_n)·param + μ_n·shadow`` after every optimizer step; the shadow starts as a copy of the parameters.

* ``warmup=False`` is the references' exact closed form: μ_n = μ, no bias correction, so after k updates
  ``shadow_k = μ^k·p_0 + Σ_{i=1..k} (1 − μ)·μ^(k−i)·p_i``. The initial weights keep a share μ^k: with μ = 0.9999 a
  300-step run evaluates weights that are still 97 % the random init.
* ``warmup=True`` ramps the decay, μ_n = min(μ, (1 + n) / (10 + n)) for the n-th update (n = 0, 1, ...), so a short
  run averages its recent weights and a long one ends at the configured μ.

:attr:`ParameterEMA.initial_share` tracks the weight the initial parameters still hold in the average (the product
of the decays applied); :func:`ema_staleness` turns it into the warning the callback and ``export`` print.

Only parameters with ``requires_grad`` are averaged;
buffers (puzzle-embedding tables, fixed ``z_init`` states) are never copied, so evaluation with the shadow always
uses the live buffers. Low-precision parameters get an fp32 shadow so the (1 − μ) increments are not rounded away.

This class is plain state; :class:`hrmkit.callbacks.EMA` decides when to update, swap and checkpoint it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn


class ParameterEMA:
    """Shadow copies of ``module``'s trainable parameters, keyed by parameter name."""

    def __init__(self, module: nn.Module, decay: float, warmup: bool = False) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.initial_share = 1.0
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
        decay = self.current_decay()
        torch._foreach_lerp_(shadows, params, 1.0 - decay)
        self.num_updates += 1
        self.initial_share *= decay

    def current_decay(self) -> float:
        """μ for the next update: the configured decay, ramped by ``(1 + n) / (10 + n)`` under warm-up."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

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
        return {"decay": self.decay, "num_updates": self.num_updates, "initial_share": self.initial_share,
                "warmup": self.warmup, "shadow": dict(self.shadow)}

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
        # Checkpoints from before warm-up existed ran the closed form: their initial share is decay ** updates.
        share, decay = state.get("initial_share"), state.get("decay")
        decay = self.decay if decay is None else float(decay)
        self.initial_share = float(share) if share is not None else decay**self.num_updates


def ema_staleness(decay: float, num_updates: int, initial_share: float, threshold: float = 0.5) -> str | None:
    """A warning when the average is still mostly the initial weights (``initial_share > threshold``), i.e. it has
    seen far fewer updates than its horizon ``1 / (1 − decay)``; None when it is fine to evaluate."""
    if num_updates == 0 or initial_share <= threshold:  # no update yet: the average equals the live weights
        return None
    horizon = math.inf if decay >= 1.0 else 1.0 / (1.0 - decay)
    return (f"EMA: averaged over {num_updates:,} steps, far fewer than its horizon 1/(1-decay) = {horizon:,.0f} "
            f"(decay {decay}); the EMA weights are still {initial_share:.0%} the initial weights, so evaluations, "
            "checkpoints and exports of them look untrained. Use EMA(warmup=true) (the default), a lower decay, "
            "or train longer.")

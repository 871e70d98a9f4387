"""GatedLoop: a looped Transformer with a learned, GRU-like gate on the recurrent state (an hrmkit core plugin)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from hrmkit.cores import CallContext, RecursiveCore, State
from hrmkit.nn.linear import Linear

__all__ = ["GatedLoop"]


class GatedLoop(RecursiveCore):
    """``c = stack(z + x)``, ``g = σ(W_g [z; c] + b)``, ``z ← (1 − g) z + g c``, repeated ``cycles`` times."""

    updates: ClassVar[dict[str, str]] = {"G": "z"}
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(hidden_size=32, num_heads=2, expansion=2.0, max_seq_len=256, cycles=3, num_layers=1),
    }

    def __init__(self, cycles: int = 4, num_layers: int = 2, gate_bias: float = -1.0, **kwargs: Any) -> None:
        """
        Args:
            cycles: how many gated updates one pass makes.
            num_layers: blocks in the shared stack.
            gate_bias: initial gate bias; negative values start close to "keep the old state".
            **kwargs: the shared core options of :class:`hrmkit.cores.RecursiveCore`.
        """
        super().__init__(**kwargs)
        if cycles < 1:
            raise ValueError(f"GatedLoop needs cycles >= 1, got {cycles}")
        self.cycles, self.gate_bias_init = cycles, gate_bias
        self.stack = self.make_stack(num_layers)
        self.gate = Linear(2 * self.hidden_size, self.hidden_size, self.init)
        self.gate_bias = torch.nn.Parameter(torch.full((self.hidden_size,), float(gate_bias)))
        self.make_init_buffer("z_init")
        self.check_bp_steps()

    def schedule(self) -> list[str]:
        return ["G"] * self.cycles

    @property
    def default_bp_steps(self) -> int:
        return min(2, self.cycles)

    def initial_state(self, x: Tensor) -> State:
        return {"z": self.z_init.to(x.dtype).expand_as(x)}

    def call(self, kind: str, k: int, i: int, x: Tensor, state: State, ctx: CallContext) -> State:
        z = state["z"]
        cand = self.stack(z + x, ctx.attn, ctx.rope, ctx.cache, i)
        g = torch.sigmoid(self.gate(torch.cat([z.expand_as(cand), cand], dim=-1)) + self.gate_bias.to(cand.dtype))
        return {"z": torch.lerp(z.expand_as(cand), cand, g)}

    def output(self, state: State) -> Tensor:
        return state["z"]

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            self.gate_bias.fill_(self.gate_bias_init)

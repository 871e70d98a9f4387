"""RINS baseline: a half-size L stack iterated on the input, ``z_L ← L(z_L + x)`` for ``L_cycles`` steps, then one
pass of a half-size H stack over the result, ``out = H(z_L)`` (no injection). The gradient horizon covers H and
the last ``bp_steps − 1`` L steps (HRM-Text's setting: 7 L steps, 4 with gradient)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from hrmkit.cores.base import CallContext, RecursiveCore, State, register_core
from hrmkit.cores.presets import TEXT_SIZES, TINY, text_size


@register_core("rins")
class RINS(RecursiveCore):
    updates: ClassVar[dict[str, str]] = {"L": "z_L", "H": "z_H"}
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(TINY, L_cycles=3, H_layers=1, L_layers=1),
        "text-XL": dict(text_size("XL"), L_cycles=7, H_layers=TEXT_SIZES["XL"][1] // 2,
                        L_layers=TEXT_SIZES["XL"][1] // 2, bp_steps=5),
    }

    def __init__(self, L_cycles: int = 7, H_layers: int = 4, L_layers: int = 4, **kwargs: Any) -> None:
        """
        Args:
            L_cycles: iterations of the L stack on the input.
            H_layers: blocks of the final H stack.
            L_layers: blocks of the iterated L stack.
            **kwargs: the shared core options of :class:`RecursiveCore`.
        """
        super().__init__(**kwargs)
        if L_cycles < 1:
            raise ValueError(f"RINS needs L_cycles >= 1, got {L_cycles}")
        self.L_cycles = L_cycles
        self.L = self.make_stack(L_layers)
        self.H = self.make_stack(H_layers)
        self.make_init_buffer("z_L_init")
        self.check_bp_steps()

    def schedule(self) -> list[str]:
        return ["L"] * self.L_cycles + ["H"]

    @property
    def default_bp_steps(self) -> int:
        return min(5, self.num_calls)

    def initial_state(self, x: Tensor) -> State:
        return {"z_L": self.z_L_init.to(x.dtype).expand_as(x), "z_H": x}

    def call(self, kind: str, k: int, i: int, x: Tensor, state: State, ctx: CallContext) -> State:
        if kind == "L":
            return {"z_L": self.L(state["z_L"] + x, ctx.attn, ctx.rope, ctx.cache, i), "z_H": state["z_H"]}
        return {"z_L": state["z_L"], "z_H": self.H(state["z_L"], ctx.attn, ctx.rope, ctx.cache, i)}

    def output(self, state: State) -> Tensor:
        return state["z_H"]

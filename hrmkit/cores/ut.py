"""Universal (looped) Transformer: one full stack applied ``cycles`` times, ``z ← stack(z + x)`` from a fixed
``z_init``; the raw embedding is re-injected every cycle. HRM-Text's baseline keeps gradients through the last 2
cycles (``bp_steps``)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from hrmkit.cores.base import CallContext, RecursiveCore, State, register_core
from hrmkit.cores.presets import TEXT_SIZES, TINY, text_size


@register_core("ut")
class UniversalTransformer(RecursiveCore):
    updates: ClassVar[dict[str, str]] = {"U": "z"}
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(TINY, cycles=3, num_layers=1),
        "text-XL": dict(text_size("XL"), cycles=4, num_layers=TEXT_SIZES["XL"][1], bp_steps=2),
    }

    def __init__(self, cycles: int = 4, num_layers: int = 4, **kwargs: Any) -> None:
        """
        Args:
            cycles: how many times the stack is applied.
            num_layers: blocks in the (single, full-size) stack.
            **kwargs: the shared core options of :class:`RecursiveCore`.
        """
        super().__init__(**kwargs)
        if cycles < 1:
            raise ValueError(f"UniversalTransformer needs cycles >= 1, got {cycles}")
        self.cycles = cycles
        self.stack = self.make_stack(num_layers)
        self.make_init_buffer("z_init")
        self.check_bp_steps()

    def schedule(self) -> list[str]:
        return ["U"] * self.cycles

    @property
    def default_bp_steps(self) -> int:
        return min(2, self.cycles)

    def initial_state(self, x: Tensor) -> State:
        return {"z": self.z_init.to(x.dtype).expand_as(x)}

    def call(self, kind: str, k: int, i: int, x: Tensor, state: State, ctx: CallContext) -> State:
        return {"z": self.stack(state["z"] + x, ctx.attn, ctx.rope, ctx.cache, i)}

    def output(self, state: State) -> Tensor:
        return state["z"]

"""Plain Transformer: one pass of one stack, the non-recursive baseline every recursive core is compared with.

With ``carry_state=True`` it becomes the ARC-Prize ablation model: each ACT segment refines a carried state,
``h ← stack(h + x)``, so deep supervision and halting still apply without any inner recursion.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from hrmkit.cores.base import CallContext, RecursiveCore, State, register_core
from hrmkit.cores.presets import SYMBOLIC, TEXT_SIZES, TINY, text_size


@register_core("transformer")
class Transformer(RecursiveCore):
    updates: ClassVar[dict[str, str]] = {"T": "h"}
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(TINY, num_layers=2),
        "arc-act": dict(SYMBOLIC, num_layers=8, carry_state=True, max_seq_len=901),
        **{f"text-{s}": dict(text_size(s), num_layers=TEXT_SIZES[s][1]) for s in ("B", "L", "XL")},
    }

    def __init__(self, num_layers: int = 8, carry_state: bool = False, **kwargs: Any) -> None:
        """
        Args:
            num_layers: blocks in the stack.
            carry_state: refine a carried state (``h ← stack(h + x)``) instead of reading x afresh.
            **kwargs: the shared core options of :class:`RecursiveCore`.
        """
        super().__init__(**kwargs)
        self.carry_state = carry_state
        self.stack = self.make_stack(num_layers)
        if carry_state:
            self.make_init_buffer("h_init")
        self.check_bp_steps()

    def schedule(self) -> list[str]:
        return ["T"]

    def initial_state(self, x: Tensor) -> State:
        return {"h": self.h_init.to(x.dtype).expand_as(x) if self.carry_state else x}

    def call(self, kind: str, k: int, i: int, x: Tensor, state: State, ctx: CallContext) -> State:
        inp = state["h"] + x if self.carry_state else x
        return {"h": self.stack(inp, ctx.attn, ctx.rope, ctx.cache, i)}

    def output(self, state: State) -> Tensor:
        return state["h"]

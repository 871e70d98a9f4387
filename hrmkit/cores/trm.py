"""TRM (Tiny Recursive Model): one small shared network refines an answer embedding ``y`` and a latent ``z``.

Schedule: ``T × (n × z-update, then y-update)`` with ``z ← net(z + y + x)`` and ``y ← net(y + z)``: the network
knows which update it is doing only from whether x is in its input. Gradients flow through the whole last recursion
(``bp_steps = n + 1``, the default); the first T − 1 recursions run without gradient. ``mixer="mlp"`` replaces
attention with TRM's token-mixing MLP-t (fixed ``seq_len``; the Sudoku setting uses ``pos_encoding="none"``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from hrmkit.cores.base import CallContext, RecursiveCore, State, register_core
from hrmkit.cores.presets import SYMBOLIC, TINY


@register_core("trm")
class TRM(RecursiveCore):
    updates: ClassVar[dict[str, str]] = {"z": "z", "y": "y"}
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(TINY, H_cycles=2, L_cycles=2, num_layers=1),
        "sudoku": dict(SYMBOLIC, H_cycles=3, L_cycles=6, num_layers=2, max_seq_len=97),
        "sudoku-mlp": dict(SYMBOLIC, H_cycles=3, L_cycles=6, num_layers=2, mixer="mlp", seq_len=97,
                           pos_encoding="none"),
        # `hrmkit demo`: a CPU-sized MLP-t TRM (d=128, T=2, n=2) for Sudoku with a 1-position puzzle prefix
        "demo": dict(SYMBOLIC, hidden_size=128, num_heads=4, H_cycles=2, L_cycles=2, num_layers=2, mixer="mlp",
                     seq_len=82, pos_encoding="none"),
        "maze": dict(SYMBOLIC, H_cycles=3, L_cycles=4, num_layers=2, max_seq_len=916),
        "arc": dict(SYMBOLIC, H_cycles=3, L_cycles=4, num_layers=2, max_seq_len=916),
    }

    def __init__(self, H_cycles: int = 3, L_cycles: int = 6, num_layers: int = 2, **kwargs: Any) -> None:
        """
        Args:
            H_cycles: recursions per pass (TRM's T).
            L_cycles: z-updates per recursion (TRM's n).
            num_layers: blocks of the single shared network.
            **kwargs: the shared core options of :class:`RecursiveCore`.
        """
        super().__init__(**kwargs)
        if H_cycles < 1 or L_cycles < 1:
            raise ValueError(f"TRM needs H_cycles >= 1 and L_cycles >= 1, got {H_cycles} and {L_cycles}")
        self.H_cycles, self.L_cycles = H_cycles, L_cycles
        self.net = self.make_stack(num_layers)
        self.make_init_buffer("y_init")
        self.make_init_buffer("z_init")
        self.check_bp_steps()

    def schedule(self) -> list[str]:
        return (["z"] * self.L_cycles + ["y"]) * self.H_cycles

    @property
    def default_bp_steps(self) -> int:
        return self.L_cycles + 1

    def initial_state(self, x: Tensor) -> State:
        return {"y": self.y_init.to(x.dtype).expand_as(x), "z": self.z_init.to(x.dtype).expand_as(x)}

    def call(self, kind: str, k: int, i: int, x: Tensor, state: State, ctx: CallContext) -> State:
        y, z = state["y"], state["z"]
        if kind == "z":
            return {"y": y, "z": self.net(z + y + x, ctx.attn, ctx.rope, ctx.cache, i)}
        return {"y": self.net(y + z, ctx.attn, ctx.rope, ctx.cache, i), "z": z}

    def output(self, state: State) -> Tensor:
        return state["y"]

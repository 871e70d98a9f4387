"""HRM: a slow high-level stack H and a fast low-level stack L updating one latent state (z_H, z_L).

Schedule: ``H_cycles × (L_cycles × L, then H)``. Two input-injection styles:

* ``hrm`` (HRM-Symbolic): ``z_L ← L(z_L + z_H + x)``, ``z_H ← H(z_H + z_L)``, both states start from fixed
  untrained buffers ``z_H_init`` / ``z_L_init``.
* ``hrm_text`` (HRM-Text): ``z_H⁰ = x``, ``z_L⁰ = z_L_init``, ``z_L ← L(z_L + z_H)``, ``z_H ← H(z_H + z_L)``; x enters
  only through the initial z_H.

Gradient horizon (specs/hrm-text.md §3.2): with ``bp`` calls of credit, H gets ``H_bp = min(H_cycles, bp − 1)`` and L
gets ``L_bp = bp − H_bp``; the last ``H_bp`` H calls and the last ``L_bp`` L calls keep gradients. bp = 2 is HRM's
one-step gradient (last L, last H). ``shared=True`` runs one stack for both updates (HRM-Text's TRM baseline).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from torch import Tensor

from hrmkit.cores.base import CallContext, RecursiveCore, State, register_core
from hrmkit.cores.presets import SYMBOLIC, TEXT_SIZES, TINY, text_size

Injection = Literal["hrm", "hrm_text"]


@register_core("hrm")
class HRM(RecursiveCore):
    updates: ClassVar[dict[str, str]] = {"L": "z_L", "H": "z_H"}
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(TINY, H_cycles=2, L_cycles=2, H_layers=1, L_layers=1),
        "text-tiny": dict(TINY, norm="magic", norm_eps=1e-6, init="fmod3", gated_attn=True, injection="hrm_text",
                          H_cycles=2, L_cycles=3, H_layers=1, L_layers=1, bp_steps=5),
        "sudoku": dict(SYMBOLIC, H_cycles=2, L_cycles=2, H_layers=4, L_layers=4, max_seq_len=82),
        "maze": dict(SYMBOLIC, H_cycles=2, L_cycles=2, H_layers=4, L_layers=4, max_seq_len=901),
        "arc": dict(SYMBOLIC, H_cycles=2, L_cycles=2, H_layers=4, L_layers=4, max_seq_len=901),
        **{f"text-{s}": dict(text_size(s), injection="hrm_text", H_cycles=2, L_cycles=3, bp_steps=5,
                             H_layers=n // 2, L_layers=n // 2)
           for s, (_, n) in TEXT_SIZES.items()},  # a same-size Transformer's n layers split over H and L
    }

    def __init__(self, H_cycles: int = 2, L_cycles: int = 2, H_layers: int = 4, L_layers: int = 4,
                 injection: Injection = "hrm", shared: bool = False, **kwargs: Any) -> None:
        """
        Args:
            H_cycles: H updates per pass (HRM's T).
            L_cycles: L updates before each H update (HRM's n).
            H_layers: blocks in the H stack.
            L_layers: blocks in the L stack.
            injection: ``hrm`` (HRM-Symbolic: x injected into every L call) or ``hrm_text`` (x is z_H⁰).
            shared: use a single stack for H and L updates (weight-tied; H_layers is then ignored).
            **kwargs: the shared core options of :class:`RecursiveCore`.
        """
        super().__init__(**kwargs)
        if injection not in ("hrm", "hrm_text"):
            raise ValueError(f"HRM injection must be 'hrm' or 'hrm_text', got {injection!r}")
        if H_cycles < 1 or L_cycles < 1:
            raise ValueError(f"HRM needs H_cycles >= 1 and L_cycles >= 1, got {H_cycles} and {L_cycles}")
        self.H_cycles, self.L_cycles, self.injection, self.shared = H_cycles, L_cycles, injection, shared
        self.L = self.make_stack(L_layers)
        if not shared:
            self.H = self.make_stack(H_layers)
        if injection == "hrm":
            self.make_init_buffer("z_H_init")
        self.make_init_buffer("z_L_init")
        self.check_bp_steps()

    def schedule(self) -> list[str]:
        return (["L"] * self.L_cycles + ["H"]) * self.H_cycles

    @property
    def default_bp_steps(self) -> int:
        return 2 if self.injection == "hrm" else min(5, self.num_calls)

    @property
    def min_bp_steps(self) -> int:
        return 2  # the output is z_H: at least one H call, plus at least one L call

    def grad_calls(self) -> list[bool]:
        bp = self.bp_steps
        h_bp = min(self.H_cycles, bp - 1)
        l_bp = bp - h_bp
        n_l = self.H_cycles * self.L_cycles
        out, li, hi = [], 0, 0
        for kind in self.schedule():
            if kind == "L":
                out.append(li >= n_l - l_bp)
                li += 1
            else:
                out.append(hi >= self.H_cycles - h_bp)
                hi += 1
        return out

    def initial_state(self, x: Tensor) -> State:
        z_l = self.z_L_init.to(x.dtype).expand_as(x)
        if self.injection == "hrm_text":
            return {"z_H": x, "z_L": z_l}
        return {"z_H": self.z_H_init.to(x.dtype).expand_as(x), "z_L": z_l}

    def call(self, kind: str, k: int, i: int, x: Tensor, state: State, ctx: CallContext) -> State:
        z_h, z_l = state["z_H"], state["z_L"]
        if kind == "L":
            inp = z_l + z_h + x if self.injection == "hrm" else z_l + z_h
            return {"z_H": z_h, "z_L": self.L(inp, ctx.attn, ctx.rope, ctx.cache, i)}
        h_stack = self.L if self.shared else self.H
        return {"z_H": h_stack(z_h + z_l, ctx.attn, ctx.rope, ctx.cache, i), "z_L": z_l}

    def output(self, state: State) -> Tensor:
        return state["z_H"]

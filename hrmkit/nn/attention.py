"""Multi-head self-attention of HRM (fused qkv) and HRM-Text (fused gate|q|k|v with an elementwise sigmoid gate).

Masking is never built here: the :class:`AttnSpec` goes to the attention backend this module chose
(:class:`hrmkit.nn.backends.BackendChoice`, the per-module form of :func:`hrmkit.nn.backends.attend`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.backends import BackendChoice
from hrmkit.nn.cache import LayerKV
from hrmkit.nn.init import InitScheme
from hrmkit.nn.linear import Linear
from hrmkit.nn.rope import apply_rope


class Attention(nn.Module):
    """Bias-free MHA. ``gated`` adds HRM-Text's ``σ(gate) ⊙ attn`` (one gate value per head dimension).

    ``fused_qkv=True`` keeps one projection (``qkv_proj`` or, gated, ``gqkv_proj`` in row order gate|q|k|v — the HF
    ``hrm_text`` layout); ``False`` uses separate ``q_proj``/``k_proj``/``v_proj`` (/``gate_proj``), which tensor
    parallel plans and partial freezing find easier. Both compute the same function.
    """

    def __init__(self, dim: int, num_heads: int, gated: bool = False, fused_qkv: bool = True,
                 init: InitScheme = "trunc2", backend: str = "auto") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.gated, self.fused_qkv, self.backend = gated, fused_qkv, backend
        self.backend_choice = BackendChoice(backend)  # probes the environment now, picks once per kind of call
        parts = ["gate", "q", "k", "v"] if gated else ["q", "k", "v"]
        if fused_qkv:
            setattr(self, "gqkv_proj" if gated else "qkv_proj", Linear(dim, len(parts) * dim, init))
        else:
            for p in parts:
                setattr(self, f"{p}_proj", Linear(dim, dim, init))
        self.o_proj = Linear(dim, dim, init)

    def _project(self, x: Tensor) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
        b, t, _ = x.shape
        shape = (b, t, -1, self.head_dim)
        if self.fused_qkv:
            proj = self.gqkv_proj if self.gated else self.qkv_proj
            heads = proj(x).view(shape).split(self.num_heads, dim=2)
        else:
            names = ("gate", "q", "k", "v") if self.gated else ("q", "k", "v")
            heads = tuple(getattr(self, f"{n}_proj")(x).view(shape) for n in names)
        return (heads[0], *heads[1:]) if self.gated else (None, *heads)

    def forward(self, x: Tensor, spec: AttnSpec, rope: tuple[Tensor, Tensor] | None = None,
                kv: LayerKV | None = None) -> Tensor:
        gate, q, k, v = self._project(x)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if kv is not None:
            k, v = kv.update(k, v)
        out = self.backend_choice.attend(q, k, v, spec)
        if gate is not None:
            out = out * torch.sigmoid(gate)
        return self.o_proj(out.flatten(2))


def plan_wanted(module: nn.Module, spec: AttnSpec, device_type: str, seq_len: int) -> bool:
    """Whether any attention layer of ``module`` may run a backend that reads ``spec.plan`` (``varlen``,
    ``xformers``) for ``spec``: then the caller plans once per batch with :func:`hrmkit.nn.backends.with_plan`,
    outside the (possibly compiled) module. Decided without reading any tensor, so it never syncs a GPU."""
    if not spec.packed and spec.kind != "prefixlm":
        return False
    grad = torch.is_grad_enabled()
    return any(m.backend_choice.uses_plan(device_type, spec, grad, seq_len)
               for m in module.modules() if isinstance(m, Attention))

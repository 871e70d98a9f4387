"""``varlen``: block-diagonal FlashAttention over packed documents (PrefixLM as two calls, see :mod:`.packing`).

The kernel is pluggable so the gather/scatter logic runs on CPU in tests with :func:`reference_kernel`; the backend
itself uses :func:`torch_varlen_kernel` (``torch.nn.attention.varlen.varlen_attn``), which is CUDA-only.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention.bias import causal_lower_right

from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.backends.base import ATTENTION, AttentionBackend, SpecCache
from hrmkit.nn.backends.packing import VarlenPlan, assemble, gather, plan_for_spec


class VarlenKernel(Protocol):
    """Attention over packed ``[total, H, D]`` rows split into blocks by ``cu_q``/``cu_k``.

    ``causal`` is bottom-right aligned per block (query i of a block of ``lq`` queries and ``lk`` keys sees keys
    ``<= i + lk - lq``), as FlashAttention >= 2.1 does.
    """

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, cu_q: Tensor, cu_k: Tensor, max_q: int, max_k: int,
                 causal: bool, scale: float | None) -> Tensor: ...


def reference_kernel(q: Tensor, k: Tensor, v: Tensor, cu_q: Tensor, cu_k: Tensor, max_q: int, max_k: int,
                     causal: bool, scale: float | None) -> Tensor:
    """Loop over blocks with SDPA: slow, runs anywhere and supports backward, so the decomposition is testable."""
    outs = []
    bounds_q, bounds_k = cu_q.tolist(), cu_k.tolist()
    for (q0, q1), (k0, k1) in zip(zip(bounds_q, bounds_q[1:]), zip(bounds_k, bounds_k[1:])):
        qb, kb, vb = (t.transpose(0, 1).unsqueeze(0) for t in (q[q0:q1], k[k0:k1], v[k0:k1]))
        mask = causal_lower_right(q1 - q0, k1 - k0) if causal else None
        outs.append(F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, scale=scale)[0].transpose(0, 1))
    return torch.cat(outs) if outs else q.new_zeros(0, *q.shape[1:-1], v.shape[-1])


def torch_varlen_kernel(q: Tensor, k: Tensor, v: Tensor, cu_q: Tensor, cu_k: Tensor, max_q: int, max_k: int,
                        causal: bool, scale: float | None) -> Tensor:
    """``torch.nn.attention.varlen.varlen_attn`` (FlashAttention, CUDA, fp16/bf16); imported on first use."""
    from torch.nn.attention.varlen import varlen_attn

    window = (-1, 0) if causal else (-1, -1)
    return varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, scale=scale, window_size=window)


def run_plan(q: Tensor, k: Tensor, v: Tensor, plan: VarlenPlan, kernel: VarlenKernel,
             scale: float | None = None) -> Tensor:
    """Execute ``plan`` (already on q's device, see ``VarlenPlan.to``) over packed ``[N, H, D]`` tensors."""
    outs = []
    for call in plan.calls:
        assert call.cu_q is not None and call.cu_k is not None, "move the plan to the device first (plan.to)"
        qc, kc, vc = gather(q, k, v, call)
        outs.append(kernel(qc, kc, vc, call.cu_q, call.cu_k, call.max_q, call.max_k, call.causal, scale))
    return assemble(outs, plan, q, v)


def varlen_attention(q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec, kernel: VarlenKernel = reference_kernel,
                     scale: float | None = None, plan: VarlenPlan | None = None) -> Tensor:
    """``[B, T, H, D]`` attention through a varlen kernel; unpacked batches are flattened into ``B`` documents."""
    batch, q_len, heads, _ = q.shape
    if plan is None:
        plan = plan_for_spec(spec, batch, q_len, k.shape[1]).to(q.device)
    flat = lambda t: t.reshape(-1, *t.shape[2:])
    out = run_plan(flat(q), flat(k), flat(v), plan, kernel, scale)
    return out.reshape(batch, q_len, heads, v.shape[-1])


@ATTENTION.register("varlen")
class VarlenBackend(AttentionBackend):
    """FlashAttention varlen kernels: no dense mask, no padding, PrefixLM as two calls."""

    name = "varlen"

    def __init__(self) -> None:
        self._plans = SpecCache()

    def unavailable_reason(self, device_type: str, spec: AttnSpec, needs_grad: bool, q_len: int,
                           kv_len: int) -> str | None:
        if device_type != "cuda":
            return (f"its kernel, torch.nn.attention.varlen.varlen_attn, is CUDA-only and this call is on "
                    f"{device_type!r}; use backend='sdpa' (or 'auto')")
        try:
            module = importlib.import_module("torch.nn.attention.varlen")
        except ImportError:
            module = None
        if not hasattr(module, "varlen_attn"):
            return (f"torch {torch.__version__} has no torch.nn.attention.varlen.varlen_attn; upgrade torch or use "
                    "backend='flex' or 'sdpa'")
        if not torch.backends.cuda.is_flash_attention_available():
            return "this torch build has no FlashAttention kernels; use backend='flex' or 'sdpa'"
        return None

    def input_reason(self, q: Tensor) -> str | None:
        if q.dtype not in (torch.float16, torch.bfloat16):
            return (f"FlashAttention needs float16/bfloat16 inputs, got {q.dtype}; run under bf16 autocast or use "
                    "backend='flex' or 'sdpa'")
        if q.shape[-1] > 256:
            return f"FlashAttention supports head_dim <= 256, got {q.shape[-1]}; use backend='flex' or 'sdpa'"
        return None

    def plan(self, spec: AttnSpec, q: Tensor, kv_len: int) -> VarlenPlan:
        """The plan reads lengths on the host (a device sync), so build it once per spec object."""
        batch, q_len = q.shape[0], q.shape[1]
        build = lambda: plan_for_spec(spec, batch, q_len, kv_len).to(q.device)
        return self._plans.get(spec, (batch, q_len, kv_len, q.device), build)

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec, scale: float | None = None) -> Tensor:
        return varlen_attention(q, k, v, spec, torch_varlen_kernel, scale, self.plan(spec, q, k.shape[1]))

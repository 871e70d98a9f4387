"""``varlen``: block-diagonal FlashAttention over packed documents (PrefixLM as two calls, see :mod:`.packing`).

The kernel is pluggable so the gather/scatter logic runs on CPU in tests with :func:`reference_kernel`; the backend
itself uses :func:`varlen_attn_kernel` over ``torch.nn.attention.varlen.varlen_attn``, which is CUDA-only. Whether
the installed torch has that function, with every argument hrmkit passes, is checked once when the backend is
created (:func:`signature_problem`), so an old torch is reported by name instead of failing inside a kernel call.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.backends.base import ATTENTION, AttentionBackend, SpecCache
from hrmkit.nn.backends.packing import VarlenPlan, assemble, gather, plan_for_spec, spec_plan


class VarlenKernel(Protocol):
    """Attention over packed ``[total, H, D]`` rows split into blocks by ``cu_q``/``cu_k``.

    ``causal`` is bottom-right aligned per block (query i of a block of ``lq`` queries and ``lk`` keys sees keys
    ``<= i + lk - lq``), as FlashAttention >= 2.1 does.
    """

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, cu_q: Tensor, cu_k: Tensor, max_q: int, max_k: int,
                 causal: bool, scale: float | None) -> Tensor: ...


def reference_kernel(q: Tensor, k: Tensor, v: Tensor, cu_q: Tensor, cu_k: Tensor, max_q: int, max_k: int,
                     causal: bool, scale: float | None) -> Tensor:
    """One SDPA call with the block-diagonal (bottom-right causal) mask built from ``cu_q``/``cu_k`` on the device.

    Slow (a dense ``[Nq, Nk]`` mask) but it runs anywhere, supports backward, reads no lengths on the host and so
    compiles without a graph break: the decomposition and the compiled varlen path are testable on the CPU.
    """
    rows_q = torch.arange(q.shape[0], device=q.device)
    rows_k = torch.arange(k.shape[0], device=k.device)
    ends_q, ends_k = cu_q[1:].long().contiguous(), cu_k[1:].long().contiguous()
    block_q = torch.searchsorted(ends_q, rows_q, right=True)  # block of every query row (empty blocks skipped)
    block_k = torch.searchsorted(ends_k, rows_k, right=True)
    allowed = block_q[:, None] == block_k[None, :]
    if causal:  # bottom-right: local key <= local query + (lk - lq), i.e. key - block end <= query - block end
        allowed = allowed & ((rows_k - ends_k[block_k.clamp(max=ends_k.numel() - 1)])[None, :]
                             <= (rows_q - ends_q[block_q.clamp(max=ends_q.numel() - 1)])[:, None])
    qb, kb, vb = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
    return F.scaled_dot_product_attention(qb, kb, vb, attn_mask=allowed, scale=scale)[0].transpose(0, 1)


# What hrmkit passes to torch's varlen_attn besides q, k, v: cu_seq_q, cu_seq_k, max_q, max_k by position, these by
# keyword. Checked against the installed signature when the backend is created, never inside a kernel call.
VARLEN_POSITIONAL = 7
VARLEN_KEYWORDS = ("scale", "window_size")


def installed_varlen_attn() -> Callable[..., Tensor] | None:
    """``torch.nn.attention.varlen.varlen_attn`` of the installed torch, or ``None`` when it has none."""
    try:
        module = importlib.import_module("torch.nn.attention.varlen")
    except ImportError:
        return None
    return getattr(module, "varlen_attn", None)


def signature_problem(fn: Callable[..., Tensor]) -> str | None:
    """Why ``fn`` cannot take the call :func:`varlen_attn_kernel` makes, naming the installed torch, or ``None``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check against
        return None
    kinds = {p.kind for p in params}
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    keywords = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    missing = []
    if len(positional) < VARLEN_POSITIONAL and inspect.Parameter.VAR_POSITIONAL not in kinds:
        missing.append(f"{VARLEN_POSITIONAL} positional arguments (q, k, v, cu_seq_q, cu_seq_k, max_q, max_k)")
    if inspect.Parameter.VAR_KEYWORD not in kinds:
        missing += [f"{name}=" for name in VARLEN_KEYWORDS if name not in keywords]
    if not missing:
        return None
    names = ", ".join(p.name for p in params)
    return (f"torch {torch.__version__}'s torch.nn.attention.varlen.varlen_attn({names}) does not take "
            f"{', '.join(missing)}, which hrmkit passes (varlen_attn(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, "
            "scale=..., window_size=...)); upgrade torch or use backend='flex' or 'sdpa'")


def varlen_attn_kernel(varlen_attn: Callable[..., Tensor]) -> VarlenKernel:
    """The :class:`VarlenKernel` calling torch's ``varlen_attn`` (FlashAttention: CUDA, fp16/bf16)."""

    def kernel(q: Tensor, k: Tensor, v: Tensor, cu_q: Tensor, cu_k: Tensor, max_q: int, max_k: int, causal: bool,
               scale: float | None) -> Tensor:
        window = (-1, 0) if causal else (-1, -1)  # (-1, 0): every earlier key, bottom-right aligned per block
        return varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, scale=scale, window_size=window)

    return kernel


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
    """FlashAttention varlen kernels: no dense mask, no padding, PrefixLM as two calls.

    ``kernel=None`` runs torch's ``varlen_attn`` (CUDA only), whose presence and signature are checked here, once;
    another :class:`VarlenKernel` (e.g. :func:`reference_kernel`) runs wherever its tensors are.
    """

    name = "varlen"
    uses_plan = True

    def __init__(self, kernel: VarlenKernel | None = None) -> None:
        self._plans = SpecCache()
        self.cuda_only = kernel is None
        self.problem: str | None = None
        if kernel is None:
            fn = installed_varlen_attn()
            if fn is None:
                self.problem = (f"torch {torch.__version__} has no torch.nn.attention.varlen.varlen_attn; upgrade "
                                "torch or use backend='flex' or 'sdpa'")
            else:
                self.problem = signature_problem(fn)
                if self.problem is not None and torch.cuda.is_available():  # 'auto' falls back: say why, once
                    warnings.warn(f"attention backend 'varlen' is unusable: {self.problem}", stacklevel=2)
            if self.problem is None and not torch.backends.cuda.is_flash_attention_available():
                self.problem = "this torch build has no FlashAttention kernels; use backend='flex' or 'sdpa'"
            kernel = varlen_attn_kernel(fn) if self.problem is None and fn is not None else None
        self.kernel = kernel

    def unavailable_reason(self, device_type: str, spec: AttnSpec, needs_grad: bool, q_len: int,
                           kv_len: int) -> str | None:
        if self.cuda_only and device_type != "cuda":
            return (f"its kernel, torch.nn.attention.varlen.varlen_attn, is CUDA-only and this call is on "
                    f"{device_type!r}; use backend='sdpa' (or 'auto')")
        return self.problem

    def input_reason(self, q: Tensor) -> str | None:
        if not self.cuda_only:
            return None
        if q.dtype not in (torch.float16, torch.bfloat16):
            return (f"FlashAttention needs float16/bfloat16 inputs, got {q.dtype}; run under bf16 autocast or use "
                    "backend='flex' or 'sdpa'")
        if q.shape[-1] > 256:
            return f"FlashAttention supports head_dim <= 256, got {q.shape[-1]}; use backend='flex' or 'sdpa'"
        return None

    def plan(self, spec: AttnSpec, q: Tensor, kv_len: int) -> VarlenPlan:
        """``spec.plan``, or a plan built once per spec object (it reads lengths on the host: a device sync)."""
        return spec_plan(spec, self._plans, q, kv_len)

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec, scale: float | None = None) -> Tensor:
        assert self.kernel is not None, "unavailable_reason() said why this backend cannot run"
        return varlen_attention(q, k, v, spec, self.kernel, scale, self.plan(spec, q, k.shape[1]))

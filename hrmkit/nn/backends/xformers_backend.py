"""``xformers`` (optional extra): ``memory_efficient_attention`` with block-diagonal attention biases.

Named ``xformers_backend`` so it can never shadow the real ``xformers`` package. xformers is imported lazily, only
when this backend is asked for; its fmha kernels are CUDA-only, and its compiled extension is built against one
torch version, so a mismatched wheel is reported instead of failing inside a kernel. Bias construction
(:func:`xformers_biases`) is pure Python and is tested on CPU via ``.materialize()``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch
from torch import Tensor

from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.backends.base import ATTENTION, AttentionBackend, SpecCache
from hrmkit.nn.backends.packing import VarlenPlan, assemble, gather, spec_plan

INSTALL_HINT = ("pip install 'hrmkit[xformers]' (xformers wheels are built for one torch version: install the "
                "release that matches your torch, or use backend='sdpa', 'flex' or 'varlen', which need no extra)")


def _load_xformers() -> tuple[Any, Any, str | None]:
    """``(xformers.ops, xformers.ops.fmha.attn_bias, None)``, or ``(None, None, why)`` when it cannot be imported."""
    try:
        return importlib.import_module("xformers.ops"), importlib.import_module("xformers.ops.fmha.attn_bias"), None
    except Exception as exc:  # ImportError, or a broken compiled extension raising anything else
        return None, None, f"{type(exc).__name__}: {exc}"


def _from_seqlens(cls: Any, q_lens: tuple[int, ...], kv_lens: tuple[int, ...], device: torch.device | None) -> Any:
    """Recent xformers take ``device=`` (where the sequence starts live); older releases do not."""
    if device is not None and "device" in inspect.signature(cls.from_seqlens).parameters:
        return cls.from_seqlens(list(q_lens), list(kv_lens), device=device)
    return cls.from_seqlens(list(q_lens), list(kv_lens))


def xformers_biases(plan: VarlenPlan, device: torch.device | None = None, xb: Any = None) -> list[Any]:
    """One ``BlockDiagonal*`` bias per planned call (PrefixLM: bidirectional prefix call + bottom-right causal).

    ``xb`` is xformers' ``attn_bias`` module (imported here when not given).
    """
    xb = importlib.import_module("xformers.ops.fmha.attn_bias") if xb is None else xb
    biases = []
    for call in plan.calls:
        if not call.causal:
            cls = xb.BlockDiagonalMask
        elif call.q_lens == call.kv_lens:
            cls = xb.BlockDiagonalCausalMask
        else:
            cls = xb.BlockDiagonalCausalFromBottomRightMask
        biases.append(_from_seqlens(cls, call.q_lens, call.kv_lens, device))
    return biases


@ATTENTION.register("xformers")
class XformersBackend(AttentionBackend):
    """For projects that already depend on xformers; PyTorch's own kernels do the same work without the extra.

    xformers is imported when this backend is first asked for (``get_backend("xformers")``), never with hrmkit.
    """

    name = "xformers"
    uses_plan = True

    def __init__(self) -> None:
        self._plans = SpecCache()
        self._biases = SpecCache()
        self._ops, self._bias, self.import_error = _load_xformers()

    def unavailable_reason(self, device_type: str, spec: AttnSpec, needs_grad: bool, q_len: int,
                           kv_len: int) -> str | None:
        if self.import_error is not None:
            return f"xformers cannot be imported ({self.import_error}); {INSTALL_HINT}"
        if device_type != "cuda":
            return (f"xformers has no {device_type!r} kernels (its fmha ops are CUDA-only); use backend='sdpa' "
                    "(or 'auto')")
        return None

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec, scale: float | None = None) -> Tensor:
        batch, q_len, heads, _ = q.shape
        kv_len = k.shape[1]
        if not spec.packed and spec.kind != "prefixlm":  # xformers' native layout is ours: [B, T, H, D]
            bias = None
            if spec.kind == "causal":
                xb = self._bias
                bias = xb.LowerTriangularMask() if q_len == kv_len else xb.LowerTriangularFromBottomRightMask()
            return self._ops.memory_efficient_attention(q, k, v, attn_bias=bias, scale=scale)

        plan = spec_plan(spec, self._plans, q, kv_len)
        biases = self._biases.get(spec, (plan, q.device), lambda: xformers_biases(plan, q.device, self._bias))
        flat = lambda t: t.reshape(-1, *t.shape[2:])
        qf, kf, vf = flat(q), flat(k), flat(v)
        outs = []
        for call, bias in zip(plan.calls, biases):
            qc, kc, vc = (t.unsqueeze(0) for t in gather(qf, kf, vf, call))
            outs.append(self._ops.memory_efficient_attention(qc, kc, vc, attn_bias=bias, scale=scale)[0])
        return assemble(outs, plan, qf, vf).reshape(batch, q_len, heads, v.shape[-1])

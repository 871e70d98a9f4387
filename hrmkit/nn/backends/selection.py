"""``attend`` (the one entry point cores use) and the ``auto`` policy that picks a backend per call."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.backends.base import BackendUnavailable, check_inputs, get_backend, grad_needed


def select_backend(device_type: str, spec: AttnSpec, needs_grad: bool, q_len: int, kv_len: int,
                   available: Callable[[str], bool] | None = None) -> str:
    """The ``auto`` policy.

    SDPA already dispatches plain and causal sequences (and KV-cache decoding) to flash kernels, and is the only
    backend everywhere but CUDA. Packed documents and PrefixLM on CUDA want a kernel that skips masked blocks:
    ``varlen`` first, then ``flex``, with dense-mask ``sdpa`` as the last resort. ``available(name)`` defaults to
    asking each backend's :meth:`~AttentionBackend.unavailable_reason` (imports happen lazily there).
    """
    if available is None:
        def available(name: str) -> bool:
            return get_backend(name).unavailable_reason(device_type, spec, needs_grad, q_len, kv_len) is None

    if device_type != "cuda" or q_len != kv_len:
        return "sdpa"
    if not spec.packed and spec.kind in ("bidirectional", "causal"):
        return "sdpa"
    for name in ("varlen", "flex"):
        if available(name):
            return name
    return "sdpa"


def attend(q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec, backend: str = "auto",
           scale: float | None = None) -> Tensor:
    """``softmax(q k^T * scale + mask(spec)) v`` for ``q [B, Tq, H, D]``, ``k, v [B, Tk, H, D]`` -> ``[B, Tq, H, D]``.

    With ``Tk > Tq`` the queries are the last ``Tq`` positions (KV cache). A named backend that cannot serve the call
    raises :class:`BackendUnavailable` saying why and what to use instead; ``auto`` only picks backends that can.
    """
    check_inputs(q, k, v, spec)
    grad = grad_needed(q, k, v)
    device_type, q_len, kv_len = q.device.type, q.shape[1], k.shape[1]
    if backend == "auto":
        def usable(name: str) -> bool:
            impl = get_backend(name)
            reason = impl.unavailable_reason(device_type, spec, grad, q_len, kv_len) or impl.input_reason(q)
            return reason is None

        backend = select_backend(device_type, spec, grad, q_len, kv_len, usable)
    impl = get_backend(backend)
    reason = impl.unavailable_reason(device_type, spec, grad, q_len, kv_len) or impl.input_reason(q)
    if reason is not None:
        raise BackendUnavailable(f"attention backend {backend!r} cannot run this call: {reason}")
    return impl(q, k, v, spec, scale)

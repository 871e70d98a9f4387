"""``attend`` (the one entry point cores use), the ``auto`` policy, and :class:`BackendChoice`, which fixes the
backend of one attention module so that a compiled core never probes its environment per call."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.backends import base
from hrmkit.nn.backends.base import BackendUnavailable, check_inputs, get_backend, grad_needed

AUTO_CANDIDATES = ("varlen", "flex", "sdpa")  # the only backends `auto` may pick


def select_backend(device_type: str, spec: AttnSpec, needs_grad: bool, q_len: int, kv_len: int,
                   available: Callable[[str], bool] | None = None) -> str:
    """The ``auto`` policy.

    SDPA already dispatches plain and causal sequences (and KV-cache decoding) to flash kernels, and is the only
    backend everywhere but CUDA. Packed documents and PrefixLM on CUDA want a kernel that skips masked blocks:
    ``varlen`` first, then ``flex``, with dense-mask ``sdpa`` as the last resort. ``available(name)`` defaults to
    asking each backend's :meth:`~AttentionBackend.unavailable_reason` (environment facts were probed when the
    backend was created, so this reads cached answers).
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


def _resolve(backend: str, q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec) -> str:
    """The backend that runs this call: ``backend`` itself, checked, or what ``auto`` picks."""
    grad = grad_needed(q, k, v)
    device_type, q_len, kv_len = base.device_type(q), q.shape[1], k.shape[1]
    if backend == "auto":
        def usable(name: str) -> bool:
            impl = get_backend(name)
            return (impl.unavailable_reason(device_type, spec, grad, q_len, kv_len) or impl.input_reason(q)) is None

        return select_backend(device_type, spec, grad, q_len, kv_len, usable)
    impl = get_backend(backend)
    reason = impl.unavailable_reason(device_type, spec, grad, q_len, kv_len) or impl.input_reason(q)
    if reason is not None:
        raise BackendUnavailable(f"attention backend {backend!r} cannot run this call: {reason}")
    return backend


def attend(q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec, backend: str = "auto",
           scale: float | None = None) -> Tensor:
    """``softmax(q k^T * scale + mask(spec)) v`` for ``q [B, Tq, H, D]``, ``k, v [B, Tk, H, D]`` -> ``[B, Tq, H, D]``.

    With ``Tk > Tq`` the queries are the last ``Tq`` positions (KV cache). A named backend that cannot serve the call
    raises :class:`BackendUnavailable` saying why and what to use instead; ``auto`` only picks backends that can.
    """
    check_inputs(q, k, v, spec)
    return get_backend(_resolve(backend, q, k, v, spec))(q, k, v, spec, scale)


class BackendChoice:
    """The backend of one attention module, chosen once per kind of call and remembered.

    Built with the module: a named backend (or, for ``auto``, each candidate) is created then, so an unknown name
    fails at build and every environment probe (imports, kernel signatures) runs outside any compiled region. The
    choice for a kind of call (device type, dtype, grad mode, spec layout, KV cache or not, head size) is made on
    its first eager call and cached. Inside a compiled region it is recomputed from the backends' cached facts:
    plain Python that the tracer folds into constants, and not stored, because writing the cache there would
    invalidate the guards of the graph being built.
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend
        for name in AUTO_CANDIDATES if backend == "auto" else (backend,):
            get_backend(name)
        self._chosen: dict[tuple, str] = {}

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec) -> str:
        """The backend name for this call (raises :class:`BackendUnavailable` for a named one that cannot run it)."""
        if torch.compiler.is_compiling():
            return _resolve(self.backend, q, k, v, spec)
        key = (base.device_type(q), q.dtype, grad_needed(q, k, v), spec.kind, spec.packed, q.shape[1] == k.shape[1],
               q.shape[-1])
        name = self._chosen.get(key)
        if name is None:
            name = self._chosen[key] = _resolve(self.backend, q, k, v, spec)
        return name

    def attend(self, q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec, scale: float | None = None) -> Tensor:
        """:func:`attend` through this module's choice: the inputs are checked, the backend is not asked again."""
        check_inputs(q, k, v, spec)
        return get_backend(self(q, k, v, spec))(q, k, v, spec, scale)

    def uses_plan(self, device_type: str, spec: AttnSpec, needs_grad: bool, seq_len: int) -> bool:
        """Whether a call with ``spec`` on ``device_type`` may run a backend that reads ``spec.plan``."""
        if self.backend != "auto":
            return get_backend(self.backend).uses_plan
        name = select_backend(device_type, spec, needs_grad, seq_len, seq_len)
        return get_backend(name).uses_plan

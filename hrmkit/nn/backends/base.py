"""The backend interface, the registry every backend lives in, and the input checks all backends share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.registry import PluginError, Registry, track

T = TypeVar("T")


class BackendUnavailable(RuntimeError):
    """A named backend cannot run this call; the message says which, why, and what to use instead."""


class AttentionBackend(ABC):
    """One way of running ``softmax(q k^T * scale + mask(spec)) v``.

    Subclasses are stateless apart from caches, so one instance per name is shared (see :func:`get_backend`).
    ``__call__`` assumes :meth:`unavailable_reason` and :meth:`input_reason` returned ``None``; go through
    :func:`hrmkit.nn.backends.attend` to get those checks and readable errors.
    """

    name: ClassVar[str] = ""
    uses_plan: ClassVar[bool] = False  # reads ``spec.plan`` (block-diagonal calls), so callers should plan outside

    # Environment facts (is the kernel importable, which arguments does it take) are probed once, in ``__init__``:
    # these methods run inside compiled regions, where an import or a signature probe would break the graph.
    def unavailable_reason(self, device_type: str, spec: AttnSpec, needs_grad: bool, q_len: int,
                           kv_len: int) -> str | None:
        """Why this backend cannot serve such a call (a sentence that names an alternative), or ``None``."""
        return None

    def input_reason(self, q: Tensor) -> str | None:
        """Like :meth:`unavailable_reason`, for properties only the tensor knows (dtype, head size)."""
        return None

    @abstractmethod
    def __call__(self, q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec, scale: float | None = None) -> Tensor:
        """``q [B, Tq, H, D]``, ``k, v [B, Tk, H, D]`` → ``[B, Tq, H, D]``."""


ATTENTION: Registry[type[AttentionBackend]] = track(
    Registry("attention backend", group="hrmkit.attention", base=AttentionBackend)
)

_INSTANCES: dict[str, AttentionBackend] = {}


def get_backend(name: str) -> AttentionBackend:
    """The shared instance registered under ``name`` (plugins are imported on first use)."""
    try:
        cls = ATTENTION.get(name)
    except PluginError as exc:
        if name in ATTENTION or name in ATTENTION.errors:  # a broken plugin: its own message is the useful one
            raise
        raise PluginError(f"{exc}; or 'auto' to choose one per call") from None
    inst = _INSTANCES.get(name)
    if type(inst) is not cls:
        inst = _INSTANCES[name] = cls()
    return inst


def device_type(t: Tensor) -> str:
    """The device type a backend branches on. The single place backends ask, so tests take the CUDA branches' Python
    on CPU tensors by patching this function."""
    return t.device.type


def grad_needed(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether this call will record a graph, which is what decides backward support."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))


def check_inputs(q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec) -> None:
    """Reject shapes and specs no backend can honour, before any kernel sees them.

    Only shapes and host-side values are read, so this never synchronises with a GPU.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention expects q, k, v as [B, T, H, D]; got shapes {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape[:3] != v.shape[:3] or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} must agree on batch and heads,"
                         " q and k on head_dim, k and v on length")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    batch, q_len, kv_len = q.shape[0], q.shape[1], k.shape[1]
    if (spec.packed or spec.kind == "prefixlm") and q_len != kv_len:
        raise ValueError(f"packed and prefixlm attention need as many keys as queries, got q_len={q_len}, "
                         f"kv_len={kv_len}; for cached decoding after a PrefixLM prompt use kind='causal' "
                         "(the prompt already sits in the cache)")
    if spec.kind == "causal" and kv_len < q_len:
        raise ValueError(f"causal attention with a KV cache needs kv_len >= q_len (queries are the last q_len "
                         f"positions), got q_len={q_len}, kv_len={kv_len}")
    if spec.packed:
        _check_packed(spec, batch, q_len)
    elif spec.prefix_lens is not None and spec.prefix_lens.numel() != batch:
        raise ValueError(f"prefix_lens has {spec.prefix_lens.numel()} entries for a batch of {batch} sequences")
    if (spec.prefix_lens is not None and spec.prefix_lens.device.type == "cpu" and not torch.compiler.is_compiling()
            and bool((spec.prefix_lens < 0).any())):
        raise ValueError(f"prefix_lens must be >= 0, got {spec.prefix_lens.tolist()}")


def _check_packed(spec: AttnSpec, batch: int, seq_len: int) -> None:
    cu = spec.cu_seqlens
    assert cu is not None
    if batch != 1:
        raise ValueError(f"packed AttnSpec (cu_seqlens) needs batch size 1, got {batch}")
    if cu.numel() < 2:
        raise ValueError(f"cu_seqlens needs at least two entries [0, T], got {cu.tolist()}")
    n_docs = cu.numel() - 1
    if spec.prefix_lens is not None and spec.prefix_lens.numel() != n_docs:
        raise ValueError(f"prefix_lens has {spec.prefix_lens.numel()} entries for {n_docs} packed documents")
    # free to check here; on a GPU it would cost a sync per call, in a compiled graph a graph break
    if cu.device.type == "cpu" and not torch.compiler.is_compiling():
        bounds = cu.tolist()
        if bounds[0] != 0 or bounds[-1] != seq_len or any(b < a for a, b in zip(bounds, bounds[1:])):
            raise ValueError(f"cu_seqlens must rise from 0 to the sequence length {seq_len}, got {bounds}")


class SpecCache:
    """Remembers the last value built for a spec object, so layers and recursion steps sharing one spec reuse it.

    Keyed by identity (``spec is last_spec``) plus ``key``: specs hold tensors, whose ``==`` is elementwise.
    """

    def __init__(self) -> None:
        self._last: tuple[AttnSpec, Hashable, Any] | None = None

    def get(self, spec: AttnSpec, key: Hashable, build: Callable[[], T]) -> T:
        if self._last is not None and self._last[0] is spec and self._last[1] == key:
            return self._last[2]
        value = build()
        self._last = (spec, key, value)
        return value

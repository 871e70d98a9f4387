"""Backend-neutral description of an attention pattern.

Cores and blocks never build masks: they pass an :class:`AttnSpec` down to the attention backend, which turns it into
kernel calls (block-diagonal varlen calls, a FlexAttention block mask, or a dense boolean mask for SDPA).
:func:`reference_mask` is the single, deliberately naive definition every backend is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor

AttnKind = Literal["bidirectional", "causal", "prefixlm"]
ATTN_KINDS: tuple[str, ...] = ("bidirectional", "causal", "prefixlm")


@dataclass(frozen=True, eq=False)  # compared by identity: backends cache masks per spec object
class AttnSpec:
    """How queries may look at keys.

    Layouts:
      * unpacked: a batch ``[B, T]`` of independent sequences; ``prefix_lens`` is ``[B]`` (prefixlm only).
      * packed: ``B == 1`` and ``cu_seqlens`` (int32 ``[n_docs + 1]``, starting at 0 and ending at ``T``) splits the
        single row into documents that never see each other; ``prefix_lens`` is then ``[n_docs]``.

    ``prefixlm``: within a document, the first ``prefix_len`` tokens (the instruction) see each other bidirectionally;
    later tokens (the response) see the whole prefix plus earlier response tokens. ``prefix_len == 0`` is plain causal.

    ``position_ids`` (``[B, T]``) feed RoPE; packed samples restart at 0. ``None`` means ``arange(T)`` for every row.
    ``max_seqlen`` is an optional host-side hint (longest document) so GPU varlen kernels need no device sync.
    ``plan`` is the host-side varlen plan of this spec (a :class:`hrmkit.nn.backends.packing.VarlenPlan`), built
    once per batch outside any compiled region by :func:`hrmkit.nn.backends.packing.with_plan`; backends that run
    block-diagonal kernels (``varlen``, ``xformers``) read it instead of planning (a host sync) themselves.
    """

    kind: AttnKind = "bidirectional"
    cu_seqlens: Tensor | None = None
    prefix_lens: Tensor | None = None
    position_ids: Tensor | None = None
    max_seqlen: int | None = None
    plan: Any = None

    def __post_init__(self) -> None:
        if self.kind not in ATTN_KINDS:
            raise ValueError(f"AttnSpec.kind must be one of {ATTN_KINDS}, got {self.kind!r}")
        if self.kind == "prefixlm" and self.prefix_lens is None:
            raise ValueError("AttnSpec.kind='prefixlm' needs prefix_lens (one length per sequence or packed document)")
        if self.kind != "prefixlm" and self.prefix_lens is not None:
            raise ValueError(f"AttnSpec.prefix_lens is only meaningful for kind='prefixlm', got kind={self.kind!r}")
        if self.cu_seqlens is not None and self.cu_seqlens.dim() != 1:
            raise ValueError(f"AttnSpec.cu_seqlens must be 1-D [n_docs + 1], got shape {tuple(self.cu_seqlens.shape)}")

    @property
    def packed(self) -> bool:
        return self.cu_seqlens is not None

    def positions(self, batch: int, seq_len: int, device: torch.device) -> Tensor:
        """Position ids ``[B, T]``: the given ones, per-document restarts for packed specs, else ``arange``."""
        if self.position_ids is not None:
            pos = self.position_ids if self.position_ids.dim() == 2 else self.position_ids.unsqueeze(0)
            return pos.expand(batch, -1)
        if self.cu_seqlens is not None:
            return positions_from_cu_seqlens(self.cu_seqlens.to(device), seq_len).unsqueeze(0).expand(batch, -1)
        return torch.arange(seq_len, device=device).unsqueeze(0).expand(batch, -1)

    def to(self, device: torch.device | str) -> AttnSpec:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, cu_seqlens=move(self.cu_seqlens), prefix_lens=move(self.prefix_lens),
                       position_ids=move(self.position_ids),
                       plan=None if self.plan is None else self.plan.to(torch.device(device)))


def positions_from_cu_seqlens(cu_seqlens: Tensor, seq_len: int) -> Tensor:
    """``[T]`` positions restarting at 0 at every document start (tokens past the last document keep counting)."""
    idx = torch.arange(seq_len, device=cu_seqlens.device)
    doc = torch.searchsorted(cu_seqlens[1:].contiguous(), idx, right=True).clamp(max=cu_seqlens.numel() - 2)
    return idx - cu_seqlens[doc].to(idx.dtype)


def reference_mask(spec: AttnSpec, batch: int, seq_len: int) -> Tensor:
    """Dense boolean mask ``[B, T, T]`` (``True`` = may attend), built with plain loops for readability.

    This is the oracle, not a fast path: tests compare every backend against naive attention with this mask.
    """
    if spec.cu_seqlens is not None:
        if batch != 1:
            raise ValueError(f"packed AttnSpec (cu_seqlens) needs batch size 1, got {batch}")
        bounds = [int(b) for b in spec.cu_seqlens.tolist()]
        if bounds[0] != 0 or bounds[-1] != seq_len or any(b > a for a, b in zip(bounds[1:], bounds[:-1])):
            raise ValueError(f"cu_seqlens must rise from 0 to the sequence length {seq_len}, got {bounds}")
        spans = [(0, bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    else:
        spans = [(b, 0, seq_len) for b in range(batch)]
    prefixes = None if spec.prefix_lens is None else [int(p) for p in spec.prefix_lens.reshape(-1).tolist()]
    if prefixes is not None and (len(prefixes) != len(spans) or min(prefixes) < 0):
        raise ValueError(f"prefix_lens must hold one non-negative length per {'document' if spec.packed else 'row'} "
                         f"({len(spans)}), got {prefixes}")
    mask = torch.zeros(batch, seq_len, seq_len, dtype=torch.bool)
    for doc_index, (b, start, end) in enumerate(spans):
        prefix = prefixes[doc_index] if prefixes is not None else 0
        for q in range(start, end):
            for k in range(start, end):
                if spec.kind == "bidirectional":
                    allowed = True
                elif spec.kind == "causal":
                    allowed = k <= q
                else:
                    allowed = k <= q or (k - start) < prefix
                mask[b, q, k] = allowed
    return mask

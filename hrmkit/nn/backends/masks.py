"""One vectorised "may query q see key k?" predicate, shared by FlexAttention (``mask_mod``) and SDPA (dense mask).

It is written with per-token lookup tables (document id, end of the document's prefix) so it broadcasts over index
grids and also runs under FlexAttention's vmap over scalar indices. :func:`hrmkit.nn.attn_spec.reference_mask` is the
independent loop-based oracle it is tested against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from hrmkit.nn.attn_spec import AttnSpec


@dataclass(frozen=True, eq=False)
class MaskPredicate:
    """``pred(b, q, k) -> bool`` for query row ``q`` (0-based among the ``q_len`` queries) and key ``k``.

    ``offset = kv_len - q_len`` puts the queries at the end of the keys (KV-cache decoding, bottom-right causal).
    ``doc`` (``[R, T]``) is only set for packed specs, ``prefix_end`` (``[R, T]``, indexed by key) only for prefixlm:
    key ``k`` is in its document's prefix iff ``k < prefix_end[b, k]``.
    """

    kind: str
    offset: int = 0
    doc: Tensor | None = None
    prefix_end: Tensor | None = None

    def __call__(self, b: Tensor, q: Tensor, k: Tensor) -> Tensor:
        if self.kind == "bidirectional":
            allowed = (q >= 0) & (k >= 0)  # all True, shaped like the broadcast of q and k
        else:
            allowed = k <= q + self.offset
        if self.prefix_end is not None:
            allowed = allowed | (k < self.prefix_end[b, k])
        if self.doc is not None:
            allowed = allowed & (self.doc[b, q] == self.doc[b, k])
        return allowed

    @property
    def mask_mod(self) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
        """FlexAttention's ``mask_mod(b, h, q, k)`` (same mask for every head).

        A plain function, not a bound method: flex tells mask_mod from score_mod by counting ``__code__`` arguments,
        and a method's ``self`` would make it look like a score_mod.
        """

        def mask_mod(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
            return self(b, q, k)

        return mask_mod


def mask_predicate(spec: AttnSpec, batch: int, q_len: int, kv_len: int, device: torch.device) -> MaskPredicate:
    """Build the lookup tables for ``spec`` on ``device`` (no host sync)."""
    if spec.packed or spec.kind == "prefixlm":
        if q_len != kv_len:
            raise ValueError(f"packed and prefixlm masks need q_len == kv_len, got {q_len} and {kv_len}")
    offset = kv_len - q_len
    if spec.cu_seqlens is None:
        prefix_end = None
        if spec.prefix_lens is not None:
            prefix_end = spec.prefix_lens.to(device=device, dtype=torch.long).reshape(batch, 1).expand(batch, kv_len)
        return MaskPredicate(spec.kind, offset, None, prefix_end)

    cu = spec.cu_seqlens.to(device=device, dtype=torch.long)
    idx = torch.arange(kv_len, device=device)
    # Tokens i with cu[d] <= i < cu[d + 1] belong to document d; empty documents are skipped naturally.
    doc = torch.searchsorted(cu[1:].contiguous(), idx, right=True)
    prefix_end = None
    if spec.prefix_lens is not None:
        n_docs = cu.numel() - 1
        doc_start = cu[doc.clamp(max=n_docs - 1)]
        prefixes = spec.prefix_lens.to(device=device, dtype=torch.long).reshape(-1)
        prefix_end = (doc_start + prefixes[doc.clamp(max=n_docs - 1)]).unsqueeze(0)
    return MaskPredicate(spec.kind, offset, doc.unsqueeze(0), prefix_end)


def dense_mask(spec: AttnSpec, batch: int, q_len: int, kv_len: int, device: torch.device) -> Tensor:
    """Boolean mask ``[B or 1, 1, q_len, kv_len]`` (``True`` = may attend) for ``F.scaled_dot_product_attention``."""
    pred = mask_predicate(spec, batch, q_len, kv_len, device)
    rows = batch if pred.prefix_end is not None else 1  # only per-row prefixes differ between unpacked rows
    b = torch.arange(rows, device=device).view(rows, 1, 1)
    q = torch.arange(q_len, device=device).view(1, q_len, 1)
    k = torch.arange(kv_len, device=device).view(1, 1, kv_len)
    return pred(b, q, k).expand(rows, q_len, kv_len).unsqueeze(1)

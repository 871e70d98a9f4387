"""``sdpa``: ``F.scaled_dot_product_attention`` on every device, forward and backward; the reference backend.

Plain and causal sequences keep SDPA's fused kernels (no mask tensor); packed or PrefixLM specs fall back to a dense
boolean mask from :mod:`.masks`, which costs O(T^2) memory and disables FlashAttention on CUDA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention.bias import causal_lower_right

from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.backends.base import ATTENTION, AttentionBackend, SpecCache
from hrmkit.nn.backends.masks import dense_mask


@ATTENTION.register("sdpa")
class SDPABackend(AttentionBackend):
    """Runs anywhere PyTorch runs, including KV-cache decoding (queries are the last ``q_len`` positions)."""

    name = "sdpa"

    def __init__(self) -> None:
        self._masks = SpecCache()  # a recursive core calls attention many times per batch with one spec

    def mask(self, spec: AttnSpec, batch: int, q_len: int, kv_len: int, device: torch.device) -> Tensor:
        build = lambda: dense_mask(spec, batch, q_len, kv_len, device)
        return self._masks.get(spec, (batch, q_len, kv_len, device), build)

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec, scale: float | None = None) -> Tensor:
        q_len, kv_len = q.shape[1], k.shape[1]
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # SDPA wants [B, H, T, D]
        if spec.packed or spec.kind == "prefixlm":
            mask = self.mask(spec, q.shape[0], q_len, kv_len, q.device)
            out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale)
        elif spec.kind == "causal" and q_len != kv_len:  # is_causal would align top-left: wrong for a KV cache
            out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=causal_lower_right(q_len, kv_len), scale=scale)
        else:
            out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=spec.kind == "causal", scale=scale)
        return out.transpose(1, 2)

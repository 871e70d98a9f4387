"""Naive fp64 attention and seeded random AttnSpecs: the oracle side of tests/test_attention.py."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hrmkit.nn.attn_spec import AttnSpec, reference_mask


def naive_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float | None = None) -> Tensor:
    """``softmax(q k^T * scale + mask) v`` in the input dtype; ``mask`` is boolean ``[B, Tq, Tk]``."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    scores = scores.masked_fill(~mask[:, None], float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v)


def oracle(q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec, scale: float | None = None) -> Tensor:
    return naive_attention(q, k, v, reference_mask(spec, q.shape[0], q.shape[1]), scale)


def packed_spec(kind: str, lens: list[int], prefixes: list[int] | None = None) -> AttnSpec:
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    return AttnSpec(kind, cu_seqlens=cu, prefix_lens=None if prefixes is None else torch.tensor(prefixes))


def random_spec(gen: torch.Generator, kind: str, packed: bool, overshoot: int = 0) -> tuple[AttnSpec, int, int]:
    """A spec with its ``(batch, seq_len)``: packed runs include empty docs and length-1 docs; prefix lengths go
    from 0 to the document length (plus ``overshoot``, to exercise clamping)."""
    randint = lambda lo, hi: int(torch.randint(lo, hi + 1, (), generator=gen))
    if packed:
        lens = [randint(0, 8) for _ in range(randint(1, 5))]
        if sum(lens) == 0:
            lens[0] = 1
        prefixes = [randint(0, n + overshoot) for n in lens] if kind == "prefixlm" else None
        return packed_spec(kind, lens, prefixes), 1, sum(lens)
    batch, seq_len = randint(1, 3), randint(1, 12)
    prefixes = torch.tensor([randint(0, seq_len + overshoot) for _ in range(batch)]) if kind == "prefixlm" else None
    return AttnSpec(kind, prefix_lens=prefixes), batch, seq_len


def qkv(batch: int, q_len: int, kv_len: int | None = None, heads: int = 2, dim: int = 8,
        dtype: torch.dtype = torch.float64, grad: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    kv_len = q_len if kv_len is None else kv_len
    q = torch.randn(batch, q_len, heads, dim, dtype=dtype)
    k, v = (torch.randn(batch, kv_len, heads, dim, dtype=dtype) for _ in range(2))
    return tuple(t.requires_grad_(grad) for t in (q, k, v))  # type: ignore[return-value]

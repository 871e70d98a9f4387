"""KV cache for generation: one key/value buffer per (module call, layer).

A recursive core revisits the same layers several times per token (HRM-Text: 8 calls × 16 layers), and every call
sees different hidden states, so each (call, layer) pair needs its own cache entry.
"""

from __future__ import annotations

import torch
from torch import Tensor


class LayerKV:
    """Growing key/value buffers ``[B, T, H, D]`` of one layer in one module call."""

    __slots__ = ("k", "v")

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append the new keys/values and return everything cached so far."""
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k, self.v = torch.cat([self.k, k], dim=1), torch.cat([self.v, v], dim=1)
        return self.k, self.v

    @property
    def seq_len(self) -> int:
        return 0 if self.k is None else self.k.shape[1]


class KVCache:
    """The per-(call, layer) caches of one generation run; pass the same instance to every decoding step."""

    def __init__(self) -> None:
        self._layers: dict[tuple[int, int], LayerKV] = {}

    def layer(self, call: int, layer: int) -> LayerKV:
        return self._layers.setdefault((call, layer), LayerKV())

    @property
    def seq_len(self) -> int:
        """Tokens already cached (0 before the prefill)."""
        return max((kv.seq_len for kv in self._layers.values()), default=0)

    def __len__(self) -> int:
        return len(self._layers)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for kv in self._layers.values() for t in (kv.k, kv.v) if t is not None)

"""KV caches for generation: one key/value buffer per (module call, layer).

A recursive core revisits the same layers several times per token (HRM-Text: 8 calls × 16 layers), and every call
sees different hidden states, so each (call, layer) pair needs its own cache entry.

Two kinds, behind one method (:meth:`LayerKV.attend`, which the attention module calls instead of the backend):

* :class:`KVCache` grows by concatenation and masks through the :class:`AttnSpec` (any backend). Simple, exact, the
  reference; every step reallocates every buffer and changes shapes, so it cannot be compiled into one graph.
* :class:`StaticKVCache` is allocated once per generation call at its final length (``[B, H, max_len, D]`` per entry)
  and written in place at a cursor. Buffer shapes never change between decode steps, which is what lets the decode
  step compile to one graph (and run as a CUDA graph); on the CPU the decode attention reads only the filled slots
  (:meth:`StaticKVCache.window`), one more graph with that length dynamic. Rows may be left-padded: the cache
  knows each row's padding and builds the PrefixLM mask itself (the prompt of every row ends at the same slot, the
  prefix boundary).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from hrmkit.nn.attn_spec import AttnSpec

# A layer's attention call: (q, k, v, spec) -> out, e.g. ``BackendChoice.attend``.
AttendFn = Callable[[Tensor, Tensor, Tensor, AttnSpec], Tensor]


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

    def attend(self, q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec, attend: AttendFn) -> Tensor:
        """Cache the new keys/values, then attend ``q`` ``[B, Tq, H, D]`` over everything cached with the layer's
        backend ``attend`` (``spec`` masks)."""
        k, v = self.update(k, v)
        return attend(q, k, v, spec)

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


class StaticLayerKV:
    """Pre-allocated keys/values ``[B, H, max_len, D]`` of one (call, layer), written in place at the cache cursor."""

    def __init__(self, cache: StaticKVCache) -> None:
        self.cache = cache
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def attend(self, q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec, attend: AttendFn | None = None) -> Tensor:
        """Write ``k, v`` ``[B, Tq, H, D]`` at slots ``cursor .. cursor + Tq`` and attend over the buffer.

        ``spec`` and ``attend`` are not used: the mask comes from the cache (padding, prefix, cursor). The CPU attends
        over the written slots only (a decode step with :func:`decode_attention`, the prefill with SDPA); other
        devices attend over the whole buffer with SDPA, whose shapes then never change (CUDA graphs).
        """
        cache = self.cache
        if self.k is None:  # first use (the eager prefill): allocate at the final length, in the compute dtype
            shape = (k.shape[0], k.shape[2], cache.max_len, k.shape[3])
            # CPU reads only written slots (the prefill's and the decode window's); SDPA elsewhere reads the whole
            # buffer under a mask, and 0 x garbage could be NaN, so those slots must hold zeros
            new = torch.empty if k.device.type == "cpu" else torch.zeros
            self.k = new(shape, dtype=k.dtype, device=k.device)
            self.v = new(shape, dtype=v.dtype, device=v.device)
            cache.mark_static(self.k, self.v)
        q_len = q.shape[1]
        slots = cache.cursor + cache.slots[:q_len]
        self.k.index_copy_(2, slots, k.transpose(1, 2).to(self.k.dtype))
        self.v.index_copy_(2, slots, v.transpose(1, 2).to(self.v.dtype))
        if q_len == 1 and q.device.type == "cpu":
            n = cache.window()  # the filled slots only: the step reads less cache (one graph, dynamic length)
            return decode_attention(q.transpose(1, 2), self.k[:, :, :n], self.v[:, :, :n],
                                    cache.mask(1)[..., :n]).transpose(1, 2)
        if q.device.type == "cpu":  # the eager prefill: no query sees a slot past the ones written now
            n = min(cache.filled + q_len, cache.max_len)
            out = F.scaled_dot_product_attention(q.transpose(1, 2), self.k[:, :, :n], self.v[:, :, :n],
                                                 attn_mask=cache.mask(q_len)[..., :n])
        else:
            out = F.scaled_dot_product_attention(q.transpose(1, 2), self.k, self.v, attn_mask=cache.mask(q_len))
        return out.transpose(1, 2)


def decode_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor) -> Tensor:
    """One query per row over a static cache (``q`` ``[B, H, 1, D]``, ``k``/``v`` ``[B, H, L, D]``, ``allowed``
    boolean, broadcastable to ``[B, H, 1, L]``) as two matmuls and an fp32 softmax. Why: on the CPU, SDPA's flash
    kernel spends ~0.45 ms per call on this shape (batch 8, 128 slots), a third of a compiled decode step; with
    this form batch-8 decoding went from 1.38-1.42x to 1.54-1.56x transformers' speed (docs/benchmarks.md)."""
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * (q.shape[-1] ** -0.5)
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    return torch.matmul(probs.to(v.dtype), v)


class StaticKVCache:
    """Fixed-size per-(call, layer) caches for one batch of left-padded prompts.

    Args:
        pad: ``[B]`` left-padding of every row (prompt of row ``r`` fills slots ``pad[r] .. prompt_len``).
        prompt_len: the padded prompt length: slot ``prompt_len`` is where the first generated token goes, and
            slots before it form the PrefixLM prefix (bidirectional among a row's real tokens).
        max_len: slots per entry (``prompt_len`` + new tokens, any larger value works too).
        prefix: ``False`` makes the prompt causal as well (a causal-attention model).

    The mask of a query at slot ``s`` of row ``r`` admits key slot ``j`` when ``j >= pad[r]`` and
    (``j <= s`` or ``j < prompt_len`` for a PrefixLM prompt); a padding query sees only itself, so its (never
    used) output stays finite. ``cursor`` (a 0-d tensor, advanced by :meth:`advance`) is the next slot to write.
    """

    def __init__(self, pad: Tensor, prompt_len: int, max_len: int, prefix: bool = True) -> None:
        if pad.dim() != 1:
            raise ValueError(f"StaticKVCache.pad must be [B], got shape {tuple(pad.shape)}")
        if not 0 < prompt_len <= max_len:
            raise ValueError(f"StaticKVCache needs 0 < prompt_len <= max_len, got {prompt_len} and {max_len}")
        device = pad.device
        self.max_len, self.prompt_len = int(max_len), int(prompt_len)
        self.pad = pad.to(torch.long)
        self.slots = torch.arange(self.max_len, device=device)
        self.cursor = torch.zeros((), dtype=torch.long, device=device)
        self.prefix_end = torch.tensor(self.prompt_len if prefix else 0, dtype=torch.long, device=device)
        self.filled = 0  # host-side mirror of cursor (never read inside a compiled step)
        self._layers: dict[tuple[int, int], StaticLayerKV] = {}
        self._mask: tuple[int, int, Tensor] | None = None

    def layer(self, call: int, layer: int) -> StaticLayerKV:
        kv = self._layers.get((call, layer))
        if kv is None:
            kv = self._layers[(call, layer)] = StaticLayerKV(self)
        return kv

    def positions(self, q_len: int) -> Tensor:
        """RoPE position ids ``[B, q_len]`` of the next ``q_len`` slots (a row's first real token is position 0)."""
        return (self.cursor + self.slots[:q_len] - self.pad[:, None]).clamp_min(0)

    def mask(self, q_len: int) -> Tensor:
        """Boolean ``[B, 1, q_len, max_len]`` (``True`` = may attend) for queries at the next ``q_len`` slots.

        Eager calls reuse one mask per step across all (call, layer) entries; a compiled step recomputes it in-graph,
        where it is fused and deduplicated.
        """
        compiling = torch.compiler.is_compiling()
        if not compiling and self._mask is not None and self._mask[:2] == (self.filled, q_len):
            return self._mask[2]
        query = (self.cursor + self.slots[:q_len])[:, None]  # [Tq, 1]
        keys = self.slots[None, :]  # [1, L]
        seen = (keys <= query) | (keys < self.prefix_end)
        pad = self.pad[:, None, None]  # [B, 1, 1]
        real = (keys[None] >= pad) & (query[None] >= pad)  # [B, Tq, L]: real query and real key
        mask = ((seen[None] & real) | (keys == query)[None]).unsqueeze(1)
        if not compiling:
            self._mask = (self.filled, q_len, mask)
        return mask

    def window(self) -> int:
        """Slots a decode query may see: every written slot and the one being written (``filled + 1``). A host int
        read inside the compiled step: torch.compile specialises on its first value, then recompiles once with the
        length dynamic (automatic dynamic shapes), so a generation costs at most two graphs."""
        return min(self.filled + 1, self.max_len)

    def advance(self, q_len: int) -> None:
        """Move the cursor past the ``q_len`` slots the last forward wrote."""
        if self.filled + q_len > self.max_len:
            raise ValueError(f"StaticKVCache is full: {self.filled} + {q_len} slots > max_len {self.max_len}")
        self.cursor.add_(q_len)
        self.filled += q_len

    def mark_static(self, *buffers: Tensor) -> None:
        """Tell torch.compile the buffers keep their address (CUDA graphs then need no copies of them)."""
        if buffers[0].device.type == "cuda":
            for t in buffers:
                torch._dynamo.mark_static_address(t)

    @property
    def seq_len(self) -> int:
        """Tokens already cached (host-side count)."""
        return self.filled

    def __len__(self) -> int:
        return len(self._layers)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for kv in self._layers.values() for t in (kv.k, kv.v) if t is not None)

"""Transformer block (post-norm for HRM-Symbolic/TRM, pre-norm for HRM-Text) and a stack of them.

A :class:`Stack` is what one H or L "module call" runs. With ``exit_norm`` it ends in a parameterless RMSNorm:
pre-norm blocks + exit norm is MagicNorm (HRM-Text §2.1.1), which keeps the recurrent state at unit RMS however
many times the stack is applied.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from hrmkit.nn.attention import Attention
from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.cache import KVCache
from hrmkit.nn.init import InitScheme
from hrmkit.nn.mlp import SwiGLU, TokenMixer
from hrmkit.nn.norm import rms_norm

BlockNorm = Literal["post", "pre"]
Mixer = Literal["attention", "mlp"]


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, expansion: float = 4.0, norm: BlockNorm = "post",
                 eps: float = 1e-5, gated: bool = False, fused_qkv: bool = True, init: InitScheme = "trunc2",
                 mixer: Mixer = "attention", seq_len: int | None = None, backend: str = "auto") -> None:
        super().__init__()
        if norm not in ("post", "pre"):
            raise ValueError(f"block norm must be 'post' or 'pre', got {norm!r}")
        self.norm, self.eps, self.mixer = norm, eps, mixer
        if mixer == "attention":
            self.attn = Attention(dim, num_heads, gated=gated, fused_qkv=fused_qkv, init=init, backend=backend)
        elif mixer == "mlp":
            if seq_len is None:
                raise ValueError("mixer='mlp' (TRM MLP-t) needs seq_len: the fixed number of positions it mixes")
            self.token_mlp = TokenMixer(seq_len, expansion, init, eps, post_norm=norm == "post")
        else:
            raise ValueError(f"mixer must be 'attention' or 'mlp', got {mixer!r}")
        self.mlp = SwiGLU(dim, expansion, init)

    def forward(self, h: Tensor, spec: AttnSpec, rope=None, kv=None) -> Tensor:
        if self.mixer == "mlp":
            h = self.token_mlp(h)
        elif self.norm == "post":
            h = rms_norm(h + self.attn(h, spec, rope, kv), self.eps)
        else:
            h = h + self.attn(rms_norm(h, self.eps), spec, rope, kv)
        if self.norm == "post":
            return rms_norm(h + self.mlp(h), self.eps)
        return h + self.mlp(rms_norm(h, self.eps))


class Stack(nn.Module):
    """``num_layers`` blocks, optionally capped by the MagicNorm exit RMSNorm."""

    def __init__(self, num_layers: int, exit_norm: bool = False, **block_kwargs) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"a stack needs at least one layer, got num_layers={num_layers}")
        self.exit_norm = exit_norm
        self.eps = block_kwargs.get("eps", 1e-5)
        self.layers = nn.ModuleList(TransformerBlock(**block_kwargs) for _ in range(num_layers))

    def forward(self, h: Tensor, spec: AttnSpec, rope=None, cache: KVCache | None = None, call: int = 0) -> Tensor:
        for i, layer in enumerate(self.layers):
            h = layer(h, spec, rope, None if cache is None else cache.layer(call, i))
        return rms_norm(h, self.eps) if self.exit_norm else h

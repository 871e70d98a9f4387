"""SwiGLU feed-forward, over channels (every core) or over sequence positions (TRM's MLP-t token mixer)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from hrmkit.nn.init import InitScheme
from hrmkit.nn.linear import Linear
from hrmkit.nn.norm import rms_norm


def swiglu_intermediate(dim: int, expansion: float) -> int:
    """``round_up_256(round(expansion · dim · 2/3))``: 512→1536, 1024→2816, 1280→3584, 1536→4096."""
    inter = round(expansion * dim * 2 / 3)
    return -(-inter // 256) * 256


class SwiGLU(nn.Module):
    """``down(silu(x W_g) ⊙ x W_u)`` with a fused gate|up projection (the order HF ``hrm_text`` weights use)."""

    def __init__(self, dim: int, expansion: float, init: InitScheme = "trunc2") -> None:
        super().__init__()
        self.intermediate = swiglu_intermediate(dim, expansion)
        self.gate_up_proj = Linear(dim, 2 * self.intermediate, init)
        self.down_proj = Linear(self.intermediate, dim, init)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class TokenMixer(nn.Module):
    """TRM's MLP-t: a SwiGLU whose "channels" are the ``seq_len`` positions, applied per hidden channel.

    Post-norm it normalises across *positions* (the last axis while transposed), exactly as TRM does; pre-norm it
    normalises the same axis before mixing. Needs a fixed sequence length, so it suits small fixed grids (Sudoku).
    """

    def __init__(self, seq_len: int, expansion: float, init: InitScheme = "trunc2", eps: float = 1e-5,
                 post_norm: bool = True) -> None:
        super().__init__()
        self.seq_len, self.eps, self.post_norm = seq_len, eps, post_norm
        self.mlp = SwiGLU(seq_len, expansion, init)

    def forward(self, h: Tensor) -> Tensor:
        if h.shape[1] != self.seq_len:
            raise ValueError(f"token-mixing MLP was built for seq_len={self.seq_len}, got a sequence of {h.shape[1]}")
        t = h.transpose(1, 2)  # [B, D, T]
        if self.post_norm:
            t = rms_norm(t + self.mlp(t), self.eps)
        else:
            t = t + self.mlp(rms_norm(t, self.eps))
        return t.transpose(1, 2)

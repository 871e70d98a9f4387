"""Rotary position embedding, rotate-half (GPT-NeoX) layout, applied in fp32 with per-sample position ids."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RotaryEmbedding(nn.Module):
    """Holds the fp32 cos/sin table ``[max_seq_len, head_dim]`` (not saved in checkpoints: it is derived)."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
        self.head_dim, self.max_seq_len, self.theta = head_dim, max_seq_len, theta
        cos, sin = self._table(torch.device("cpu"))
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _table(self, device: torch.device) -> tuple[Tensor, Tensor]:
        even = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device)
        inv_freq = 1.0 / (self.theta ** (even / self.head_dim))
        freqs = torch.outer(torch.arange(self.max_seq_len, dtype=torch.float32, device=device), inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos(), emb.sin()

    def reset_parameters(self) -> None:
        """Recompute the table (after meta-device init or a ``to_empty``)."""
        cos, sin = self._table(self.cos.device)
        self.cos, self.sin = cos, sin

    def forward(self, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        """cos/sin ``[B, T, 1, head_dim]`` (fp32) for position ids ``[B, T]``."""
        if not torch.compiler.is_compiling() and position_ids.numel() and int(position_ids.max()) >= self.max_seq_len:
            raise ValueError(
                f"position id {int(position_ids.max())} exceeds the RoPE table (max_seq_len={self.max_seq_len}); "
                "raise the core's max_seq_len"
            )
        return self.cos[position_ids].unsqueeze(2), self.sin[position_ids].unsqueeze(2)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, max_seq_len={self.max_seq_len}, theta={self.theta}"


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` ``[B, T, H, D]`` in fp32 and cast back to its dtype."""
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)

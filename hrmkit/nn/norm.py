"""Parameterless RMSNorm: the only normalisation HRM, TRM and HRM-Text use (no learnable gain, computed in fp32)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def rms_norm(x: Tensor, eps: float = 1e-6, dim: int = -1) -> Tensor:
    """``x / sqrt(mean(x²) + eps)`` over ``dim``, in fp32 so bf16 states stay bounded across many recursion calls."""
    xf = x.float()
    out = xf * torch.rsqrt(xf.pow(2).mean(dim=dim, keepdim=True) + eps)
    return out.to(x.dtype)


class RMSNorm(nn.Module):
    """Module form of :func:`rms_norm`; it owns no parameters (MagicNorm's exit norm and every block norm)."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"

"""Bias-free linear layer with fp32 master weights cast to the activation dtype at use.

This is HRM's ``CastedLinear``: parameters (and so optimizer state) stay fp32 while the matmul runs in whatever dtype
the activations arrive in (bf16 on GPU). Under Lightning's ``bf16-mixed`` autocast the cast is a no-op.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrmkit.nn.init import InitScheme, lecun_std, trunc_normal_


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, init: InitScheme = "trunc2", std: float | None = None,
                 device=None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.init = in_features, out_features, init
        self.std = lecun_std(in_features) if std is None else std
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=torch.float32, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        trunc_normal_(self.weight, self.std, self.init)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, init={self.init}, std={self.std:.4g}"


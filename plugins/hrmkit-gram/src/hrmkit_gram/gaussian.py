"""Diagonal Gaussian pieces of the stochastic transition: a (μ, log σ) head, the reparameterised sample and the KL."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG_SIGMA_MIN, LOG_SIGMA_MAX = -7.0, 2.0


class GaussianHead(nn.Module):
    """Features → (μ, log σ) of a diagonal Gaussian over ``dim`` channels, per position.

    It starts at μ = 0 and σ = ``init_sigma`` for every input (zero weights), so a fresh prior and posterior agree
    (KL = 0) and the core begins as its deterministic skeleton plus small noise. Parameters are held directly
    (not in a sub-``nn.Linear``) so that the core's ``reset_parameters`` after meta-device init restores exactly
    this start.
    """

    def __init__(self, in_features: int, dim: int, init_sigma: float) -> None:
        super().__init__()
        if init_sigma <= 0:
            raise ValueError(f"init_sigma must be > 0, got {init_sigma}")
        self.dim, self.init_sigma = dim, init_sigma
        self.weight = nn.Parameter(torch.empty(2 * dim, in_features))
        self.bias = nn.Parameter(torch.empty(2 * dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.zero_()
            self.bias[: self.dim].zero_()
            self.bias[self.dim:].fill_(math.log(self.init_sigma))

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        out = F.linear(features, self.weight.to(features.dtype), self.bias.to(features.dtype))
        mu, log_sigma = out.chunk(2, dim=-1)
        return mu, log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)


def gaussian_kl(mu_q: Tensor, log_sigma_q: Tensor, mu_p: Tensor, log_sigma_p: Tensor) -> Tensor:
    """KL(q ‖ p) per element for diagonal Gaussians, computed in fp32."""
    mu_q, log_sigma_q, mu_p, log_sigma_p = (t.float() for t in (mu_q, log_sigma_q, mu_p, log_sigma_p))
    var_ratio = torch.exp(2 * (log_sigma_q - log_sigma_p))
    return log_sigma_p - log_sigma_q + 0.5 * (var_ratio + (mu_q - mu_p).square() * torch.exp(-2 * log_sigma_p) - 1)


def reparameterise(mu: Tensor, log_sigma: Tensor, scale: float = 1.0) -> Tensor:
    """``μ + scale · σ · ε`` with ε ~ N(0, I): a sample that gradients flow through."""
    return mu + scale * torch.exp(log_sigma) * torch.randn_like(mu)

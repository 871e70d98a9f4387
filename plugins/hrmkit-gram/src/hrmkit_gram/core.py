"""GRAM-style core: HRM whose high-level transition is sampled, trained by amortised variational inference.

After every H update the deterministic proposal ``u_t = H(z_H + z_L)`` becomes a Gaussian latent

* prior (inference):       ``h_t ~ N(u_t + μ_p(u_t), σ_p(u_t)²)``
* posterior (training):    ``h_t ~ N(u_t + μ_q(u_t, y), σ_q(u_t, y)²)``, y = the task's embedded labels

sampled with the reparameterisation trick. The L updates stay deterministic (HRM's ``z_L ← L(z_L + z_H + x)``).
The ELBO is the task's reconstruction loss plus ``kl_weight · Σ_t KL(q ‖ p)``; the KL is reported through the core
contract's auxiliary-loss channel (``ctx.add_aux_loss("kl", ...)``) as nats per position (summed over channels,
averaged over positions and the batch), the same per-token scale as the task's cross-entropy. Transitions outside
the gradient horizon still sample and count towards the KL, without gradient (truncated BPTT, as HRM).

At inference there are no targets: each forward draws one trajectory from the prior, so a task can sample N
trajectories and vote (``PuzzleTask(num_samples=N)``). Facts: specs/hrm-text.md §10 (GRAM, arXiv 2605.19376).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from hrmkit.cores import HRM, CallContext, State
from hrmkit_gram.gaussian import GaussianHead, gaussian_kl, reparameterise


class GRAM(HRM):
    """HRM skeleton (all of :class:`hrmkit.cores.HRM`'s options) with a stochastic high-level transition."""

    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(HRM.variants["tiny"]),
        "sudoku": dict(HRM.variants["sudoku"]),
    }
    stochastic: ClassVar[bool] = True
    uses_targets: ClassVar[bool] = True

    def __init__(self, kl_weight: float = 1.0, init_sigma: float = 0.1, temperature: float = 1.0,
                 **kwargs: Any) -> None:
        """
        Args:
            kl_weight: weight β of the KL term of the ELBO (1.0 = the plain ELBO).
            init_sigma: standard deviation of prior and posterior at initialisation (both start equal: KL = 0).
            temperature: scale of the prior noise at inference (0 = the mean trajectory, no sampling).
            **kwargs: HRM's options (H_cycles, L_cycles, H_layers, L_layers, injection, shared) and the shared core
                options of :class:`hrmkit.cores.RecursiveCore`.
        """
        super().__init__(**kwargs)
        if kl_weight < 0:
            raise ValueError(f"GRAM kl_weight must be >= 0, got {kl_weight}")
        if temperature < 0:
            raise ValueError(f"GRAM temperature must be >= 0, got {temperature}")
        self.kl_weight, self.temperature = kl_weight, temperature
        d = self.hidden_size
        self.prior = GaussianHead(d, d, init_sigma)
        self.posterior = GaussianHead(2 * d, d, init_sigma)

    def call(self, kind: str, k: int, i: int, x: Tensor, state: State, ctx: CallContext) -> State:
        new = super().call(kind, k, i, x, state, ctx)
        if kind != "H":
            return new
        return {"z_H": self.transition(new["z_H"], ctx), "z_L": new["z_L"]}

    def transition(self, u: Tensor, ctx: CallContext) -> Tensor:
        """Sample ``h_t`` around the proposal ``u``: from the posterior when the task gave targets, else the prior."""
        mu_p, log_sigma_p = self.prior(u)
        if ctx.targets is None:
            mu, log_sigma, scale = mu_p, log_sigma_p, self.temperature
        else:
            mu, log_sigma = self.posterior(torch.cat([u, ctx.targets.to(u.dtype)], dim=-1))
            kl = gaussian_kl(mu, log_sigma, mu_p, log_sigma_p).sum(-1).mean()
            ctx.add_aux_loss("kl", self.kl_weight * kl)
            scale = 1.0
        if not ctx.sample or scale == 0:
            return u + mu
        return u + reparameterise(mu, log_sigma, scale)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kl_weight={self.kl_weight}, temperature={self.temperature}"

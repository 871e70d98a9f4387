"""hrmkit-gram's own tests: hrmkit's shared core contract (one import) plus the Gaussian pieces of the transition.

Run with ``pytest plugins/hrmkit-gram/tests`` once the plugin is installed (``pip install -e plugins/hrmkit-gram``).
"""

import math

import torch
from hrmkit_gram.gaussian import GaussianHead, gaussian_kl, reparameterise

from hrmkit.cores import build_core
from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.testing import CoreCase, CoreContract


class TestGRAMContract(CoreContract):
    case = CoreCase("gram")


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mq, lq, mp, lp = (torch.randn(3, 4, generator=g) for _ in range(4))
    q = torch.distributions.Normal(mq, lq.exp())
    p = torch.distributions.Normal(mp, lp.exp())
    torch.testing.assert_close(gaussian_kl(mq, lq, mp, lp), torch.distributions.kl_divergence(q, p))


def test_head_starts_at_zero_mean_and_init_sigma_for_any_input():
    head = GaussianHead(6, 3, init_sigma=0.2)
    mu, log_sigma = head(torch.randn(2, 5, 6))
    assert mu.abs().max() == 0
    torch.testing.assert_close(log_sigma, torch.full_like(log_sigma, math.log(0.2)))


def test_reparameterised_sample_carries_gradient_to_mean_and_scale():
    mu = torch.zeros(1000, requires_grad=True)
    log_sigma = torch.full((1000,), math.log(2.0), requires_grad=True)
    torch.manual_seed(0)
    z = reparameterise(mu, log_sigma)
    assert abs(z.std().item() - 2.0) < 0.15
    z.square().mean().backward()
    assert mu.grad is not None and log_sigma.grad.abs().sum() > 0


def test_posterior_only_with_targets_and_kl_is_zero_at_initialisation():
    core = build_core("gram", "tiny")
    x = torch.randn(2, 5, core.hidden_size)
    core(x, core.initial_state(x), AttnSpec())
    assert core.aux_losses == {}  # no targets: the prior, nothing to add to the loss
    core(x, core.initial_state(x), AttnSpec(), targets=torch.randn_like(x))
    assert set(core.aux_losses) == {"kl"} and core.aux_losses["kl"].item() == 0.0  # q = p at initialisation


def test_temperature_zero_is_the_mean_trajectory():
    core = build_core("gram", "tiny", temperature=0.0).eval()
    x = torch.randn(1, 4, core.hidden_size)
    with core.deterministic():
        mean = core(x, core.initial_state(x), AttnSpec())[1]
    torch.testing.assert_close(core(x, core.initial_state(x), AttnSpec())[1], mean)

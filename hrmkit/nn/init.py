"""Truncated LeCun-normal initialisers of the two reference systems.

Both scale to std = 1/sqrt(fan_in) but truncate differently, and the difference is visible in loss curves at init, so
the scheme is a core option rather than a detail:

* ``trunc2`` (HRM-Symbolic / TRM): a true normal truncated at ±2σ, rescaled so the *post-truncation* std equals ``std``.
* ``fmod3`` (HRM-Text): draw N(0, 1), wrap into (-3, 3) with ``fmod``, multiply by ``1.014762601732121 · std``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

InitScheme = Literal["trunc2", "fmod3"]
INIT_SCHEMES: tuple[str, ...] = ("trunc2", "fmod3")

_FMOD3_GAIN = 1.014762601732121


def _truncated_std(lower: float, upper: float) -> float:
    """Std of a standard normal truncated to [lower, upper]."""
    pdf = lambda x: math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    z = cdf(upper) - cdf(lower)
    mean = (pdf(lower) - pdf(upper)) / z
    var = 1 + (lower * pdf(lower) - upper * pdf(upper)) / z - mean**2
    return math.sqrt(var)


_TRUNC2_STD = _truncated_std(-2.0, 2.0)


@torch.no_grad()
def trunc_normal_(t: Tensor, std: float, scheme: InitScheme = "trunc2") -> Tensor:
    """Fill ``t`` in place with the scheme's truncated normal of standard deviation ``std``."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init scheme must be one of {INIT_SCHEMES}, got {scheme!r}")
    if std == 0:
        return t.zero_()
    if t.is_meta:
        return t
    if scheme == "trunc2":
        s = std / _TRUNC2_STD
        return torch.nn.init.trunc_normal_(t, mean=0.0, std=s, a=-2 * s, b=2 * s)
    sample = torch.randn(t.shape, dtype=torch.float32, device=t.device).fmod_(3.0).mul_(_FMOD3_GAIN * std)
    return t.copy_(sample)


def lecun_std(fan_in: int) -> float:
    return 1.0 / math.sqrt(fan_in)

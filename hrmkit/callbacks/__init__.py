"""Lightning callbacks that hrmkit adds on top of the Trainer (never a second training loop)."""

from hrmkit.callbacks.act_stats import ACTStats
from hrmkit.callbacks.deep_credit import DeepCreditWarmup, deep_credit_bp_steps
from hrmkit.callbacks.ema import EMA
from hrmkit.callbacks.magicnorm import HealthProblem, MagicNormError, MagicNormHealth, MagicNormWarning

__all__ = ["EMA", "ACTStats", "DeepCreditWarmup", "HealthProblem", "MagicNormError", "MagicNormHealth",
           "MagicNormWarning", "deep_credit_bp_steps"]

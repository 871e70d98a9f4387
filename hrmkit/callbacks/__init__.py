"""Lightning callbacks that hrmkit adds on top of the Trainer (never a second training loop)."""

from hrmkit.callbacks.act_stats import ACTStats
from hrmkit.callbacks.deep_credit import DeepCreditWarmup, deep_credit_bp_steps
from hrmkit.callbacks.ema import EMA
from hrmkit.callbacks.learning_rates import LearningRates
from hrmkit.callbacks.magicnorm import HealthProblem, MagicNormError, MagicNormHealth, MagicNormWarning
from hrmkit.callbacks.nonfinite import NonFiniteGuard
from hrmkit.callbacks.predictions import PredictionWriter
from hrmkit.callbacks.rng_state import RNGState
from hrmkit.callbacks.throughput import Throughput

__all__ = ["EMA", "ACTStats", "DeepCreditWarmup", "HealthProblem", "LearningRates", "MagicNormError",
           "MagicNormHealth", "MagicNormWarning", "NonFiniteGuard", "PredictionWriter", "RNGState", "Throughput",
           "deep_credit_bp_steps"]

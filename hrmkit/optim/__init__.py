"""Optimizers and schedules of the reference systems: exact AdamATan2, sparse SignSGD for puzzle embeddings,
warmup/cosine lr multipliers, and the parameter EMA used by :class:`hrmkit.callbacks.EMA`."""

from hrmkit.optim.adam_atan2 import AdamATan2
from hrmkit.optim.ema import ParameterEMA
from hrmkit.optim.schedules import warmup_constant, warmup_cosine, warmup_cosine_scheduler
from hrmkit.optim.sign_sgd import SparseSignSGD

__all__ = [
    "AdamATan2",
    "ParameterEMA",
    "SparseSignSGD",
    "warmup_constant",
    "warmup_cosine",
    "warmup_cosine_scheduler",
]

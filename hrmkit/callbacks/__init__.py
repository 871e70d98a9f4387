"""Lightning callbacks that hrmkit adds on top of the Trainer (never a second training loop)."""

from hrmkit.callbacks.ema import EMA

__all__ = ["EMA"]

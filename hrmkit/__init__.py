"""hrmkit: a Lightning framework for recursive reasoning models (HRM, TRM, HRM-Text and friends)."""

__version__ = "0.1.0.dev0"

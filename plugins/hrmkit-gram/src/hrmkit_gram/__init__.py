"""hrmkit-gram: a GRAM-style stochastic recursive core, shipped as an hrmkit plugin (entry point ``gram``)."""

from hrmkit_gram.core import GRAM

__all__ = ["GRAM"]

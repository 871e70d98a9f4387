"""Scale-out: strategy presets (DDP, FSDP2) and the one place where a task's model is sharded and compiled.

Importing this package registers the named presets in Lightning's ``StrategyRegistry``.
"""

from hrmkit.parallel.apply import compile_core, parallelize, plan_for, shard
from hrmkit.parallel.plan import ParallelPlan
from hrmkit.parallel.strategies import DDP, FSDP2, PRESETS, register_presets

register_presets()

__all__ = ["DDP", "FSDP2", "PRESETS", "ParallelPlan", "compile_core", "parallelize", "plan_for", "register_presets",
           "shard"]

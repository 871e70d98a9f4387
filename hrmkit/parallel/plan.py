"""What a strategy preset asks the task to do to its model: shard it (FSDP2) and/or compile it.

The plan is plain data carried by the strategy; :func:`hrmkit.parallel.apply.parallelize` is the one place that
acts on it, from the task's ``configure_model`` (torchtitan's "parallelize once, in one function" rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from hrmkit.dtypes import dtype_table

_DTYPES = dtype_table("bfloat16", "float16", "float32", short=True)


def parse_dtype(value: str | None, what: str) -> torch.dtype | None:
    """``"bfloat16"``-style names (YAML-friendly) to a torch dtype; None stays None (keep the parameter dtype)."""
    if value is None:
        return None
    try:
        return _DTYPES[str(value).lower()]
    except KeyError:
        raise ValueError(f"{what}={value!r} is not a dtype name; expected one of {sorted(_DTYPES)} or null") from None


@dataclass(frozen=True)
class ParallelPlan:
    """How to transform the task's model before training.

    Attributes:
        shard: apply FSDP2 ``fully_shard`` (per Transformer block, then per top-level child of the task).
        param_dtype: FSDP2 compute dtype of the gathered parameters (masters stay fp32); None = unchanged.
        reduce_dtype: FSDP2 dtype of the gradient reduce-scatter; None = the param dtype.
        reshard_after_forward: free gathered block weights after each call. False (default) keeps them for the
            next recursion call: HRM calls each block 2-6 times per forward, so True would re-all-gather each time.
        compile: ``torch.compile`` the core (whole core without sharding; per block after sharding, so FSDP2's
            hooks stay outside the graphs).
        compile_kwargs: extra ``torch.compile`` arguments (``mode``, ``backend``, ``fullgraph``, ``dynamic``).
    """

    shard: bool = False
    param_dtype: torch.dtype | None = None
    reduce_dtype: torch.dtype | None = None
    reshard_after_forward: bool = False
    compile: bool = False
    compile_kwargs: dict[str, Any] = field(default_factory=dict)

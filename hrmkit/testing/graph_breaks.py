"""How a module traces under torch.compile: the graph count and every graph break, with its reason.

Shared by tests/test_attention_compile.py and benchmarks/gpu_check.py, which both hold the compiled core to "one
graph, no break" on every attention path they can run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class TraceReport:
    """``torch._dynamo.explain`` reduced to what a check asserts on."""

    graphs: int
    breaks: int
    reasons: list[str] = field(default_factory=list)  # the first line of each break reason

    @property
    def clean(self) -> bool:
        return self.graphs == 1 and self.breaks == 0


def trace_report(module: nn.Module, *args: Any, **kwargs: Any) -> TraceReport:
    """Trace ``module(*args, **kwargs)`` once with dynamo (no code generation) and report graphs and breaks.

    Resets dynamo first, so earlier compilations in the process cannot hide a break behind a cached graph.
    """
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(module)(*args, **kwargs)
    reasons = [str(getattr(r, "reason", r)).strip().splitlines()[0] for r in explanation.break_reasons]
    return TraceReport(explanation.graph_count, explanation.graph_break_count, reasons)


class GraphCounter:
    """A dynamo backend that runs each captured graph as is (no codegen: fast on CPU) and counts the graphs."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs += 1
        return gm.forward

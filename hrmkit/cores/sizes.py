"""Every registered core × variant, built on the meta device: parameter counts and schedules, without memory.

``hrmkit cores --sizes`` prints this table; docs/cores.md records it, and a test rebuilds it so a variant whose
size changes (or a new variant that fails to build) is noticed the day it happens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hrmkit.cores import CORES, build_core


@dataclass(frozen=True)
class CoreSize:
    core: str
    variant: str
    parameters: int
    schedule: str  # e.g. "LLHLLH" (one letter per module call)
    bp_steps: int


def core_sizes(names: list[str] | None = None) -> list[CoreSize]:
    """One row per (registered core, named variant), plugins included; failed plugins are skipped (``hrmkit
    cores`` lists them with their error)."""
    rows = []
    for name in names or CORES.names():
        if name in CORES.errors:
            continue
        for variant in sorted(getattr(CORES.get(name), "variants", {})):
            with torch.device("meta"):
                core = build_core(name, variant)
            rows.append(CoreSize(name, variant, core.num_parameters(), "".join(core.schedule()), core.bp_steps))
    return rows


def markdown_table(rows: list[CoreSize]) -> str:
    """The table as docs/cores.md records it."""
    lines = ["| core | variant | parameters | schedule | bp_steps |", "|---|---|---:|---|---:|"]
    lines += [f"| {r.core} | {r.variant} | {r.parameters:,} | {r.schedule} | {r.bp_steps} |" for r in rows]
    return "\n".join(lines)

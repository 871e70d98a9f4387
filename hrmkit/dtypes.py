"""The one table of dtype names hrmkit accepts in configs, recipes and exports (a leaf: imports only torch).

YAML and the CLI spell dtypes as strings; every field that takes one picks the subset it supports from here, so
a name means the same torch dtype everywhere and adding one is a one-line change.
"""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
}
# Short spellings common in launch scripts (bf16-mixed, fp16); accepted only where a field opts in.
SHORT_NAMES: dict[str, str] = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def dtype_table(*names: str, short: bool = False) -> dict[str, torch.dtype]:
    """The names a field accepts, mapped to torch dtypes; ``short`` adds ``bf16``/``fp16``/``fp32`` for those names."""
    unknown = [n for n in names if n not in DTYPES]
    if unknown:
        raise KeyError(f"dtype_table: {unknown} not in {sorted(DTYPES)}")
    table = {n: DTYPES[n] for n in names}
    if short:
        table.update({s: DTYPES[full] for s, full in SHORT_NAMES.items() if full in names})
    return table

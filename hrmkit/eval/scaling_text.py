"""Test-time depth curve of a text model: answer accuracy against the recurrence depth used at inference.

A recursive text core repeats its schedule's outer loop a fixed number of times (HRM-Text: ``H_cycles``, each
``L_cycles`` L calls and one H call); at inference that count can be set to any value, the text analogue of a
puzzle model's segments. Each depth is a separate generation run (every token's pass depends on it), scored by
``hrmkit eval text``'s scorer (:func:`hrmkit.eval.text.evaluate_text`). Compute is counted from the core passes the
run actually made: tokens fed × App. A forward FLOPs per token at that depth (:mod:`hrmkit.cores.flops`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from hrmkit.cores.flops import core_forward_flops_per_token
from hrmkit.tasks.text import TextTask

#: Core attributes that set the depth of the recurrence, in the order they are looked for.
DEPTH_ATTRS: tuple[str, ...] = ("H_cycles", "cycles", "L_cycles")


def depth_attribute(core: torch.nn.Module, name: str | None = None) -> str:
    """The core attribute that sets its recurrence depth (``name`` when given, checked)."""
    options = (name,) if name else DEPTH_ATTRS
    for attr in options:
        value = getattr(core, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return attr
    raise ValueError(f"core {type(core).__name__} has no recurrence depth to vary at inference (looked for "
                     f"{', '.join(options)}); its depth is fixed")


def text_depth_curve(task: TextTask, data: str, kind: str, tokenizer: str, cycles: Sequence[int] | None = None,
                     depth_attr: str | None = None, max_new_tokens: int = 256, limit: int | None = None,
                     batch_size: int = 64) -> dict[str, Any]:
    """Score ``task`` on the JSONL benchmark ``data`` once per depth in ``cycles`` (default 1 … twice the trained
    depth); the core's depth is restored afterwards."""
    from hrmkit.eval.text import evaluate_text

    core = task.core
    attr = depth_attribute(core, depth_attr)
    trained = int(getattr(core, attr))
    depths = sorted(set(cycles)) if cycles else list(range(1, 2 * trained + 1))
    if depths[0] < 1:
        raise ValueError(f"cycles must be positive integers, got {depths}")
    seen = {"tokens": 0, "passes": 0}

    def count(module: torch.nn.Module, args: tuple) -> None:
        seen["tokens"] += int(args[0].shape[0] * args[0].shape[1])
        seen["passes"] += 1

    rows = []
    # Every core pass starts by embedding its tokens, on both generation paths (the static-cache path runs the core's
    # pieces, not core.forward, so a hook on the core would see nothing); the hook also runs under torch.compile.
    hook = task.embed_tokens.register_forward_pre_hook(count)
    try:
        for depth in depths:
            setattr(core, attr, depth)
            seen.update(tokens=0, passes=0)
            start = time.perf_counter()
            summary = evaluate_text(task, data, kind, tokenizer, max_new_tokens=max_new_tokens, limit=limit,
                                    batch_size=batch_size)
            seconds = time.perf_counter() - start
            flops = seen["tokens"] * core_forward_flops_per_token(core)
            n = summary["n"]
            rows.append({"cycles": depth, "samples": 1, **summary, "core_passes": seen["passes"],
                         "module_calls": seen["passes"] * core.num_calls, "tokens": seen["tokens"], "flops": flops,
                         "flops_per_example": flops / n, "seconds": seconds})
    finally:
        hook.remove()
        setattr(core, attr, trained)
    return {"kind": "text", "scorer": kind, "data": str(data), "depth_attr": attr, "trained_depth": trained,
            "cycles": depths, "examples": rows[0]["n"], "rows": rows}

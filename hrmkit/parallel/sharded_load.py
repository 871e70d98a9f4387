"""Load a sharded (DCP) checkpoint into an FSDP2 model and its optimizers, tolerating parameters without state.

Lightning's loader asks DCP for the optimizer state of *every* parameter: ``get_optimizer_state_dict`` first
creates one for each (a zero-gradient step), and DCP then fails on any key the checkpoint lacks. A parameter has no
optimizer state when it has not had a gradient yet, which is normal here: HRM-Text's embedding gets none while the
deep-credit warmup is at bp_steps=2 (the first steps of every pretraining run). This loader reads the checkpoint's
key list, asks only for the states that were saved, and leaves the other parameters without state, exactly as an
uninterrupted run would have them (AdamATan2's bias correction counts from their first real gradient).

Every DCP read goes through :func:`~hrmkit.sharded_checkpoints.dcp_load`, which unpickles nothing beyond tensors,
primitives and DCP's own index classes (guarantee #7 of docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from hrmkit.sharded_checkpoints import dcp_load, read_index

METADATA_FILE = "meta.pt"  # what Lightning's ModelParallelStrategy writes next to the shards


def is_sharded_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / ".metadata").is_file()


def load_sharded(path: Path, module: nn.Module, optimizers: list[torch.optim.Optimizer], strict: bool = True,
                 weights_only: bool | None = None) -> dict[str, Any]:
    """Model in place, then each optimizer (``optimizer_<i>``) from the states the checkpoint holds; returns
    the rest of the checkpoint (``meta.pt``: loops, callbacks, hyper-parameters)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    saved = set(read_index(path / ".metadata").state_dict_metadata)
    model_state = {"state_dict": get_model_state_dict(module)}
    dcp_load(model_state, path)
    module.load_state_dict(model_state["state_dict"], strict=strict)
    for i, optimizer in enumerate(optimizers):
        key = f"optimizer_{i}"
        state = get_optimizer_state_dict(module, optimizer)
        for name in [n for n in state["state"] if not any(k.startswith(f"{key}.state.{n}.") for k in saved)]:
            del state["state"][name]  # no gradient before the save: stays without state
        dcp_load({key: state}, path)
        set_optimizer_state_dict(module, optimizer, optim_state_dict=state,
                                 options=StateDictOptions(cpu_offload=True, strict=False))
    return torch.load(path / METADATA_FILE, weights_only=weights_only)

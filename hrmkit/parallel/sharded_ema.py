"""Keep the :class:`~hrmkit.callbacks.EMA` state correct in FSDP2 checkpoints.

ModelParallelStrategy writes ``state_dict`` and optimizer states as DCP shards and ``torch.save``-s everything else
(callback states) into ``meta.pt`` on rank 0 only. The EMA callback keeps one set of parameter values (raw or EMA)
under ``checkpoint["ema"]["other"]``: with sharded parameters those are DTensor shards, so rank 0's file would hold
rank 0's shards only. These helpers move that set into its own DCP directory (``<ckpt>/ema``) on save, and on load
read it back and hand the EMA callback the ``state_dict`` it expects (DCP loads the model in place and returns none).
With ``save_distributed_checkpoint=False`` the model and both sets are gathered to full tensors on rank 0 (one
file), and sharded again like the parameters when such a file is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from hrmkit.callbacks.ema import EMA_CHECKPOINT_KEY
from hrmkit.sharded_checkpoints import dcp_load

EMA_DIR = "ema"


def _full(value: Any, keep: bool) -> Any:
    """The full tensor of a DTensor (collective: every rank calls it in the same order), on the CPU where ``keep``
    (rank 0, which writes the file) and dropped elsewhere, so no rank holds a second full copy of the model."""
    if not isinstance(value, DTensor):
        return value
    full = value.full_tensor()
    return full.cpu() if keep else None


def pop_sharded_ema(checkpoint: dict[str, Any], distributed: bool, keep: bool = True) -> dict[str, Any] | None:
    """Before saving: take the EMA's other set out of the checkpoint (sharded), or gather it and the sharded
    ``state_dict`` to full tensors kept on rank 0 (``keep``) for the single file."""
    ema = checkpoint.get(EMA_CHECKPOINT_KEY)
    if distributed:
        return ema.pop("other") if isinstance(ema, dict) and "other" in ema else None
    checkpoint["state_dict"] = {k: _full(v, keep) for k, v in checkpoint["state_dict"].items()}
    if isinstance(ema, dict) and "other" in ema:
        ema["other"] = {k: _full(v, keep) for k, v in ema["other"].items()}
    return None


def save_sharded_ema(other: dict[str, Any], path: Path) -> None:
    """Write the EMA's other set as DCP shards under ``<path>/ema`` (collective: every rank calls it)."""
    import torch.distributed.checkpoint as dcp

    dcp.save({"other": other}, checkpoint_id=path / EMA_DIR)


def load_sharded_ema(checkpoint: dict[str, Any], path: Path, module: nn.Module) -> None:
    """After DCP loaded the model in place: put the EMA's other set and the loaded ``state_dict`` back."""
    ema = checkpoint.get(EMA_CHECKPOINT_KEY)
    if not isinstance(ema, dict) or "other" in ema:
        return
    if not (path / EMA_DIR).is_dir():
        raise FileNotFoundError(f"{path} has EMA metadata but no sharded EMA values under {path / EMA_DIR}")
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    params = {name: p for name, p in module.named_parameters() if p.requires_grad}
    other = {name: torch.empty_like(p.detach()) for name, p in params.items()}
    dcp_load({"other": other}, path / EMA_DIR)
    ema["other"] = other
    checkpoint["state_dict"] = {k: v.detach().clone() for k, v in get_model_state_dict(module).items()}


def restore_full_ema(checkpoint: dict[str, Any], module: nn.Module) -> None:
    """After Lightning loaded a single-file checkpoint into the sharded model: hand the EMA callback the loaded
    ``state_dict`` (Lightning's loader pops it) and its other set, both sharded like the parameters."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    from torch.distributed.tensor import distribute_tensor

    checkpoint["state_dict"] = {k: v.detach().clone() for k, v in get_model_state_dict(module).items()}
    ema = checkpoint.get(EMA_CHECKPOINT_KEY)
    if not isinstance(ema, dict) or not isinstance(ema.get("other"), dict):
        return
    params = dict(module.named_parameters())
    for name, value in list(ema["other"].items()):
        like = params.get(name)
        if isinstance(like, DTensor) and not isinstance(value, DTensor):  # every rank read the whole file: no traffic
            ema["other"][name] = distribute_tensor(value.to(like.device, like.dtype), like.device_mesh, like.placements,
                                                   src_data_rank=None)

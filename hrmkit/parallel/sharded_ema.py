"""Keep the :class:`~hrmkit.callbacks.EMA` state correct in FSDP2 checkpoints.

ModelParallelStrategy writes ``state_dict`` and optimizer states as DCP shards and ``torch.save``-s everything else
(callback states) into ``meta.pt`` on rank 0 only. The EMA callback keeps one set of parameter values (raw or EMA)
under ``checkpoint["ema"]["other"]``: with sharded parameters those are DTensor shards, so rank 0's file would hold
rank 0's shards only. These helpers move that set into its own DCP directory (``<ckpt>/ema``) on save, and on load
read it back and hand the EMA callback the ``state_dict`` it expects (DCP loads the model in place and returns none).
With ``save_distributed_checkpoint=False`` the sets are gathered to full tensors instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from hrmkit.callbacks.ema import EMA_CHECKPOINT_KEY

EMA_DIR = "ema"


def _full(value: Any) -> Any:
    return value.full_tensor() if isinstance(value, DTensor) else value


def pop_sharded_ema(checkpoint: dict[str, Any], distributed: bool) -> dict[str, Any] | None:
    """Before saving: take the EMA's other set out of the checkpoint (sharded) or gather it (full file)."""
    ema = checkpoint.get(EMA_CHECKPOINT_KEY)
    if not isinstance(ema, dict) or "other" not in ema:
        return None
    if distributed:
        return ema.pop("other")
    ema["other"] = {k: _full(v) for k, v in ema["other"].items()}
    checkpoint["state_dict"] = {k: _full(v) for k, v in checkpoint["state_dict"].items()}
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
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    params = {name: p for name, p in module.named_parameters() if p.requires_grad}
    other = {name: torch.empty_like(p.detach()) for name, p in params.items()}
    dcp.load({"other": other}, checkpoint_id=path / EMA_DIR)
    ema["other"] = other
    checkpoint["state_dict"] = {k: v.detach().clone() for k, v in get_model_state_dict(module).items()}

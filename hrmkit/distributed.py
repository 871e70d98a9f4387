"""Rank helpers for per-process state (RNG streams, the ACT carry) saved inside one checkpoint.

A leaf module: it imports only torch and :mod:`hrmkit.errors`, so checkpointing, callbacks and tasks can all use it
without importing each other.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from hrmkit.errors import CheckpointError


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_per_rank(obj: Any) -> list[Any]:
    """Every process's ``obj`` in rank order (collective under torch.distributed: call it on every rank, as
    Lightning's checkpoint hooks are). Per-process state — RNG streams, the ACT carry — must be saved this way, since
    only rank 0 writes the non-sharded part of a checkpoint."""
    rank, world = rank_and_world()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def pick_rank(entries: Any, what: str) -> Any:
    """This process's entry of a :func:`gather_per_rank` list; None (with a warning: the resumed run is then not
    bit-exact) when the checkpoint was written by fewer processes."""
    rank, _ = rank_and_world()
    if not isinstance(entries, list):
        raise CheckpointError(f"checkpoint field {what!r}: expected a list with one entry per process, got "
                              f"{type(entries).__name__}")
    if rank >= len(entries):
        warnings.warn(f"{what}: the checkpoint holds {len(entries)} process(es)' entries, this is rank {rank}; it "
                      "starts this part fresh (the resumed run is not bit-exact)", stacklevel=2)
        return None
    return entries[rank]

"""The one way to read a trained hrmkit model: ``hrmkit.load(path)``.

Every command that evaluates, shows, generates from, exports or transfers a model reads it here, so each gets the
same guarantees: plugins are imported first (a checkpoint may name a plugin core), the checkpoint file is checked
(torn or truncated files are refused by name) and unpickled weights-only, and an HF ``hrm_text`` directory is
accepted wherever a checkpoint is. The task class comes from the checkpoint's hyper-parameters unless the caller
says which one it needs (then anything else is refused with a message naming the file).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from hrmkit.checkpointing import is_sharded_dir, load_checkpoint_file, load_task
from hrmkit.errors import HrmkitInputError
from hrmkit.interop.hf_hrm_text import load_into, read_hf
from hrmkit.registry import TASKS, load_plugins
from hrmkit.tasks.text import TextTask
from hrmkit.transfer import task_class_for

T = TypeVar("T", bound=pl.LightningModule)


def is_hf_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an HF model directory (or one of its two files) rather than a checkpoint file."""
    p = Path(path)
    return (p.is_dir() and not is_sharded_dir(p)) or p.name in ("config.json", "model.safetensors")


def load_hf(path: str | os.PathLike, fused_qkv: bool = True, **task_kwargs: Any) -> TextTask:
    """A :class:`TextTask` (``hrm`` core, ``injection="hrm_text"``) from an HF ``hrm_text`` directory.

    Args:
        path: the checkpoint directory (or its ``config.json`` / ``model.safetensors``); the layout is detected.
        fused_qkv: build the core with the fused gate|q|k|v projection (default) or split ones.
        **task_kwargs: further TextTask arguments (lr, objective, ...) for fine-tuning the loaded model.

    Weights load in fp32 (hrmkit keeps fp32 masters). The detected layout and the file's dtype are logged and kept
    on the task as ``hf_layout`` / ``hf_dtype``.
    """
    hf = read_hf(path, fused_qkv=fused_qkv)
    task = TextTask(hf.core, **{**hf.task_args, **task_kwargs})
    load_into(task, hf.state, hf.path)
    task.hf_token_ids = hf.token_ids
    task.hf_layout, task.hf_dtype = hf.layout, hf.dtype
    rank_zero_info(f"hrmkit: loaded {hf.path} (hrm_text, {hf.layout} layout, {hf.dtype} weights -> float32)")
    return task


def load(path: str | os.PathLike, task: type[T] | None = None, map_location: Any = "cpu") -> T:
    """Any hrmkit task from a Lightning checkpoint (``.ckpt``) or an HF ``hrm_text`` directory.

    Args:
        path: the checkpoint file, a sharded (FSDP2) checkpoint directory, or an HF directory.
        task: the task class the caller needs (e.g. ``PuzzleTask``); default: whichever class the checkpoint's
            hyper-parameters fit.
        map_location: where the tensors go (``load_from_checkpoint``'s argument).
    """
    p = Path(path)
    if is_hf_dir(p):
        model: pl.LightningModule = load_hf(p)
    else:
        sharded = is_sharded_dir(p)  # an FSDP2 run's DCP directory: hyper-parameters in its meta.pt
        if not (p.is_file() or sharded):
            raise FileNotFoundError(f"{p} does not exist (expected a checkpoint file, a sharded checkpoint directory "
                                    "or an HF model directory)")
        load_plugins()  # plugin cores (and tasks) named in the hyper-parameters must be importable
        hparams = load_checkpoint_file(p / "meta.pt" if sharded else p, map_location="cpu").get(
            "hyper_parameters") or {}
        cls = TASKS.get(task_class_for(dict(hparams), str(p)))  # checked before building, for a clear refusal
        if task is not None and not issubclass(cls, task):
            raise HrmkitInputError(f"{p}: holds a {cls.__name__}, but this command needs a {task.__name__}")
        model = load_task(cls, p, map_location=map_location)
    if task is not None and not isinstance(model, task):
        raise HrmkitInputError(f"{p}: holds a {type(model).__name__}, but this command needs a {task.__name__}")
    return model  # type: ignore[return-value]

"""Core transfer: initialise one task's recursive core (and optionally more) from another trained model.

The core contract makes a trained core portable: a PuzzleTask's HRM and a TextTask's HRM are the same module when
their core configuration agrees, so the symbolic core's weights can start a text model (and back). What a task adds
around the core (token embedding, puzzle embedding, LM head, halting head) is task-specific and is re-initialised.

Sources (:func:`read_source`): a Lightning checkpoint (``.ckpt``) of any hrmkit task, or an exported HF ``hrm_text``
directory. The copy is strict by default: the two cores must be the same class and every parameter and persistent
buffer of the target core must exist in the source with the same shape; otherwise a :class:`TransferError` carries
the whole report (matched / re-initialised and why / source tensors left unused), so one run shows everything to
fix. RoPE tables are non-persistent buffers derived from ``max_seq_len``: they are never copied, so a core built for
another context length still transfers exactly. This is weight initialisation, not a resume: no optimizer state,
step count or schedule is taken from the source.

Tasks use it through their ``init_from`` / ``freeze`` / ``reinit`` arguments (:func:`init_task`, applied in
``configure_model`` once the task's layers exist); ``hrmkit transfer`` (:mod:`hrmkit.commands.transfer`) writes a
new checkpoint with a transferred core and prints the report. This module imports cores, checkpoint files and the HF
reader only, never the tasks, since the tasks import it.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from hrmkit.checkpointing import atomic_torch_save, is_sharded_dir, load_checkpoint_file
from hrmkit.cores.base import RecursiveCore
from hrmkit.errors import HrmkitInputError
from hrmkit.interop.hf_hrm_text import read_hf
from hrmkit.registry import TASKS
from hrmkit.sharded_checkpoints import read_sharded

CORE_PREFIX = "core."


class TransferError(HrmkitInputError):
    """A core (or task part) could not be transferred exactly; the message is the full report."""


@dataclass
class TransferSource:
    """What a trained model offers for transfer: its task class name, core config and full task state dict."""

    path: str
    task: str  # e.g. "PuzzleTask", "TextTask"
    core_config: dict[str, Any]
    state: dict[str, Tensor]

    @property
    def core_state(self) -> dict[str, Tensor]:
        """The core's tensors with the ``core.`` prefix removed."""
        return {k[len(CORE_PREFIX):]: v for k, v in self.state.items() if k.startswith(CORE_PREFIX)}

    @property
    def core_class(self) -> str:
        return str(self.core_config.get("class_path", "?")).rsplit(".", 1)[-1]


@dataclass
class TransferReport:
    """What one transfer did, tensor by tensor, with the reason for everything not copied."""

    source: str
    source_task: str
    target_task: str
    matched: list[str] = field(default_factory=list)
    reinitialised: dict[str, str] = field(default_factory=dict)  # target tensor -> why it keeps its fresh init
    unused: list[str] = field(default_factory=list)  # source core tensors the target has no place for
    rederived: list[str] = field(default_factory=list)  # non-persistent buffers rebuilt from the target's config
    config_diff: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # core option -> (source, target)
    frozen: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # what makes a strict transfer fail

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        """A plain-text report (what `hrmkit transfer` prints and TransferError carries)."""
        lines = [f"core transfer from {self.source} ({self.source_task}) into {self.target_task}",
                 f"  matched: {len(self.matched)} core tensors copied exactly"]
        if self.config_diff:
            lines.append("  core options that differ (source -> target):")
            lines += [f"    {k}: {a!r} -> {b!r}" for k, (a, b) in sorted(self.config_diff.items())]
        if self.rederived:
            lines.append(f"  re-derived from the target config, not copied: {', '.join(self.rederived)}")
        if self.reinitialised:
            lines.append(f"  re-initialised ({len(self.reinitialised)}):")
            lines += [f"    {k}: {why}" for k, why in self.reinitialised.items()]
        if self.unused:
            lines.append(f"  unused source tensors ({len(self.unused)}): {', '.join(self.unused)}")
        if self.frozen:
            lines.append(f"  frozen: {', '.join(self.frozen)}")
        if self.errors:
            lines.append("  errors (a strict transfer copies nothing):")
            lines += [f"    {e}" for e in self.errors]
        return "\n".join(lines)

    __str__ = format


# -------------------------------------------------------------------------------------------------- reading sources
def task_class_for(hparams: dict[str, Any], where: str) -> str:
    """The registered task whose constructor accepts every saved hyper-parameter (checkpoints don't store the
    class); tasks register themselves in :data:`hrmkit.registry.TASKS` when ``hrmkit.tasks`` is imported."""
    keys = set(hparams) - {"_instantiator", "_class_path"}
    for name in TASKS.names():
        if keys <= set(inspect.signature(TASKS.get(name).__init__).parameters):
            return name
    raise TransferError(f"{where}: its hyper-parameters {sorted(keys)} match no hrmkit task "
                        f"({', '.join(TASKS.names()) or 'none registered: import hrmkit.tasks'}); is it an hrmkit "
                        "checkpoint?")


def read_source(path: str | os.PathLike) -> TransferSource:
    """Read a Lightning ``.ckpt`` of an hrmkit task (a file, or an FSDP2 run's sharded directory), or an HF
    ``hrm_text`` directory, on the CPU."""
    p = Path(path)
    if is_sharded_dir(p):  # an FSDP2 run's DCP directory: gathered into full tensors on this process
        ckpt: Any = read_sharded(p)
    elif p.is_dir() or p.name in ("config.json", "model.safetensors"):
        hf = read_hf(p)
        return TransferSource(str(p), "TextTask", hf.core.to_config(), hf.state)
    elif not p.is_file():
        raise FileNotFoundError(f"{p}: no such checkpoint file, sharded checkpoint directory or HF model directory")
    else:
        ckpt = load_checkpoint_file(p, map_location="cpu")  # torn files and pickled code are refused by name
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise TransferError(f"{p}: a Lightning checkpoint needs a 'state_dict' entry; found keys "
                            f"{sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__}")
    hparams = dict(ckpt.get("hyper_parameters") or {})
    core_config = hparams.get("core")
    if not isinstance(core_config, dict) or "class_path" not in core_config:
        raise TransferError(f"{p}: hyper_parameters.core is missing or not a core config; was it saved by an hrmkit "
                            f"task?")
    if not any(k.startswith(CORE_PREFIX) for k in ckpt["state_dict"]):
        raise TransferError(f"{p}: state_dict has no 'core.*' tensors")
    return TransferSource(str(p), task_class_for(hparams, str(p)), core_config, dict(ckpt["state_dict"]))


# ------------------------------------------------------------------------------------------------------- transfer
def _config_diff(source: dict[str, Any], target: RecursiveCore) -> dict[str, tuple[Any, Any]]:
    a, b = dict(source.get("init_args") or {}), target.to_config()["init_args"]
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def plan_core_transfer(source: TransferSource, core: RecursiveCore, target_task: str = "") -> tuple[
        TransferReport, dict[str, Tensor]]:
    """Compare the source core with ``core`` tensor by tensor; returns the report and what to copy."""
    report = TransferReport(source.path, source.task, target_task or type(core).__name__)
    src_cls, dst_cls = source.core_class, type(core).__qualname__
    if src_cls != dst_cls:
        report.errors.append(f"core class differs: source {src_cls}, target {dst_cls} (exact transfer needs the "
                             "same core class)")
    report.config_diff = _config_diff(source.core_config, core)
    persistent = core.state_dict()
    report.rederived = sorted(n for n, _ in core.named_buffers() if n not in persistent)
    src = source.core_state
    copy: dict[str, Tensor] = {}
    for name, tensor in persistent.items():
        if name not in src:
            report.reinitialised[f"core.{name}"] = "missing in the source core"
            report.errors.append(f"core.{name}: missing in the source core")
        elif tuple(src[name].shape) != tuple(tensor.shape):
            why = f"shape mismatch: source {tuple(src[name].shape)} vs target {tuple(tensor.shape)}"
            report.reinitialised[f"core.{name}"] = why
            report.errors.append(f"core.{name}: {why}")
        else:
            copy[name] = src[name]
            report.matched.append(f"core.{name}")
    report.unused = sorted(f"core.{n}" for n in src if n not in persistent)
    if report.unused:
        report.errors.append(f"{len(report.unused)} source core tensors have no place in the target core")
    if report.errors and "hidden_size" in report.config_diff:
        a, b = report.config_diff["hidden_size"]
        report.errors.append(f"hidden_size differs ({a} vs {b}): build the target core with the source's size")
    return report, copy


def _load_into(module: nn.Module, tensors: dict[str, Tensor]) -> None:
    """Copy tensors into ``module``'s parameters/buffers in place (keeping the target's dtype and device)."""
    own = module.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, value in tensors.items():
            own[name].copy_(value.to(dtype=own[name].dtype, device=own[name].device))


def transfer_core(source: TransferSource | str | os.PathLike, core: RecursiveCore, strict: bool = True,
                  target_task: str = "") -> TransferReport:
    """Copy the source's core into ``core``. Strict (default): all or nothing, a :class:`TransferError` with the
    report otherwise. Non-strict: copy what matches; the rest keeps its fresh initialisation (and is reported)."""
    src = source if isinstance(source, TransferSource) else read_source(source)
    report, copy = plan_core_transfer(src, core, target_task)
    if strict and not report.ok:
        raise TransferError(report.format())
    _load_into(core, copy)
    return report


def _task_parts(source: TransferSource, task: nn.Module, reinit: Sequence[str], report: TransferReport,
                strict: bool) -> dict[str, Tensor]:
    """Non-core tensors to copy: only from the same task class, only those not named in ``reinit``."""
    own = {k: v for k, v in task.state_dict().items() if not k.startswith(CORE_PREFIX)}
    same_task = source.task == type(task).__name__
    copy = {}
    for name, tensor in own.items():
        if any(name == r or name.startswith(r + ".") for r in reinit):
            report.reinitialised[name] = "listed in reinit"
        elif not same_task:
            report.reinitialised[name] = f"task-specific ({source.task} -> {type(task).__name__})"
        elif name not in source.state:
            report.reinitialised[name] = "missing in the source task"
        elif tuple(source.state[name].shape) != tuple(tensor.shape):
            why = f"shape mismatch: source {tuple(source.state[name].shape)} vs target {tuple(tensor.shape)}"
            report.reinitialised[name] = why
            if strict:
                report.errors.append(f"{name}: {why} (add it to reinit to start it fresh)")
        else:
            copy[name] = source.state[name]
            report.matched.append(name)
    return copy


def freeze_parts(task: nn.Module, parts: Sequence[str]) -> list[str]:
    """Stop gradients to the named submodules: ``core``, a core part (``H``, ``L``, ``net``; ``core.`` optional),
    or any task module (``embed_tokens``). Unknown names raise, listing what exists."""
    frozen = []
    for part in parts:
        module = None
        for name in (part, f"core.{part}"):
            try:
                module = task.get_submodule(name)
                break
            except AttributeError:
                continue
        if module is None:
            core_parts = [n for n, _ in task.core.named_children()] if hasattr(task, "core") else []
            raise ValueError(f"freeze: {part!r} is not a submodule of {type(task).__name__} (try 'core' or a core "
                             f"part: {', '.join(core_parts)})")
        for p in module.parameters():
            p.requires_grad_(False)
        frozen.append(part)
    return frozen


def init_task(task: nn.Module, init_from: TransferSource | str | None, freeze: Sequence[str] | None = None,
              reinit: Sequence[str] | None = None, strict: bool = True) -> TransferReport | None:
    """Initialise ``task`` from ``init_from`` (its core; plus every other layer when the source is the same task
    class, except those in ``reinit``), then freeze ``freeze``. Tasks call it from ``configure_model``."""
    report = None
    if init_from:
        source = init_from if isinstance(init_from, TransferSource) else read_source(init_from)
        report, copy = plan_core_transfer(source, task.core, type(task).__name__)
        parts = _task_parts(source, task, list(reinit or []), report, strict)
        if strict and not report.ok:
            raise TransferError(f"{type(task).__name__}.init_from: {report.format()}")
        _load_into(task.core, copy)
        _load_into(task, parts)
    frozen = freeze_parts(task, list(freeze or []))
    if report is not None:
        report.frozen = frozen
    return report


def configure_init(task: Any) -> TransferReport | None:
    """The tasks' ``configure_model`` step: load ``init_from`` once per fit and apply ``freeze``.

    Loading is skipped without a trainer (``load_from_checkpoint`` also calls ``configure_model``: the weights then
    come from that checkpoint) and after the first time. Under ``fit --ckpt_path`` the resumed weights are restored
    after this hook, so a resume still continues from its own checkpoint.
    """
    hp = task.hparams
    load = bool(hp.get("init_from")) and task._trainer is not None and not getattr(task, "_init_applied", False)
    report = init_task(task, hp.get("init_from") if load else None, hp.get("freeze"), hp.get("reinit"),
                       hp.get("init_strict", True))
    if report is not None:
        task._init_applied = True
        rank_zero_info(report.format())
    return report


def save_task_checkpoint(task: nn.Module, path: str | os.PathLike) -> Path:
    """Write a weights-only Lightning checkpoint (state dict + hyper-parameters; no optimizer or loop state)
    atomically; ``load_from_checkpoint`` and ``init_from`` both read it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    hparams = dict(task.hparams)
    hparams.pop("init_from", None)  # the weights are already in this file
    ckpt = {"state_dict": task.state_dict(), "hyper_parameters": hparams,
            "pytorch-lightning_version": lightning.__version__}
    atomic_torch_save(ckpt, target)
    return target

"""MagicNorm health monitor: per-call state RMS, max-abs and gradient norms of the recursive core, with alarms.

Why: HRM-Text's stability rests on MagicNorm (specs/hrm-text.md §2.4): every H/L call ends in a parameterless
RMSNorm, so the recurrent state has unit RMS however many calls run. Full-BPTT-like horizons show rare, very large
gradient spikes (§3.3). Both are cheap to watch with the core's own telemetry
(:meth:`~hrmkit.cores.base.RecursiveCore.telemetry`), so this callback samples them every ``every_n_steps``
training steps and flags trouble early.

What a measured step does: the training batch runs inside ``core.telemetry(grads=...)``; a forward hook on the core
keeps the records of every forward of the step; after backward (at ``on_before_optimizer_step``, before the weights
change, or at ``on_train_batch_end`` on steps without an optimizer step) the values are checked and written to every
logger at the step Lightning uses for its own step metrics:

* ``magicnorm/rms/<call>``, ``magicnorm/max_abs/<call>``, ``magicnorm/grad_norm/<call>`` (call = ``L0``, ``H1``…;
  the gradient norm is the norm of the gradient reaching that call's output; calls outside the gradient horizon
  have none), ``magicnorm/rms_ratio_last_first`` and ``magicnorm/problems`` (count of flags at this step).
  Per-call values come from the step's last forward that kept gradients (PuzzleTask's extra no-grad Q-target pass
  is skipped); the checks cover every forward of the step.

Checks (each a :class:`HealthProblem`):

* ``non-finite``: a NaN/inf RMS, max-abs or gradient norm.
* ``rms``: for ``norm="magic"`` and ``norm="post"`` cores every call's output is RMS-normalised, so its RMS must
  stay inside ``rms_bounds``. For ``norm="pre"`` cores there is no exit norm and the RMS legitimately grows within
  a pass (HRM-style injection sums the states: about 10x from the first to the last call of a 6-8-call pass at
  initialisation, the PreNorm variance growth MagicNorm removes); the check is then ``drift``: a call's RMS more
  than ``max_drift`` (default 100) times above or below the first call's RMS of the same forward.
* ``spike`` (all cores) / ``growth`` (``pre`` cores only): a call's gradient norm / state RMS above
  ``spike_factor`` × the median of its last ``spike_window`` measured values (once ``spike_min_history`` values
  exist). ``growth`` catches a state exploding over training in a ``pre`` core, whose within-pass ``drift`` bound
  must be loose. The history only holds measured steps, so it is a median over ``every_n_steps``-spaced samples;
  it is saved in checkpoints so a resumed run keeps it.

``on_problem``:

* ``"warn"``: a :class:`MagicNormWarning` per measured step with flags; training goes on.
* ``"stop"``: warn, then ``trainer.should_stop = True`` (agreed across ranks). The flagged step still finishes,
  optimizer step included, and fit ends cleanly. This callback saves nothing itself: the Trainer's
  ``ModelCheckpoint`` (a default one saves when the stopped epoch ends) writes the file to inspect.
* ``"raise"``: a :class:`MagicNormError` before the optimizer step, so the flagged gradients never reach the
  weights. Lightning then runs the ``on_exception`` hooks: add ``OnExceptionCheckpoint`` to keep a checkpoint.

:attr:`MagicNormHealth.problems` keeps the latest flags either way.

Off steps cost one modulo per hook. Measured steps add the per-call reductions, one backward hook per call and one
host sync; ``benchmarks/magicnorm_overhead.py`` measures it.
"""

from __future__ import annotations

import statistics
import warnings
from collections import deque
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.hooks import RemovableHandle

from hrmkit.callbacks.common import is_finite, logger_step, module_core, nonfinite_names, write_metrics
from hrmkit.cores.base import CallRecord

OnProblem = Literal["warn", "stop", "raise"]
_MAX_PROBLEMS = 100


class MagicNormError(RuntimeError):
    """Raised by :class:`MagicNormHealth` with ``on_problem="raise"``."""


class MagicNormWarning(UserWarning):
    """Issued by :class:`MagicNormHealth` for every measured step with problems (``warn`` and ``stop``)."""


@dataclass(frozen=True)
class HealthProblem:
    """One flag: ``kind`` is ``non-finite``, ``rms``, ``drift``, ``spike`` or ``growth``; ``call`` e.g. ``"L3"``."""

    step: int
    kind: str
    call: str
    message: str


class MagicNormHealth(Callback):
    """Samples per-call RMS / max-abs / gradient norms of ``pl_module.core`` and flags instabilities.

    Args:
        every_n_steps: measure the training batches whose step (see :func:`logger_step`) is a multiple of this
            (step 0 included).
        grads: also record the gradient norm reaching each call's output (one tensor hook per call).
        rms_bounds: allowed ``(low, high)`` RMS of a call's output for ``norm="magic"``/``"post"`` cores (1.0 is
            exact for a parameterless RMSNorm; the margin covers eps and low precision).
        max_drift: for ``norm="pre"`` cores, the largest allowed ratio (either way) between a call's RMS and the
            first call's RMS of the same forward.
        spike_factor: flag a call whose gradient norm (``spike``) or state RMS (``growth``) exceeds this multiple
            of its running median.
        spike_window: how many past measured values per call the medians use.
        spike_min_history: measured values needed before spikes are judged.
        on_problem: ``"warn"``, ``"stop"`` or ``"raise"`` (see the module docstring).
    """

    def __init__(self, every_n_steps: int = 50, grads: bool = True, rms_bounds: tuple[float, float] = (0.5, 2.0),
                 max_drift: float = 100.0, spike_factor: float = 10.0, spike_window: int = 32,
                 spike_min_history: int = 5, on_problem: OnProblem = "warn") -> None:
        if int(every_n_steps) != every_n_steps or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive integer, got {every_n_steps}")
        low, high = rms_bounds
        if not 0 <= low < high:
            raise ValueError(f"rms_bounds must be (low, high) with 0 <= low < high, got {rms_bounds}")
        if max_drift <= 1:
            raise ValueError(f"max_drift must be > 1, got {max_drift}")
        if spike_factor <= 1:
            raise ValueError(f"spike_factor must be > 1, got {spike_factor}")
        if spike_window < 1 or spike_min_history < 1 or spike_min_history > spike_window:
            raise ValueError("need 1 <= spike_min_history <= spike_window, got "
                             f"spike_min_history={spike_min_history}, spike_window={spike_window}")
        if on_problem not in ("warn", "stop", "raise"):
            raise ValueError(f"on_problem must be 'warn', 'stop' or 'raise', got {on_problem!r}")
        self.every_n_steps = int(every_n_steps)
        self.grads = grads
        self.rms_bounds = (float(low), float(high))
        self.max_drift = float(max_drift)
        self.spike_factor = float(spike_factor)
        self.spike_window = int(spike_window)
        self.spike_min_history = int(spike_min_history)
        self.on_problem = on_problem
        #: the latest flags (at most 100), oldest first.
        self.problems: list[HealthProblem] = []
        #: the metrics written at the latest measured step.
        self.last_metrics: dict[str, float] = {}
        self._history: dict[str, deque[float]] = {}
        self._last_measured: int | None = None
        # per measured batch
        self._telemetry: AbstractContextManager | None = None
        self._hook: RemovableHandle | None = None
        self._forwards: list[list[CallRecord]] = []
        self._step = 0
        self._norm = "magic"
        self._collected = False
        self._step_problems: list[HealthProblem] = []

    # -------------------------------------------------------------------------------------------------- lifecycle
    @property
    def active(self) -> bool:
        """Whether the current training batch is being measured."""
        return self._telemetry is not None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_measured = None  # a new fit (or a resumed one) starts its own step count

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.active:  # the previous batch never reached on_train_batch_end (e.g. the module skipped the epoch)
            self._close()
        step = logger_step(trainer)
        if step % self.every_n_steps or step == self._last_measured:
            return
        core = module_core(pl_module, "MagicNormHealth")
        self._last_measured, self._step, self._norm = step, step, core.norm
        self._forwards, self._collected, self._step_problems = [], False, []
        self._telemetry = core.telemetry(grads=self.grads)
        self._telemetry.__enter__()
        self._hook = core.register_forward_hook(self._on_forward)

    def _on_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        self._forwards.append(list(module.records))  # a forward clears core.records in place: keep this one's

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if self.active and not self._collected:
            self._collect(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.active:
            return
        if not self._collected:
            self._collect(trainer)
        self._close()
        if self.on_problem == "stop":
            if trainer.strategy.reduce_boolean_decision(bool(self._step_problems), all=False):
                trainer.should_stop = True

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    def _close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._telemetry is not None:
            telemetry, self._telemetry = self._telemetry, None
            telemetry.__exit__(None, None, None)
        self._forwards = []

    # ---------------------------------------------------------------------------------------------------- checking
    def _collect(self, trainer: pl.Trainer) -> None:
        self._collected = True
        forwards = [f for f in self._forwards if f]
        if not forwards:
            return
        values = _to_floats(forwards)
        primary = next((i for i in range(len(forwards) - 1, -1, -1) if any(r.grad for r in forwards[i])),
                       len(forwards) - 1)
        problems: list[HealthProblem] = []
        for fwd in values:
            problems += self._check_forward(fwd)
        metrics: dict[str, float] = {}
        for name, rms, max_abs, grad in values[primary]:
            metrics[f"magicnorm/rms/{name}"] = rms
            metrics[f"magicnorm/max_abs/{name}"] = max_abs
            if grad is not None:
                metrics[f"magicnorm/grad_norm/{name}"] = grad
        first, last = values[primary][0][1], values[primary][-1][1]
        metrics["magicnorm/rms_ratio_last_first"] = last / first if first != 0 else float("inf")
        problems += self._check_spikes(values[primary])
        metrics["magicnorm/problems"] = float(len(problems))
        self._step_problems = problems
        self.problems = (self.problems + problems)[-_MAX_PROBLEMS:]
        self.last_metrics = metrics
        write_metrics(trainer, metrics, self._step)
        if problems:
            self._report(problems)

    def _problem(self, kind: str, call: str, message: str) -> HealthProblem:
        return HealthProblem(self._step, kind, call, message)

    def _check_forward(self, fwd: list[tuple[str, float, float, float | None]]) -> list[HealthProblem]:
        out = []
        low, high = self.rms_bounds
        first_rms = fwd[0][1]
        for name, rms, max_abs, grad in fwd:
            bad = nonfinite_names({"rms": rms, "max_abs": max_abs, "grad_norm": grad})
            if bad:
                out.append(self._problem("non-finite", name, f"{name}: non-finite {', '.join(bad)} "
                                         f"(rms={rms}, max_abs={max_abs}, grad_norm={grad})"))
                continue
            if self._norm in ("magic", "post"):
                if not low <= rms <= high:
                    out.append(self._problem("rms", name, f"{name}: state RMS {rms:.4g} outside {self.rms_bounds} "
                                             f"although norm={self._norm!r} normalises every call's output"))
            elif is_finite(first_rms) and first_rms > 0:
                ratio = rms / first_rms
                if ratio > self.max_drift or ratio < 1 / self.max_drift:
                    out.append(self._problem("drift", name, f"{name}: state RMS {rms:.4g} is {ratio:.3g}x the first "
                                             f"call's {first_rms:.4g} (norm='pre', max_drift={self.max_drift:g})"))
        return out

    def _check_spikes(self, fwd: list[tuple[str, float, float, float | None]]) -> list[HealthProblem]:
        """Gradient-norm spikes and state-RMS growth against each call's running median over measured steps."""
        out = []
        for name, rms, _, grad in fwd:
            growth = rms if self._norm == "pre" else None  # magic/post: the RMS bounds already cover it
            for kind, what, value in (("spike", "gradient norm", grad), ("growth", "state RMS", growth)):
                if value is None or not is_finite(value):
                    continue
                history = self._history.setdefault(f"{kind}/{name}", deque(maxlen=self.spike_window))
                if len(history) >= self.spike_min_history:
                    median = statistics.median(history)
                    if value > self.spike_factor * median:
                        out.append(self._problem(kind, name, f"{name}: {what} {value:.4g} is "
                                                 f"{value / max(median, 1e-30):.3g}x its running median {median:.4g} "
                                                 f"(spike_factor={self.spike_factor:g})"))
                history.append(value)
        return out

    def _report(self, problems: list[HealthProblem]) -> None:
        shown = "; ".join(p.message for p in problems[:8])
        more = f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""
        text = f"MagicNormHealth at step {self._step}: {len(problems)} problem(s): {shown}{more}"
        if self.on_problem == "raise":
            raise MagicNormError(text + ". Raised before the optimizer step (on_problem='raise').")
        if self.on_problem == "stop":
            text += ". Stopping training (on_problem='stop')."
        warnings.warn(text, MagicNormWarning, stacklevel=2)

    # ---------------------------------------------------------------------------------------------------- resuming
    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: list(v) for k, v in self._history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._history = {k: deque(v, maxlen=self.spike_window) for k, v in state_dict.get("history", {}).items()}


def _to_floats(forwards: Iterable[list[CallRecord]]) -> list[list[tuple[str, float, float, float | None]]]:
    """All records' scalars as Python floats with one host transfer: ``(name, rms, max_abs, grad_norm)``."""
    forwards = list(forwards)
    tensors: list[torch.Tensor] = []
    for fwd in forwards:
        for r in fwd:
            tensors += [r.rms, r.max_abs] + ([r.grad_norm] if r.grad_norm is not None else [])
    flat = torch.stack([t.detach().float().reshape(()) for t in tensors]).tolist() if tensors else []
    it = iter(flat)
    out = []
    for fwd in forwards:
        rows = []
        for r in fwd:
            rms, max_abs = next(it), next(it)
            grad = next(it) if r.grad_norm is not None else None
            rows.append((r.name, rms, max_abs, grad))
        out.append(rows)
    return out

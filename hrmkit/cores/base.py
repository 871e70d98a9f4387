"""The recursive-core contract every task builds on.

A core maps input embeddings ``x`` and a latent state to a new state and an output hidden tensor by a *static
schedule* of module calls (``["L", "L", "H", ...]``). It knows nothing about tokens, losses or halting. What differs
between HRM, TRM, looped Transformers and plugins is only what one call does (:meth:`RecursiveCore.call`), how
the state starts (:meth:`initial_state`) and which calls keep gradients (:meth:`grad_calls`); the loop, the
gradient horizon, compute dtype, RoPE and telemetry live here once.
"""

from __future__ import annotations

import contextlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from hrmkit.dtypes import dtype_table
from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.block import Stack
from hrmkit.nn.cache import KVCache
from hrmkit.nn.init import INIT_SCHEMES, InitScheme, trunc_normal_
from hrmkit.nn.rope import RotaryEmbedding
from hrmkit.registry import Registry, track

State = dict[str, Tensor]
CoreNorm = Literal["post", "pre", "magic"]
NORMS: tuple[str, ...] = ("post", "pre", "magic")
_DTYPES = dtype_table("float32", "bfloat16", "float16", "float64")


@dataclass
class CallRecord:
    """Telemetry of one module call: detached scalars only, so recording never keeps activations alive."""

    name: str  # e.g. "L3", "H1": kind + per-kind index
    index: int  # position in the schedule
    grad: bool  # whether this call ran with gradients
    rms: Tensor
    max_abs: Tensor
    grad_norm: Tensor | None = None  # filled by a backward hook when telemetry(grads=True)


@dataclass
class CallContext:
    """Per-forward values shared by every call (computed once, not once per call)."""

    attn: AttnSpec
    rope: tuple[Tensor, Tensor] | None
    cache: KVCache | None
    extras: dict[str, Any] = field(default_factory=dict)
    #: task-given teacher signal ``[B, T, D]`` (the embedded labels) during training; None at inference.
    targets: Tensor | None = None
    #: False inside :meth:`RecursiveCore.deterministic`: a stochastic core then takes its mean instead of sampling.
    sample: bool = True
    #: auxiliary loss terms of this forward (e.g. a KL), summed per name; tasks add them to their loss.
    aux_losses: dict[str, Tensor] = field(default_factory=dict)

    def add_aux_loss(self, name: str, value: Tensor) -> None:
        """Accumulate a scalar loss term (already weighted, averaged over the batch) under ``name``."""
        if value.dim() != 0:
            raise ValueError(f"auxiliary loss {name!r} must be a scalar tensor, got shape {tuple(value.shape)}")
        self.aux_losses[name] = self.aux_losses[name] + value if name in self.aux_losses else value


class RecursiveCore(nn.Module, ABC):
    """Base class of all cores (built-in and plugin). Subclasses implement :meth:`schedule`, :meth:`initial_state`,
    :meth:`call` and :meth:`output`; most also set :attr:`updates` (schedule kind → state key it rewrites).

    Shared options (every core accepts them; core-specific ones come first in each subclass):
      hidden_size, num_heads, expansion: block sizes (head_dim = hidden_size / num_heads; SwiGLU intermediate =
        round_up_256(round(expansion · hidden · 2/3))).
      norm: ``post`` (HRM-Symbolic post-norm blocks), ``pre`` (pre-norm blocks, no exit norm) or ``magic``
        (pre-norm blocks + parameterless RMSNorm at the exit of every module call, HRM-Text's MagicNorm).
      norm_eps: RMSNorm epsilon (1e-5 HRM-Symbolic, 1e-6 HRM-Text).
      pos_encoding: ``rope`` or ``none``; rope_theta and max_seq_len size the RoPE table.
      gated_attn: HRM-Text's elementwise sigmoid output gate. fused_qkv: one fused projection vs separate ones.
      mixer: ``attention`` or ``mlp`` (TRM's token-mixing MLP-t, needs ``seq_len``).
      init: ``trunc2`` (HRM-Symbolic truncated LeCun) or ``fmod3`` (HRM-Text).
      attn_backend: ``auto`` | ``sdpa`` | ``flex`` | ``varlen`` | ``xformers`` | a plugin backend.
      bp_steps: how many of the last module calls keep gradients (None: the core's default).
      compute_dtype: cast inputs and states to this dtype (``bfloat16`` on GPU); None follows the input.
    """

    #: schedule kind → state key that call rewrites (drives telemetry naming and reading).
    updates: ClassVar[dict[str, str]] = {}
    #: named configurations, ``build_core(name, variant)``; every core ships at least ``tiny``.
    variants: ClassVar[dict[str, dict[str, Any]]] = {}
    #: forward draws random numbers (a sampled transition): tasks may run several trajectories and vote.
    stochastic: ClassVar[bool] = False
    #: call() reads ``ctx.targets`` (e.g. an amortised posterior): training tasks then pass the embedded labels.
    uses_targets: ClassVar[bool] = False

    def __init__(self, hidden_size: int = 512, num_heads: int = 8, expansion: float = 4.0, norm: CoreNorm = "post",
                 norm_eps: float = 1e-5, pos_encoding: Literal["rope", "none"] = "rope", rope_theta: float = 10000.0,
                 max_seq_len: int = 4096, gated_attn: bool = False, fused_qkv: bool = True,
                 mixer: Literal["attention", "mlp"] = "attention", seq_len: int | None = None,
                 init: InitScheme = "trunc2", attn_backend: str = "auto", bp_steps: int | None = None,
                 compute_dtype: str | None = None) -> None:
        super().__init__()
        self.config: dict[str, Any] = _constructor_args(self, inspect.currentframe())
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if init not in INIT_SCHEMES:
            raise ValueError(f"init must be one of {INIT_SCHEMES}, got {init!r}")
        if pos_encoding not in ("rope", "none"):
            raise ValueError(f"pos_encoding must be 'rope' or 'none', got {pos_encoding!r}")
        if compute_dtype is not None and compute_dtype not in _DTYPES:
            raise ValueError(f"compute_dtype must be one of {sorted(_DTYPES)} or None, got {compute_dtype!r}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.hidden_size, self.num_heads, self.norm, self.init = hidden_size, num_heads, norm, init
        self.compute_dtype = None if compute_dtype is None else _DTYPES[compute_dtype]
        self._block_kwargs = dict(dim=hidden_size, num_heads=num_heads, expansion=expansion,
                                  norm="post" if norm == "post" else "pre", eps=norm_eps, gated=gated_attn,
                                  fused_qkv=fused_qkv, init=init, mixer=mixer, seq_len=seq_len, backend=attn_backend)
        self.rope = (RotaryEmbedding(hidden_size // num_heads, max_seq_len, rope_theta)
                     if pos_encoding == "rope" and mixer == "attention" else None)
        self._bp_steps: int | None = bp_steps
        self._telemetry: dict[str, bool] | None = None
        self.records: list[CallRecord] = []
        self._sample = True
        self.aux_losses: dict[str, Tensor] = {}  # the last forward's auxiliary loss terms (see CallContext)

    # -- pieces for subclasses ------------------------------------------------------------------------------------
    def make_stack(self, num_layers: int) -> Stack:
        """A stack of ``num_layers`` blocks with this core's block options (MagicNorm adds the exit norm)."""
        return Stack(num_layers, exit_norm=self.norm == "magic", **self._block_kwargs)

    def make_init_buffer(self, name: str) -> None:
        """A fixed, never-trained start vector ``[hidden_size]`` (HRM's H_init/L_init, HRM-Text's z_L_init), std 1."""
        self.register_buffer(name, trunc_normal_(torch.empty(self.hidden_size), 1.0, self.init), persistent=True)

    # -- the contract ---------------------------------------------------------------------------------------------
    @abstractmethod
    def schedule(self) -> list[str]:
        """Static call order, e.g. ``["L", "L", "H", "L", "L", "H"]``."""

    @abstractmethod
    def initial_state(self, x: Tensor) -> State:
        """Fresh latent state for input embeddings ``x`` ``[B, T, D]``."""

    @abstractmethod
    def call(self, kind: str, k: int, i: int, x: Tensor, state: State, ctx: CallContext) -> State:
        """Run module call number ``i`` of the schedule (the ``k``-th of its ``kind``); return the new state."""

    @abstractmethod
    def output(self, state: State) -> Tensor:
        """The hidden tensor heads read after a full pass."""

    @property
    def default_bp_steps(self) -> int:
        return self.num_calls

    @property
    def num_calls(self) -> int:
        return len(self.schedule())

    @property
    def min_bp_steps(self) -> int:
        """Smallest horizon that still lets the output carry gradient."""
        return 1

    @property
    def bp_steps(self) -> int:
        """Deep-credit horizon: how many module calls keep gradients (the DeepCreditWarmup callback sets it)."""
        return self.default_bp_steps if self._bp_steps is None else self._bp_steps

    @bp_steps.setter
    def bp_steps(self, value: int) -> None:
        value = int(value)
        if not self.min_bp_steps <= value <= self.num_calls:
            raise ValueError(f"{type(self).__name__}.bp_steps must be in [{self.min_bp_steps}, {self.num_calls}] "
                             f"(the schedule has {self.num_calls} calls), got {value}")
        self._bp_steps = value

    def check_bp_steps(self) -> None:
        """Validate a ``bp_steps`` given at construction; subclasses call it once their schedule exists."""
        if self._bp_steps is not None:
            self.bp_steps = self._bp_steps

    def grad_calls(self) -> list[bool]:
        """Which schedule positions run with gradients. Default: the last ``bp_steps`` calls (contiguous)."""
        n, bp = self.num_calls, self.bp_steps
        return [i >= n - bp for i in range(n)]

    def call_names(self) -> list[str]:
        seen: dict[str, int] = {}
        names = []
        for kind in self.schedule():
            names.append(f"{kind}{seen.get(kind, 0)}")
            seen[kind] = seen.get(kind, 0) + 1
        return names

    # -- the loop -------------------------------------------------------------------------------------------------
    def prepare(self, x: Tensor, attn: AttnSpec, cache: KVCache | None = None) -> CallContext:
        rope = None
        if self.rope is not None:
            b, t = x.shape[:2]
            # the cache's length is read only when the spec gives no positions (a compiled decode step passes them,
            # so its graph never depends on a host-side counter)
            offset = 0 if cache is None or attn.position_ids is not None else cache.seq_len
            if offset == 0:
                pos = attn.positions(b, t, x.device)
            else:
                pos = torch.arange(offset, offset + t, device=x.device).unsqueeze(0).expand(b, -1)
            rope = self.rope(pos)
        return CallContext(attn=attn, rope=rope, cache=cache)

    def forward(self, x: Tensor, state: State, attn: AttnSpec | None = None,
                cache: KVCache | None = None, *, targets: Tensor | None = None) -> tuple[State, Tensor]:
        """One full pass of the schedule; calls outside the gradient horizon run under ``no_grad``.

        ``targets`` (``[B, T, D]``, training only) reaches cores that declare :attr:`uses_targets`; the pass's
        auxiliary losses are left in :attr:`aux_losses`.
        """
        attn = AttnSpec() if attn is None else attn
        if targets is not None and targets.shape != x.shape:
            raise ValueError(f"{type(self).__name__}: targets must have the input's shape {tuple(x.shape)}, "
                             f"got {tuple(targets.shape)}")
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
            state = {k: v.to(self.compute_dtype) for k, v in state.items()}
            targets = None if targets is None else targets.to(self.compute_dtype)
        ctx = self.prepare(x, attn, cache)
        ctx.targets, ctx.sample = targets, self._sample
        if self._telemetry is not None:
            self.records.clear()
        grad_enabled = torch.is_grad_enabled()
        counts: dict[str, int] = {}
        for i, (kind, with_grad) in enumerate(zip(self.schedule(), self.grad_calls())):
            k = counts.get(kind, 0)
            counts[kind] = k + 1
            with torch.set_grad_enabled(grad_enabled and with_grad):
                state = self.call(kind, k, i, x, state, ctx)
            if self._telemetry is not None:
                self._record(kind, k, i, state)
        self.aux_losses = ctx.aux_losses
        return state, self.output(state)

    @contextlib.contextmanager
    def deterministic(self) -> Iterator[None]:
        """Inside the block a stochastic core takes the mean of each sampled transition (no-op for the others):
        for reproducible checks such as KV-cache equivalence, and for a single mean trajectory."""
        previous, self._sample = self._sample, False
        try:
            yield
        finally:
            self._sample = previous

    # -- telemetry ------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def telemetry(self, grads: bool = False) -> Iterator[list[CallRecord]]:
        """Record per-call RMS / max-abs of the updated state (and, with ``grads``, the gradient norm reaching it)
        for every forward inside the block; ``core.records`` holds the last forward's records."""
        previous = self._telemetry
        self._telemetry = {"grads": grads}
        self.records = []
        try:
            yield self.records
        finally:
            self._telemetry = previous

    def _record(self, kind: str, k: int, i: int, state: State) -> None:
        key = self.updates.get(kind)
        if key is None or key not in state:
            return
        out = state[key]
        with torch.no_grad():
            flat = out.detach().float()
            rec = CallRecord(f"{kind}{k}", i, out.requires_grad, flat.pow(2).mean().sqrt(), flat.abs().max())
        if self._telemetry.get("grads") and out.requires_grad:
            def hook(grad: Tensor, rec: CallRecord = rec) -> None:
                rec.grad_norm = grad.detach().float().norm()

            out.register_hook(hook)
        self.records.append(rec)

    # -- conveniences ---------------------------------------------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        """``{"class_path", "init_args"}``: what a checkpoint stores to rebuild this core (:func:`core_from_config`)."""
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(self.config)}

    def reset_parameters(self) -> None:
        """Re-initialise every weight and init buffer with this core's scheme (used after meta-device init)."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        for name, buf in self.named_buffers(recurse=False):
            if name.endswith("_init"):
                trunc_normal_(buf, 1.0, self.init)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"schedule={''.join(self.schedule())}, bp_steps={self.bp_steps}, norm={self.norm}"


CORES: Registry[type[RecursiveCore]] = track(Registry("core", group="hrmkit.cores", base=RecursiveCore))
register_core = CORES.register


def _constructor_args(core: RecursiveCore, frame: Any) -> dict[str, Any]:
    """The arguments every ``__init__`` in the chain was called with, outermost subclass winning.

    Walks the ``__init__`` frames of this object (the same idea as Lightning's ``save_hyperparameters``) so that a
    core, plugin cores included, can be rebuilt from a checkpoint without each class recording its own arguments.
    """
    merged: dict[str, Any] = {}
    while frame is not None and frame.f_code.co_name == "__init__" and frame.f_locals.get("self") is core:
        info = inspect.getargvalues(frame)
        args = {n: info.locals[n] for n in info.args if n != "self"}
        merged = {**args, **merged}
        frame = frame.f_back
    return merged


def core_from_config(config: dict[str, Any]) -> RecursiveCore:
    """Rebuild a core from :meth:`RecursiveCore.to_config`. Only registered cores (built-in or entry-point plugins)
    are accepted, so a checkpoint cannot make hrmkit import arbitrary code."""
    if not isinstance(config, dict) or "class_path" not in config:
        raise ValueError(f"a core config must be a dict with 'class_path' and 'init_args', got {config!r}")
    path = config["class_path"]
    for name in CORES.names():
        cls = CORES.get(name)
        if f"{cls.__module__}.{cls.__qualname__}" == path or cls.__qualname__ == path:
            return cls(**config.get("init_args", {}))
    raise ValueError(f"core class {path!r} is not a registered hrmkit core (registered: {', '.join(CORES.names())}); "
                     "install the plugin that provides it")

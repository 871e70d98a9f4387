"""The core contract as plain check functions: each builds fresh cores from a :class:`CoreCase` and raises
``AssertionError`` naming the core and the broken promise. Built-in cores and plugins run exactly these checks
(through :class:`hrmkit.testing.CoreContract` under pytest, or :func:`check_core` anywhere else).

Outputs are compared inside ``core.deterministic()``, so stochastic cores are checked on their mean trajectory
and, separately, for honest sampling (:func:`check_sampling`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from hrmkit.cores import CORES, RecursiveCore, core_from_config
from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.cache import KVCache
from hrmkit.testing.case import CoreCase

SEED = 0


def _fresh(case: CoreCase, **overrides) -> RecursiveCore:
    torch.manual_seed(SEED)
    return case.build(**overrides)


def _input(core: RecursiveCore, b: int = 2, t: int = 6, requires_grad: bool = False) -> Tensor:
    return torch.randn(b, t, core.hidden_size, generator=torch.Generator().manual_seed(SEED + 1),
                       requires_grad=requires_grad)


def _run(core: RecursiveCore, x: Tensor, attn: AttnSpec | None = None, **kwargs) -> tuple[dict[str, Tensor], Tensor]:
    return core(x, core.initial_state(x), attn or AttnSpec(), **kwargs)


def _close(a: Tensor, b: Tensor, what: str, case: CoreCase, **tol) -> None:
    try:
        torch.testing.assert_close(a, b, **tol)
    except AssertionError as err:
        raise AssertionError(f"core {case}: {what}\n{err}") from None


def check_forward_backward(case: CoreCase) -> None:
    """One pass keeps every state tensor and the output at the input's shape, and gradients reach the weights."""
    core = _fresh(case)
    x = _input(core, requires_grad=True)
    state, out = _run(core, x)
    assert out.shape == x.shape, f"core {case}: output shape {tuple(out.shape)}, expected {tuple(x.shape)}"
    for key, value in state.items():
        assert value.shape == x.shape, f"core {case}: state[{key!r}] has shape {tuple(value.shape)}, expected " \
                                       f"{tuple(x.shape)}"
    assert len(core.call_names()) == core.num_calls == len(core.grad_calls()), \
        f"core {case}: call_names(), schedule() and grad_calls() disagree on the number of calls"
    out.float().square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in core.parameters()), \
        f"core {case}: no parameter received a gradient"


def check_reproducible(case: CoreCase) -> None:
    """Same weights and input give the same output (for stochastic cores: inside ``deterministic()``)."""
    core = _fresh(case)
    x = _input(core)
    with torch.no_grad(), core.deterministic():
        _close(_run(core, x)[1], _run(core, x)[1], "two forwards on the same input differ", case)
    if not core.stochastic:
        with torch.no_grad():
            _close(_run(core, x)[1], _run(core, x)[1], "a core not marked `stochastic` is not deterministic", case)


def check_sampling(case: CoreCase) -> None:
    """A ``stochastic`` core draws a new trajectory per forward, reproducibly under a seed; others ignore
    ``deterministic()``."""
    core = _fresh(case).eval()
    x = _input(core)
    with torch.no_grad():
        if not core.stochastic:
            with core.deterministic():
                inside = _run(core, x)[1]
            _close(inside, _run(core, x)[1], "deterministic() changed a non-stochastic core's output", case)
            return
        torch.manual_seed(1)
        a = _run(core, x)[1]
        torch.manual_seed(1)
        again = _run(core, x)[1]
        b = _run(core, x)[1]
        with core.deterministic():
            mean = _run(core, x)[1]
    _close(a, again, "the same seed must give the same sampled trajectory", case)
    assert not torch.allclose(a, b), f"core {case} is marked stochastic but two forwards gave the same output"
    assert not torch.allclose(a, mean), f"core {case}: deterministic() did not switch sampling off"


def check_state_carries(case: CoreCase) -> None:
    """A second segment from the detached state continues the computation (or, for stateless cores, repeats it)."""
    core = _fresh(case)
    x = _input(core, b=1, t=5)
    with torch.no_grad(), core.deterministic():
        s1, o1 = _run(core, x)
        s2, o2 = core(x, {k: v.detach() for k, v in s1.items()}, AttnSpec())
    assert set(s2) == set(s1), f"core {case}: the state keys changed between segments ({set(s1)} → {set(s2)})"
    if case.carries_state:
        assert not torch.allclose(o1, o2), f"core {case}: a second segment from the carried state gave the same " \
                                           "output (pass carries_state=False for a stateless core)"
    else:
        _close(o1, o2, "a stateless core gave a different output from a carried state", case)


def check_gradient_horizon(case: CoreCase) -> None:
    """``bp_steps`` is validated against the schedule, ``grad_calls()`` allocates exactly ``bp_steps`` calls, and
    the calls that ran with gradients are exactly those."""
    core = _fresh(case)
    n = core.num_calls
    for bad in (core.min_bp_steps - 1, n + 1):
        try:
            core.bp_steps = bad
        except ValueError:
            continue
        raise AssertionError(f"core {case}: bp_steps={bad} outside [{core.min_bp_steps}, {n}] was accepted")
    x = _input(core, b=1, t=4)
    for bp in range(core.min_bp_steps, n + 1):
        core.bp_steps = bp
        flags = core.grad_calls()
        assert sum(flags) == bp, f"core {case}: bp_steps={bp} but grad_calls() gives {sum(flags)} calls gradients"
        with core.telemetry() as records, core.deterministic():
            _, out = _run(core, x)
        names = core.call_names()
        for rec in records:
            assert rec.grad == flags[rec.index], \
                f"core {case}: call {names[rec.index]} ran with grad={rec.grad}, grad_calls() says {flags[rec.index]}"
        assert out.requires_grad, f"core {case}: bp_steps={bp} leaves the output without gradient"


def check_telemetry(case: CoreCase) -> None:
    """Nothing is recorded by default; inside ``telemetry(grads=True)`` each recorded call is named after its
    schedule position and carries a gradient norm iff it ran with gradients."""
    core = _fresh(case)
    x = _input(core)
    _run(core, x)
    assert core.records == [], f"core {case}: telemetry recorded while disabled"
    with core.telemetry(grads=True) as records:
        _, out = _run(core, x)
        out.float().sum().backward()
    names = core.call_names()
    assert records, f"core {case}: telemetry recorded nothing (set `updates`: schedule kind → state key)"
    assert [r.index for r in records] == sorted(r.index for r in records)
    for rec in records:
        assert rec.name == names[rec.index], f"core {case}: record {rec.name} at schedule position {rec.index}"
        assert torch.isfinite(rec.rms) and torch.isfinite(rec.max_abs), f"core {case}: non-finite telemetry"
        assert (rec.grad_norm is not None) == rec.grad, f"core {case}: call {rec.name} grad={rec.grad} but " \
                                                        f"grad_norm={rec.grad_norm}"


def check_kv_cache_decoding(case: CoreCase) -> None:
    """Prefill + token-by-token decoding with a KV cache equals one PrefixLM forward over the whole sequence."""
    core = _fresh(case).eval()
    t, prefix = 7, 3
    x = _input(core, b=1, t=t)
    full_spec = AttnSpec("prefixlm", prefix_lens=torch.tensor([prefix]))
    with torch.no_grad(), core.deterministic():
        _, full = _run(core, x, full_spec)
        cache = KVCache()
        _, prefill = core(x[:, :5], core.initial_state(x[:, :5]), full_spec, cache)
        outs = [prefill]
        for pos in (5, 6):
            step = x[:, pos:pos + 1]
            outs.append(core(step, core.initial_state(step), AttnSpec("causal"), cache)[1])
    _close(torch.cat(outs, 1), full, "KV-cache decoding differs from the full PrefixLM forward", case,
           atol=1e-5, rtol=1e-4)
    assert len(cache) > 0, f"core {case}: decoding with a KVCache stored nothing in it"


def check_config_round_trip(case: CoreCase) -> None:
    """``core_from_config(core.to_config())`` rebuilds the same core (the checkpoint path), options included."""
    core = _fresh(case, bp_steps=_fresh(case).min_bp_steps)
    cfg = core.to_config()
    assert cfg["init_args"].get("bp_steps") == core.bp_steps, f"core {case}: to_config() lost bp_steps"
    if not case.registered:
        raise AssertionError(f"core {case} is not registered: checkpoints cannot rebuild it (declare the "
                             "hrmkit.cores entry point, or use @register_core)")
    rebuilt = core_from_config(cfg)
    assert type(rebuilt) is type(core) and rebuilt.bp_steps == core.bp_steps, f"core {case}: rebuilt differently"
    rebuilt.load_state_dict(core.state_dict())
    x = _input(core)
    with torch.no_grad(), core.deterministic(), rebuilt.deterministic():
        _close(_run(rebuilt, x)[1], _run(core, x)[1], "the rebuilt core computes something else", case)


def check_meta_init(case: CoreCase) -> None:
    """Built on the meta device, materialised and ``reset_parameters()``-ed, every weight is initialised again
    (nothing left as uninitialised memory) and zero-initialised weights are zero again."""
    reference = _fresh(case)
    with torch.device("meta"):
        core = case.build()
    core.to_empty(device="cpu")
    with torch.no_grad():
        for p in core.parameters():
            p.fill_(float("nan"))
    core.reset_parameters()
    ref = dict(reference.named_parameters())
    for name, p in core.named_parameters():
        assert torch.isfinite(p).all(), f"core {case}: reset_parameters() left {name} uninitialised"
        assert bool((p == 0).all()) == bool((ref[name] == 0).all()), \
            f"core {case}: {name} is initialised differently by reset_parameters() than by the constructor"
    for name, buf in core.named_buffers():
        if name.rsplit(".", 1)[-1].endswith("_init"):
            assert torch.isfinite(buf).all() and buf.abs().sum() > 0, f"core {case}: init buffer {name} not reset"
    with torch.no_grad(), core.deterministic():
        out = _run(core, _input(core))[1]
    assert torch.isfinite(out).all(), f"core {case}: non-finite output after meta-device init"


def check_compute_dtype(case: CoreCase) -> None:
    """``compute_dtype="bfloat16"`` runs the states (and the output) in bf16 while the weights stay fp32."""
    core = _fresh(case, compute_dtype="bfloat16")
    _, out = _run(core, _input(core))
    assert out.dtype == torch.bfloat16, f"core {case}: compute_dtype=bfloat16 gave a {out.dtype} output"
    assert all(p.dtype == torch.float32 for p in core.parameters()), f"core {case}: weights left fp32"


def check_variants(case: CoreCase) -> None:
    """Every core ships a ``tiny`` variant; a registered name resolves to the class under test."""
    cls = CORES.get(case.core) if isinstance(case.core, str) else case.core
    assert "tiny" in getattr(cls, "variants", {}), f"core {case}: no 'tiny' variant (tests and demos use it)"
    if isinstance(case.core, str):
        assert case.core in CORES.names(), f"core {case}: not in the registry"


def check_targets_and_aux_losses(case: CoreCase) -> None:
    """Every core accepts ``targets``; ``aux_losses`` holds finite scalars of the last forward only; a core that
    declares ``uses_targets`` actually reads them and one that does not ignores them."""
    core = _fresh(case).train()
    x = _input(core)
    targets = _input(core, requires_grad=True) * 0.5
    try:
        core(x, core.initial_state(x), AttnSpec(), targets=targets[:, :-1])
    except ValueError:
        pass
    else:
        raise AssertionError(f"core {case}: targets of the wrong shape were accepted")
    with core.deterministic():
        _, with_targets = _run(core, x, targets=targets)
        aux = dict(core.aux_losses)
        _, without = _run(core, x)
    for name, value in aux.items():
        assert isinstance(value, Tensor) and value.dim() == 0 and torch.isfinite(value), \
            f"core {case}: aux loss {name!r} is not a finite scalar tensor ({value!r})"
    if core.uses_targets:
        total = with_targets.float().sum() + sum(aux.values(), torch.zeros(()))
        (grad,) = torch.autograd.grad(total, targets, allow_unused=True)
        assert grad is not None, \
            f"core {case} declares uses_targets but its output and aux losses never read the targets"
    else:
        _close(with_targets, without, "a core that does not declare uses_targets changed with targets", case)


def check_task_checkpoint(case: CoreCase, tmp_dir: str | Path | None = None) -> None:
    """The core trains two steps inside a task and its checkpoint reloads outside the CLI with equal weights."""
    import lightning as L

    from hrmkit.data import SyntheticDataModule
    from hrmkit.tasks import SequenceTask

    if not case.registered:
        raise AssertionError(f"core {case} is not registered: its checkpoints cannot be reloaded")
    with tempfile.TemporaryDirectory() as fallback:
        root = Path(tmp_dir if tmp_dir is not None else fallback)
        model = SequenceTask(_fresh(case), vocab_size=8)
        trainer = L.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                            enable_checkpointing=False, default_root_dir=root, num_sanity_val_steps=0,
                            limit_val_batches=1, accelerator="cpu", devices=1)
        trainer.fit(model, SyntheticDataModule(seq_len=5, vocab_size=8, num_train=64, num_val=16, batch_size=16))
        path = root / "core.ckpt"
        trainer.save_checkpoint(path)
        loaded = SequenceTask.load_from_checkpoint(path)
    assert type(loaded.core) is type(model.core), f"core {case}: reloaded as {type(loaded.core).__name__}"
    for (name, a), b in zip(loaded.state_dict().items(), model.state_dict().values()):
        _close(a, b, f"reloaded weight {name} differs", case)


#: every check, in the order :func:`check_core` runs them.
CHECKS: tuple[Callable[[CoreCase], None], ...] = (
    check_variants, check_forward_backward, check_reproducible, check_sampling, check_state_carries,
    check_gradient_horizon, check_telemetry, check_kv_cache_decoding, check_config_round_trip, check_meta_init,
    check_compute_dtype, check_targets_and_aux_losses, check_task_checkpoint,
)


def check_core(case: CoreCase | str | type[RecursiveCore]) -> None:
    """Run the whole contract on one core outside pytest; raises on the first broken promise."""
    if not isinstance(case, CoreCase):
        case = CoreCase(case)
    for check in CHECKS:
        check(case)

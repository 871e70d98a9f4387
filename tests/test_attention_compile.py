"""torch.compile of the HRM-Text core on every attention path the CPU can run: no graph break, ``fullgraph=True``.

The spec comes from ``TextTask.attn_spec`` (the production planning code: the varlen plan is built there, once per
batch, outside the core). Paths: ``sdpa``; ``flex`` forward; ``varlen`` through its CPU reference kernel; and the
CUDA branches' Python (``flex`` with its compiled-kernel branch, ``varlen`` calling a stand-in for torch's
``varlen_attn`` with the same signature) with the device checks patched to say "cuda".
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torch import Tensor

from hrmkit.cores import build_core
from hrmkit.data.text.packing import pack_batch
from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.backends import ATTENTION, base, varlen
from hrmkit.nn.backends.varlen import VarlenBackend, reference_kernel
from hrmkit.tasks import TextTask
from hrmkit.testing.graph_breaks import GraphCounter, trace_report


def fake_varlen_attn(query: Tensor, key: Tensor, value: Tensor, cu_seq_q: Tensor, cu_seq_k: Tensor | None,
                     max_q: int, max_k: int, *, scale: float | None = None,
                     window_size: tuple[int, int] = (-1, -1)) -> Tensor:
    """torch's varlen_attn semantics on the CPU: window (-1, 0) is bottom-right causal, (-1, -1) bidirectional."""
    assert window_size in ((-1, 0), (-1, -1))
    return reference_kernel(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, window_size == (-1, 0), scale)


def _packed_batch(seed: int = 0, docs: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    return pack_batch([(rng.integers(3, 40, int(rng.integers(6, 14))).astype(np.int64), int(rng.integers(0, 6)))
                       for _ in range(docs)], 64, pad_id=0)


def _task(backend: str, dtype: torch.dtype = torch.float32) -> TextTask:
    """HRM-Text tiny, cut to 3 attention calls per pass (2 with gradient) so tracing stays quick."""
    torch.manual_seed(0)
    core = build_core("hrm", "text-tiny", attn_backend=backend, H_cycles=1, L_cycles=2, bp_steps=2)
    return TextTask(core, vocab_size=40).to(dtype)


@pytest.fixture
def cuda_branches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every backend believes its tensors live on CUDA, and varlen's kernel is the CPU stand-in above."""
    monkeypatch.setattr(base, "device_type", lambda t: "cuda")
    monkeypatch.setattr(torch.backends.cuda, "is_flash_attention_available", lambda: True)
    monkeypatch.setattr(varlen, "installed_varlen_attn", lambda: fake_varlen_attn)
    monkeypatch.setitem(base._INSTANCES, "varlen", VarlenBackend())
    flex = ATTENTION.get("flex")()
    flex.triton_missing = False
    monkeypatch.setitem(base._INSTANCES, "flex", flex)


@pytest.fixture
def varlen_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """``varlen`` runs its production plan through the CPU reference kernel."""
    monkeypatch.setitem(base._INSTANCES, "varlen", VarlenBackend(kernel=reference_kernel))


# backend, grad, fixture, dtype: flex has no CPU backward, so its paths run forward only; FlashAttention's branch
# accepts bf16 only
PATHS = {
    "sdpa": ("sdpa", True, None, torch.float32),
    "flex": ("flex", False, None, torch.float32),
    "varlen-reference": ("varlen", True, "varlen_reference", torch.float32),
    "flex-cuda-branch": ("flex", False, "cuda_branches", torch.float32),
    "varlen-cuda-branch": ("varlen", True, "cuda_branches", torch.bfloat16),
}


def _inputs(task: TextTask, batch: dict) -> tuple[Tensor, dict, AttnSpec]:
    spec = task.attn_spec(batch)
    x = task.embed(batch["input_ids"]).detach()
    return x, task.core.initial_state(x), spec


@pytest.mark.parametrize("path", PATHS)
def test_core_compiles_without_graph_breaks(path: str, request: pytest.FixtureRequest) -> None:
    backend, grad, fixture, dtype = PATHS[path]
    if fixture:
        request.getfixturevalue(fixture)
    torch._dynamo.reset()
    ATTENTION.names()
    task = _task(backend, dtype)
    core = task.core
    batch = _packed_batch()
    x, state, spec = _inputs(task, batch)
    if backend == "varlen":  # planned once per batch by the task, outside the core
        assert spec.plan is not None and spec.plan.calls and all(c.cu_q is not None for c in spec.plan.calls)
    with torch.set_grad_enabled(grad):
        report = trace_report(core, x, state, spec)  # torch._dynamo.explain
        assert report.breaks == 0, report.reasons
        assert report.graphs == 1
        torch._dynamo.reset()
        counter = GraphCounter()
        compiled = torch.compile(core, backend=counter, fullgraph=True)
        xe, xc = x.clone().requires_grad_(grad), x.clone().requires_grad_(grad)
        _, eager_out = core(xe, state, spec)
        _, compiled_out = compiled(xc, state, spec)
        torch.testing.assert_close(compiled_out, eager_out)
        assert counter.graphs == 1
        if grad:
            g = torch.randn_like(eager_out)
            (eager_out * g).sum().backward()
            (compiled_out * g).sum().backward()
            torch.testing.assert_close(xc.grad, xe.grad)
        if backend == "varlen":  # a new batch (other document count and lengths) plans outside, compiles once more
            x2, state2, spec2 = _inputs(task, _packed_batch(seed=1, docs=4))
            compiled(x2, state2, spec2)
            x3, state3, spec3 = _inputs(task, _packed_batch(seed=2, docs=4))
            torch.testing.assert_close(compiled(x3, state3, spec3)[1], core(x3, state3, spec3)[1])
            assert counter.graphs == 2  # the plan's lengths became dynamic: the third batch reuses the graph


def test_varlen_reference_core_matches_sdpa_core() -> None:
    """The planned varlen path computes what the dense-mask sdpa path computes, through the whole core."""
    batch = _packed_batch()
    out = {}
    for backend in ("sdpa", "varlen"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(base._INSTANCES, "varlen", VarlenBackend(kernel=reference_kernel))
            task = _task(backend)
            x, state, spec = _inputs(task, batch)
            out[backend] = task.core(x, state, spec)[1]
    torch.testing.assert_close(out["varlen"], out["sdpa"], atol=1e-5, rtol=1e-5)


def test_task_plans_only_for_backends_that_use_a_plan() -> None:
    batch = _packed_batch()
    assert _task("sdpa").attn_spec(batch).plan is None
    assert _task("auto").attn_spec(batch).plan is None  # auto on the CPU is sdpa
    assert _task("flex").attn_spec(batch).plan is None


def test_fake_has_torch_signature_for_the_arguments_hrmkit_passes() -> None:
    """Keeps the stand-in honest: it accepts exactly what the installed torch's varlen_attn accepts, and more not."""
    real = varlen.installed_varlen_attn()
    if real is None:
        pytest.skip("this torch has no torch.nn.attention.varlen.varlen_attn")
    ours = inspect.signature(fake_varlen_attn).parameters
    theirs = inspect.signature(real).parameters
    for name in ours:
        assert name in theirs and theirs[name].kind == ours[name].kind, name


def test_each_module_chooses_once_per_kind_of_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The choice is made on the first eager call of a kind and remembered; a new kind chooses again."""
    from hrmkit.nn.attention import Attention
    from hrmkit.nn.backends import selection

    asked = []
    resolve = selection._resolve
    monkeypatch.setattr(selection, "_resolve", lambda *a: asked.append(a[0]) or resolve(*a))
    attn = Attention(16, 2, backend="auto")
    x = torch.randn(1, 6, 16)
    spec = AttnSpec("causal")
    for _ in range(3):
        attn(x, spec)
    assert len(asked) == 1  # cpu, causal, grad: chosen once
    with torch.no_grad():
        attn(x, spec)
        attn(x, spec)
    assert len(asked) == 2  # a new kind of call (no grad) chose once more


def test_unknown_backend_fails_when_the_module_is_built() -> None:
    from hrmkit.registry import PluginError

    with pytest.raises(PluginError, match="sdpaa"):
        build_core("hrm", "text-tiny", attn_backend="sdpaa")

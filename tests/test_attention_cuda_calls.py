"""The exact kernel calls of the CUDA-only backends, argument by argument, on the CPU.

``varlen`` and ``xformers`` cannot run here, so their kernels are replaced by recording fakes: the varlen fake binds
every call against the installed torch's own ``varlen_attn`` signature (a call torch would reject fails here), and
the xformers fake stands in for the ``xformers.ops`` package with its bias classes. Both fakes compute attention with
the semantics the real kernels document, so the backends' outputs are also checked against the oracle.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import types
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from _attention_ref import oracle, packed_spec, qkv
from torch import Tensor

from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.backends import BackendUnavailable, attend, base, select_backend, varlen, with_plan
from hrmkit.nn.backends.varlen import VarlenBackend, reference_kernel
from hrmkit.nn.backends.xformers_backend import XformersBackend

LENS, PREFIXES = [3, 2, 0, 1, 5], [0, 2, 4, 1, 3]  # causal doc, all-prefix doc, empty doc, length-1, real prefix


def _torch_signature_fake() -> Any:
    """Stand-in signature when this torch has no varlen_attn (the one torch 2.10+ ships)."""
    def varlen_attn(query: Tensor, key: Tensor, value: Tensor, cu_seq_q: Tensor, cu_seq_k: Tensor | None,
                    max_q: int, max_k: int, *, scale: float | None = None,
                    window_size: tuple[int, int] = (-1, -1)) -> Tensor: ...
    return varlen_attn


class RecordingVarlen:
    """Records each call bound to the real signature; computes it as FlashAttention's varlen kernel would."""

    def __init__(self, signature_of: Any = None) -> None:
        real = varlen.installed_varlen_attn() if signature_of is None else signature_of
        self.signature = inspect.signature(real or _torch_signature_fake())
        self.__signature__ = self.signature  # what VarlenBackend's signature check reads
        self.calls: list[dict[str, Any]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        bound = self.signature.bind(*args, **kwargs)  # TypeError here = torch would reject the call
        bound.apply_defaults()
        call = dict(bound.arguments)
        self.calls.append(call)
        causal = {(-1, 0): True, (-1, -1): False}[tuple(call["window_size"])]
        return reference_kernel(call["query"], call["key"], call["value"], call["cu_seq_q"], call["cu_seq_k"],
                                call["max_q"], call["max_k"], causal, call["scale"])


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> RecordingVarlen:
    """Backends believe their tensors are on CUDA; varlen's kernel is the recording fake."""
    fake = RecordingVarlen()
    monkeypatch.setattr(base, "device_type", lambda t: "cuda")
    monkeypatch.setattr(torch.backends.cuda, "is_flash_attention_available", lambda: True)
    monkeypatch.setattr(varlen, "installed_varlen_attn", lambda: fake)
    monkeypatch.setitem(base._INSTANCES, "varlen", VarlenBackend())
    return fake


def _cu(lens: list[int]) -> list[int]:
    return [0, *torch.tensor(lens).cumsum(0).tolist()]


def _check_output(out: Tensor, q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec, scale: float | None) -> None:
    want = oracle(q.double(), k.double(), v.double(), spec, scale)
    torch.testing.assert_close(out.double(), want, atol=3e-2, rtol=3e-2)


# --------------------------------------------------------------------------------------------------- varlen
@pytest.mark.parametrize("planned", [True, False], ids=["planned-by-caller", "planned-by-backend"])
def test_varlen_packed_prefixlm_calls(fake_cuda: RecordingVarlen, planned: bool) -> None:
    spec = packed_spec("prefixlm", LENS, PREFIXES)
    if planned:
        spec = with_plan(spec, 1, sum(LENS))
    q, k, v = qkv(1, sum(LENS), heads=2, dim=8, dtype=torch.bfloat16)
    out = attend(q, k, v, spec, backend="varlen", scale=0.3)
    _check_output(out, q, k, v, spec, 0.3)
    prefix, suffix = fake_cuda.calls
    rows = q[0]
    # call 1: prefix queries x prefix keys, bidirectional (docs with a prefix: 2 of doc 1, 1 of doc 3, 3 of doc 4)
    pre_rows = [3, 4, 5, 6, 7, 8]
    assert torch.equal(prefix["query"], rows[pre_rows]) and torch.equal(prefix["key"], k[0][pre_rows])
    assert torch.equal(prefix["value"], v[0][pre_rows])
    assert prefix["cu_seq_q"].tolist() == prefix["cu_seq_k"].tolist() == _cu([2, 1, 3])
    assert (prefix["max_q"], prefix["max_k"], prefix["scale"], prefix["window_size"]) == (3, 3, 0.3, (-1, -1))
    # call 2: suffix queries x the whole document's keys, bottom-right causal (docs 0 and 4 have a suffix)
    suf_rows, key_rows = [0, 1, 2, 9, 10], [0, 1, 2, 6, 7, 8, 9, 10]
    assert torch.equal(suffix["query"], rows[suf_rows]) and torch.equal(suffix["key"], k[0][key_rows])
    assert suffix["cu_seq_q"].tolist() == _cu([3, 2]) and suffix["cu_seq_k"].tolist() == _cu([3, 5])
    assert (suffix["max_q"], suffix["max_k"], suffix["scale"], suffix["window_size"]) == (3, 5, 0.3, (-1, 0))
    for call in fake_cuda.calls:
        assert call["query"].dtype == torch.bfloat16 and call["cu_seq_q"].dtype == torch.int32
        assert all(call[n].is_contiguous() for n in ("query", "key", "value", "cu_seq_q", "cu_seq_k"))
        assert call.get("return_aux") is None  # nothing else is passed: torch's defaults hold


@pytest.mark.parametrize("kind, q_len, kv_len, window", [
    ("causal", 5, 5, (-1, 0)),
    ("bidirectional", 5, 5, (-1, -1)),
    ("causal", 2, 7, (-1, 0)),  # KV-cache decoding: bottom-right, the queries are the last two positions
])
def test_varlen_unpacked_calls(fake_cuda: RecordingVarlen, kind: str, q_len: int, kv_len: int,
                               window: tuple[int, int]) -> None:
    q, _, _ = qkv(3, q_len, dtype=torch.bfloat16)
    _, k, v = qkv(3, kv_len, dtype=torch.bfloat16)
    out = attend(q, k, v, AttnSpec(kind), backend="varlen")
    (call,) = fake_cuda.calls
    assert call["query"].shape == (3 * q_len, 2, 8) and call["key"].shape == (3 * kv_len, 2, 8)
    assert call["cu_seq_q"].tolist() == _cu([q_len] * 3) and call["cu_seq_k"].tolist() == _cu([kv_len] * 3)
    assert (call["max_q"], call["max_k"], call["scale"], call["window_size"]) == (q_len, kv_len, None, window)
    ref = attend(q.double(), k.double(), v.double(), AttnSpec(kind), backend="sdpa")
    torch.testing.assert_close(out.double(), ref, atol=3e-2, rtol=3e-2)


def _without(name: str) -> Any:
    """A varlen_attn signature lacking one argument hrmkit passes (an older torch)."""
    real = inspect.signature(varlen.installed_varlen_attn() or _torch_signature_fake())
    params = [p for p in real.parameters.values() if p.name != name]

    def old_varlen_attn(*args: Any, **kwargs: Any) -> Tensor:
        raise AssertionError("never called: the signature check refuses it first")

    old_varlen_attn.__signature__ = real.replace(parameters=params)  # type: ignore[attr-defined]
    return old_varlen_attn


@pytest.mark.parametrize("missing", ["window_size", "scale", "max_k"])
def test_varlen_refuses_a_torch_whose_varlen_attn_lacks_an_argument(monkeypatch: pytest.MonkeyPatch,
                                                                    missing: str) -> None:
    old = _without(missing)
    monkeypatch.setattr(base, "device_type", lambda t: "cuda")
    monkeypatch.setattr(torch.backends.cuda, "is_flash_attention_available", lambda: True)
    monkeypatch.setattr(varlen, "installed_varlen_attn", lambda: old)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.warns(UserWarning, match="'varlen' is unusable"):
        backend = VarlenBackend()
    monkeypatch.setitem(base._INSTANCES, "varlen", backend)
    expected = "positional" if missing == "max_k" else f"{missing}="
    assert torch.__version__ in backend.problem and expected in backend.problem
    spec = packed_spec("prefixlm", LENS, PREFIXES)
    q, k, v = qkv(1, sum(LENS), dtype=torch.bfloat16)
    with pytest.raises(BackendUnavailable, match=rf"varlen.*torch {re.escape(torch.__version__)}.*flex"):
        attend(q, k, v, spec, backend="varlen")
    # auto falls back to the next candidate (flex, or sdpa), never to a kernel call that would fail
    assert select_backend("cuda", spec, True, sum(LENS), sum(LENS)) != "varlen"


def test_varlen_missing_from_torch_names_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(varlen, "installed_varlen_attn", lambda: None)
    backend = VarlenBackend()
    assert backend.unavailable_reason("cuda", AttnSpec("causal"), True, 4, 4) == backend.problem
    assert f"torch {torch.__version__} has no torch.nn.attention.varlen.varlen_attn" in backend.problem


def test_installed_torch_passes_the_signature_check() -> None:
    real = varlen.installed_varlen_attn()
    if real is None:
        pytest.skip("this torch has no varlen_attn")
    assert varlen.signature_problem(real) is None


# ------------------------------------------------------------------------------------------------- xformers
@dataclass
class FakeBias:
    """xformers' attention-bias semantics, materialised as a boolean "may attend" mask."""

    kind: str
    q_seqlen: list[int] | None = None
    kv_seqlen: list[int] | None = None
    device: Any = None

    def allowed(self, q_rows: int, kv_rows: int) -> Tensor:
        if self.q_seqlen is None:  # LowerTriangular[FromBottomRight]Mask over one [q_rows, kv_rows] block
            shift = kv_rows - q_rows if "FromBottomRight" in self.kind else 0
            return torch.ones(q_rows, kv_rows, dtype=torch.bool).tril(shift)
        blocks = []
        for lq, lk in zip(self.q_seqlen, self.kv_seqlen):
            if self.kind == "BlockDiagonalMask":
                blocks.append(torch.ones(lq, lk, dtype=torch.bool))
            else:  # BlockDiagonalCausalMask: top-left; ...FromBottomRight: bottom-right
                shift = lk - lq if "FromBottomRight" in self.kind else 0
                blocks.append(torch.ones(lq, lk, dtype=torch.bool).tril(shift))
        return torch.block_diag(*blocks)


def _bias_class(kind: str, block_diagonal: bool, log: list) -> type:
    class Bias(FakeBias):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(kind, *args, **kwargs)
            log.append(self)

    if block_diagonal:
        def from_seqlens(cls: type, q_seqlen: list[int], kv_seqlen: list[int] | None = None, *,
                         device: Any = None) -> FakeBias:
            return cls(list(q_seqlen), list(q_seqlen if kv_seqlen is None else kv_seqlen), device)

        Bias.from_seqlens = classmethod(from_seqlens)  # type: ignore[attr-defined]
    Bias.__name__ = kind
    return Bias


@pytest.fixture
def fake_xformers(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """``xformers.ops`` and its bias classes, recording every bias and every memory_efficient_attention call."""
    record = types.SimpleNamespace(biases=[], calls=[])
    attn_bias = types.ModuleType("xformers.ops.fmha.attn_bias")
    for kind, block in [("BlockDiagonalMask", True), ("BlockDiagonalCausalMask", True),
                        ("BlockDiagonalCausalFromBottomRightMask", True), ("LowerTriangularMask", False),
                        ("LowerTriangularFromBottomRightMask", False)]:
        setattr(attn_bias, kind, _bias_class(kind, block, record.biases))

    def memory_efficient_attention(query: Tensor, key: Tensor, value: Tensor, attn_bias: Any = None, p: float = 0.0,
                                   scale: float | None = None, *, op: Any = None,
                                   output_dtype: Any = None) -> Tensor:
        record.calls.append(dict(query=query, key=key, value=value, attn_bias=attn_bias, p=p, scale=scale, op=op))
        b, tq, tk = query.shape[0], query.shape[1], key.shape[1]
        mask = torch.ones(tq, tk, dtype=torch.bool) if attn_bias is None else attn_bias.allowed(tq, tk)
        qt, kt, vt = (t.transpose(1, 2) for t in (query, key, value))
        out = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale)
        return out.transpose(1, 2).reshape(b, tq, *query.shape[2:])

    ops = types.ModuleType("xformers.ops")
    ops.memory_efficient_attention = memory_efficient_attention
    fmha = types.ModuleType("xformers.ops.fmha")
    fmha.attn_bias = attn_bias
    ops.fmha = fmha
    package = types.ModuleType("xformers")
    package.ops = ops
    for name, module in [("xformers", package), ("xformers.ops", ops), ("xformers.ops.fmha", fmha),
                         ("xformers.ops.fmha.attn_bias", attn_bias)]:
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(base, "device_type", lambda t: "cuda")
    backend = XformersBackend()
    assert backend.import_error is None
    monkeypatch.setitem(base._INSTANCES, "xformers", backend)
    return record


@pytest.mark.parametrize("planned", [True, False], ids=["planned-by-caller", "planned-by-backend"])
def test_xformers_packed_prefixlm_calls(fake_xformers: types.SimpleNamespace, planned: bool) -> None:
    spec = packed_spec("prefixlm", LENS, PREFIXES)
    if planned:
        spec = with_plan(spec, 1, sum(LENS))
    q, k, v = qkv(1, sum(LENS), dtype=torch.bfloat16)
    out = attend(q, k, v, spec, backend="xformers", scale=0.3)
    _check_output(out, q, k, v, spec, 0.3)
    prefix_bias, suffix_bias = fake_xformers.biases
    assert (type(prefix_bias).__name__, prefix_bias.q_seqlen, prefix_bias.kv_seqlen) == (
        "BlockDiagonalMask", [2, 1, 3], [2, 1, 3])
    assert (type(suffix_bias).__name__, suffix_bias.q_seqlen, suffix_bias.kv_seqlen) == (
        "BlockDiagonalCausalFromBottomRightMask", [3, 2], [3, 5])
    assert prefix_bias.device == suffix_bias.device == q.device  # sequence starts live beside the kernel
    first, second = fake_xformers.calls
    assert first["attn_bias"] is prefix_bias and second["attn_bias"] is suffix_bias
    assert torch.equal(first["query"], q[:, [3, 4, 5, 6, 7, 8]]) and torch.equal(second["key"], k[:, [0, 1, 2, 6,
                                                                                                    7, 8, 9, 10]])
    for call in fake_xformers.calls:
        assert (call["scale"], call["p"], call["op"]) == (0.3, 0.0, None) and call["query"].dim() == 4
    attend(q, k, v, spec, backend="xformers", scale=0.3)  # the same spec again: the biases are reused
    assert len(fake_xformers.biases) == 2


@pytest.mark.parametrize("kind, q_len, kv_len, bias", [
    ("bidirectional", 5, 5, None),
    ("causal", 5, 5, "LowerTriangularMask"),
    ("causal", 2, 7, "LowerTriangularFromBottomRightMask"),
])
def test_xformers_unpacked_calls(fake_xformers: types.SimpleNamespace, kind: str, q_len: int, kv_len: int,
                                 bias: str | None) -> None:
    q, _, _ = qkv(3, q_len, dtype=torch.bfloat16)
    _, k, v = qkv(3, kv_len, dtype=torch.bfloat16)
    out = attend(q, k, v, AttnSpec(kind), backend="xformers")
    (call,) = fake_xformers.calls
    assert call["query"] is q and call["key"] is k and call["value"] is v  # [B, T, H, D] is xformers' own layout
    assert (None if call["attn_bias"] is None else type(call["attn_bias"]).__name__) == bias
    assert call["scale"] is None
    ref = attend(q.double(), k.double(), v.double(), AttnSpec(kind), backend="sdpa")
    torch.testing.assert_close(out.double(), ref, atol=3e-2, rtol=3e-2)


def test_xformers_unpacked_prefixlm_uses_the_plan(fake_xformers: types.SimpleNamespace) -> None:
    spec = AttnSpec("prefixlm", prefix_lens=torch.tensor([2, 0]))
    q, k, v = qkv(2, 4, dtype=torch.bfloat16)
    _check_output(attend(q, k, v, spec, backend="xformers"), q, k, v, spec, None)
    kinds = [(type(b).__name__, b.q_seqlen, b.kv_seqlen) for b in fake_xformers.biases]
    assert kinds == [("BlockDiagonalMask", [2], [2]), ("BlockDiagonalCausalFromBottomRightMask", [2, 4], [4, 4])]


def test_xformers_stays_a_lazy_optional_import() -> None:
    code = ("import sys; from hrmkit.cores import build_core; from hrmkit.nn.backends import get_backend; "
            "build_core('hrm', 'text-tiny'); get_backend('varlen'); get_backend('flex'); "
            "print('xformers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False"

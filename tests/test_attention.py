"""Attention backends against the naive oracle (``reference_mask`` + fp64 softmax attention), all on CPU.

Backends that cannot run here are still exercised where their logic lives: flex forward under no_grad, the varlen
two-call PrefixLM decomposition through a CPU reference kernel, xformers bias construction when xformers exists.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from _attention_ref import naive_attention, oracle, packed_spec, qkv, random_spec
from torch import Tensor

from hrmkit.nn.attn_spec import AttnSpec, reference_mask
from hrmkit.nn.backends import ATTENTION, AttentionBackend, BackendUnavailable, attend, get_backend, select_backend
from hrmkit.nn.backends.masks import dense_mask, mask_predicate
from hrmkit.nn.backends.packing import plan_calls, plan_for_spec
from hrmkit.nn.backends.varlen import reference_kernel, varlen_attention
from hrmkit.registry import PluginError

CPU = torch.device("cpu")


def grid(rows: list[str]) -> Tensor:
    return torch.tensor([[c == "1" for c in row] for row in rows])


# A fixed packing with every corner case: empty-prefix doc (causal), prefix == whole doc, an empty doc,
# a length-1 doc, and a doc with a real prefix and suffix.
PACKED_LENS, PACKED_PREFIXES = [3, 2, 0, 1, 5], [0, 2, 4, 1, 3]

CASES = {
    "bidirectional": lambda: (AttnSpec("bidirectional"), 3, 7),
    "causal": lambda: (AttnSpec("causal"), 3, 7),
    "prefixlm": lambda: (AttnSpec("prefixlm", prefix_lens=torch.tensor([0, 3, 7])), 3, 7),
    "packed-bidirectional": lambda: (packed_spec("bidirectional", PACKED_LENS), 1, 11),
    "packed-causal": lambda: (packed_spec("causal", PACKED_LENS), 1, 11),
    "packed-prefixlm": lambda: (packed_spec("prefixlm", PACKED_LENS, PACKED_PREFIXES), 1, 11),
}


def assert_matches_oracle(fn, spec: AttnSpec, batch: int, seq_len: int, backward: bool = True,
                          dtype: torch.dtype = torch.float64, tol: float = 1e-10, scale: float | None = None) -> None:
    q, k, v = qkv(batch, seq_len, dtype=dtype, grad=backward)
    with torch.set_grad_enabled(backward):
        out = fn(q, k, v, spec, scale)
        ref = oracle(q.double(), k.double(), v.double(), spec, scale)
    assert out.shape == q.shape and out.dtype == dtype
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)
    if backward:
        g = torch.randn_like(ref)
        grads = torch.autograd.grad((out * g).sum(), (q, k, v))
        ref_grads = torch.autograd.grad((ref * g).sum(), (q, k, v))
        for name, got, want in zip("qkv", grads, ref_grads):
            torch.testing.assert_close(got, want, atol=tol, rtol=tol, msg=lambda m, n=name: f"d{n}: {m}")


# --------------------------------------------------------------------------------------------------- the oracle
def test_reference_mask_bidirectional_and_causal() -> None:
    assert reference_mask(AttnSpec("bidirectional"), 2, 4).all()
    causal = reference_mask(AttnSpec("causal"), 2, 4)
    assert torch.equal(causal, torch.ones(4, 4, dtype=torch.bool).tril().expand(2, 4, 4))


def test_reference_mask_prefixlm_rows() -> None:
    mask = reference_mask(AttnSpec("prefixlm", prefix_lens=torch.tensor([2, 0, 4])), 3, 4)
    assert torch.equal(mask[0], grid(["1100", "1100", "1110", "1111"]))
    assert torch.equal(mask[1], grid(["1000", "1100", "1110", "1111"]))  # empty prefix = causal
    assert mask[2].all()  # prefix = whole row = bidirectional


def test_reference_mask_packed_documents() -> None:
    lens = [3, 2, 4]
    spec = packed_spec("prefixlm", lens, [0, 2, 2])  # empty prefix, prefix == whole doc, real prefix
    expected = grid([
        "100000000",
        "110000000",
        "111000000",
        "000110000",
        "000110000",
        "000001100",
        "000001100",
        "000001110",
        "000001111",
    ])
    assert torch.equal(reference_mask(spec, 1, 9)[0], expected)
    blocks = torch.block_diag(*(torch.ones(n, n) for n in lens)).bool()
    for kind in ("bidirectional", "causal"):  # no cross-document leakage
        mask = reference_mask(packed_spec(kind, lens), 1, 9)[0]
        assert not (mask & ~blocks).any()
        assert torch.equal(mask, blocks if kind == "bidirectional" else blocks.tril())


@pytest.mark.parametrize("cu, batch, seq_len", [([0, 3, 2, 5], 1, 5), ([0, 3, 4], 1, 5), ([1, 3, 5], 1, 5),
                                                ([0, 5], 2, 5)])
def test_bad_packing_is_rejected(cu: list[int], batch: int, seq_len: int) -> None:
    spec = AttnSpec("causal", cu_seqlens=torch.tensor(cu, dtype=torch.int32))
    with pytest.raises(ValueError, match="cu_seqlens|batch size 1"):
        reference_mask(spec, batch, seq_len)
    q, k, v = qkv(batch, seq_len)
    with pytest.raises(ValueError, match="cu_seqlens|batch size 1"):
        attend(q, k, v, spec)


def test_bad_prefix_lens_are_rejected() -> None:
    q, k, v = qkv(2, 5)
    with pytest.raises(ValueError, match="prefix_lens has 3 entries"):
        attend(q, k, v, AttnSpec("prefixlm", prefix_lens=torch.tensor([1, 2, 3])))
    with pytest.raises(ValueError, match=">= 0"):
        attend(q, k, v, AttnSpec("prefixlm", prefix_lens=torch.tensor([1, -2])))


# ---------------------------------------------------------------------------------------------- the predicate
def test_mask_predicate_matches_reference_on_random_specs() -> None:
    from torch.nn.attention.flex_attention import create_mask

    gen = torch.Generator().manual_seed(1234)
    for trial in range(48):
        kind = ("bidirectional", "causal", "prefixlm")[trial % 3]
        spec, batch, seq_len = random_spec(gen, kind, packed=trial % 2 == 0, overshoot=2)
        want = reference_mask(spec, batch, seq_len)
        got = dense_mask(spec, batch, seq_len, seq_len, CPU)
        assert got.shape[0] in (1, batch) and got.shape[1] == 1
        assert torch.equal(got[:, 0].expand(batch, -1, -1), want), f"trial {trial}: {spec}"
        if trial % 4 == 0:  # the same predicate as FlexAttention's mask_mod
            pred = mask_predicate(spec, batch, seq_len, seq_len, CPU)
            flex_mask = create_mask(pred.mask_mod, got.shape[0], None, seq_len, seq_len, device=CPU)
            assert torch.equal(flex_mask[:, 0].expand(batch, -1, -1), want)


def test_mask_predicate_kv_cache_is_bottom_right() -> None:
    mask = dense_mask(AttnSpec("causal"), 2, 2, 5, CPU)
    assert mask.shape == (1, 1, 2, 5)
    assert torch.equal(mask[0, 0], grid(["11110", "11111"]))


# ----------------------------------------------------------------------------------------------------- sdpa
@pytest.mark.parametrize("case", CASES)
def test_sdpa_matches_oracle_forward_and_backward(case: str) -> None:
    spec, batch, seq_len = CASES[case]()
    assert_matches_oracle(get_backend("sdpa"), spec, batch, seq_len)
    assert_matches_oracle(lambda q, k, v, s, sc: attend(q, k, v, s, "sdpa", sc), spec, batch, seq_len, scale=0.3)


def test_auto_on_cpu_is_sdpa_and_keeps_dtype() -> None:
    spec, batch, seq_len = CASES["packed-prefixlm"]()
    assert_matches_oracle(lambda q, k, v, s, sc: attend(q, k, v, s), spec, batch, seq_len,
                          dtype=torch.float32, tol=1e-5)


# ----------------------------------------------------------------------------------------------------- flex
@pytest.mark.parametrize("case", CASES)
def test_flex_forward_matches_oracle(case: str) -> None:
    spec, batch, seq_len = CASES[case]()
    assert_matches_oracle(lambda q, k, v, s, sc: attend(q, k, v, s, "flex", sc), spec, batch, seq_len,
                          backward=False)


def test_flex_refuses_cpu_backward_and_names_sdpa() -> None:
    spec, batch, seq_len = CASES["packed-prefixlm"]()
    q, k, v = qkv(batch, seq_len)
    q.requires_grad_(True)
    with pytest.raises(BackendUnavailable, match="flex") as info:
        attend(q, k, v, spec, backend="flex")
    message = str(info.value)
    assert "backward" in message and "CPU" in message and "sdpa" in message
    with torch.no_grad():  # the documented way to use flex on CPU: inference
        attend(q, k, v, spec, backend="flex")


def test_flex_block_mask_is_reused_for_the_same_spec() -> None:
    flex = get_backend("flex")
    spec, batch, seq_len = CASES["packed-causal"]()
    first = flex.block_mask(spec, batch, seq_len, seq_len, CPU)
    assert flex.block_mask(spec, batch, seq_len, seq_len, CPU) is first
    other, _, _ = CASES["packed-causal"]()
    assert flex.block_mask(other, batch, seq_len, seq_len, CPU) is not first


# --------------------------------------------------------------------------------------------------- varlen
def reference_varlen(q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec, scale: float | None) -> Tensor:
    return varlen_attention(q, k, v, spec, reference_kernel, scale)


@pytest.mark.parametrize("case", CASES)
def test_varlen_decomposition_matches_oracle(case: str) -> None:
    spec, batch, seq_len = CASES[case]()
    assert_matches_oracle(reference_varlen, spec, batch, seq_len)


@pytest.mark.parametrize("lens, prefixes", [
    ([4, 1, 3], [0, 0, 0]),  # no prefixes at all: a single causal call
    ([4, 1, 3], [4, 1, 9]),  # only prefixes: a single bidirectional call
    ([1, 1, 1], [1, 0, 1]),  # length-1 documents on both sides
    ([0, 5, 0, 2], [3, 2, 0, 2]),  # empty documents around
])
def test_varlen_decomposition_edge_cases(lens: list[int], prefixes: list[int]) -> None:
    assert_matches_oracle(reference_varlen, packed_spec("prefixlm", lens, prefixes), 1, sum(lens))


def test_prefixlm_plan_is_two_disjoint_calls() -> None:
    plan = plan_calls("prefixlm", PACKED_LENS, PACKED_LENS, PACKED_PREFIXES)
    prefix_call, suffix_call = plan.calls
    assert (prefix_call.causal, prefix_call.q_lens, prefix_call.kv_lens) == (False, (2, 1, 3), (2, 1, 3))
    assert prefix_call.q_index.tolist() == [3, 4, 5, 6, 7, 8]
    assert (suffix_call.causal, suffix_call.q_lens, suffix_call.kv_lens) == (True, (3, 2), (3, 5))
    assert suffix_call.q_index.tolist() == [0, 1, 2, 9, 10]
    assert suffix_call.kv_index.tolist() == [0, 1, 2, 6, 7, 8, 9, 10]  # only documents that have a suffix
    order = torch.cat([prefix_call.q_index, suffix_call.q_index])
    assert torch.equal(order[plan.inverse], torch.arange(11))


def test_varlen_kv_cache_decoding_is_bottom_right() -> None:
    q, k, v = qkv(2, 3, 7, grad=True)
    spec = AttnSpec("causal")
    out = varlen_attention(q, k, v, spec, reference_kernel)
    want = get_backend("sdpa")(q, k, v, spec)
    torch.testing.assert_close(out, want)
    assert plan_for_spec(spec, 2, 3, 7).calls[0].kv_lens == (7, 7)


def test_varlen_backend_is_unavailable_on_cpu() -> None:
    spec, batch, seq_len = CASES["packed-prefixlm"]()
    q, k, v = qkv(batch, seq_len)
    with pytest.raises(BackendUnavailable, match="varlen.*CUDA-only.*sdpa"):
        attend(q, k, v, spec, backend="varlen")
    assert "bfloat16" in get_backend("varlen").input_reason(q)


# ------------------------------------------------------------------------------------------------- xformers
@pytest.mark.skipif(importlib.util.find_spec("xformers") is not None, reason="xformers is installed here")
def test_xformers_missing_says_how_to_install() -> None:
    q, k, v = qkv(1, 4)
    with pytest.raises(BackendUnavailable, match="xformers") as info:
        attend(q, k, v, AttnSpec("causal"), backend="xformers")
    assert "hrmkit[xformers]" in str(info.value)


@pytest.mark.parametrize("case", ["packed-bidirectional", "packed-causal", "packed-prefixlm", "prefixlm"])
def test_xformers_biases_materialize_to_the_oracle(case: str) -> None:
    pytest.importorskip("xformers")
    from hrmkit.nn.backends.xformers_backend import xformers_biases

    spec, batch, seq_len = CASES[case]()
    plan = plan_for_spec(spec, batch, seq_len, seq_len)
    rows = batch * seq_len
    dense = torch.zeros(rows, rows, dtype=torch.bool)
    everything = torch.arange(rows)
    for call, bias in zip(plan.calls, xformers_biases(plan)):
        q_rows = everything if call.q_index is None else call.q_index
        kv_rows = everything if call.kv_index is None else call.kv_index
        allowed = bias.materialize((len(q_rows), len(kv_rows))) == 0
        dense[q_rows[:, None], kv_rows[None, :]] = allowed
    want = torch.block_diag(*reference_mask(spec, batch, seq_len))  # unpacked rows are flattened into documents
    assert torch.equal(dense, want)


# ------------------------------------------------------------------------------------------------ selection
PACKED = packed_spec("causal", [3, 5])
PREFIX = AttnSpec("prefixlm", prefix_lens=torch.tensor([2]))
EVERYTHING, NOTHING = {"varlen", "flex", "xformers"}, set()


@pytest.mark.parametrize("device, spec, grad, q_len, kv_len, available, expected", [
    ("cpu", AttnSpec("bidirectional"), True, 8, 8, EVERYTHING, "sdpa"),
    ("cpu", PACKED, False, 8, 8, EVERYTHING, "sdpa"),
    ("cpu", PREFIX, False, 8, 8, EVERYTHING, "sdpa"),
    ("mps", PREFIX, True, 8, 8, EVERYTHING, "sdpa"),
    ("cuda", AttnSpec("bidirectional"), True, 8, 8, EVERYTHING, "sdpa"),
    ("cuda", AttnSpec("causal"), True, 8, 8, EVERYTHING, "sdpa"),
    ("cuda", AttnSpec("causal"), False, 1, 9, EVERYTHING, "sdpa"),  # KV-cache decoding
    ("cuda", AttnSpec("bidirectional"), False, 3, 9, EVERYTHING, "sdpa"),
    ("cuda", PACKED, True, 8, 8, EVERYTHING, "varlen"),
    ("cuda", PREFIX, True, 8, 8, EVERYTHING, "varlen"),
    ("cuda", packed_spec("bidirectional", [8]), False, 8, 8, {"varlen"}, "varlen"),
    ("cuda", PACKED, True, 8, 8, {"flex"}, "flex"),
    ("cuda", PREFIX, False, 8, 8, {"flex", "xformers"}, "flex"),
    ("cuda", PREFIX, True, 8, 8, NOTHING, "sdpa"),
    ("cuda", PACKED, True, 8, 8, {"xformers"}, "sdpa"),  # xformers is opt-in only
])
def test_select_backend_table(device: str, spec: AttnSpec, grad: bool, q_len: int, kv_len: int,
                              available: set[str], expected: str) -> None:
    assert select_backend(device, spec, grad, q_len, kv_len, available=available.__contains__) == expected


def test_select_backend_default_availability_on_cpu() -> None:
    assert select_backend("cpu", PREFIX, True, 8, 8) == "sdpa"


# ------------------------------------------------------------------------------------------------ KV cache
@pytest.mark.parametrize("chunks", [[1] * 10, [4, 3, 3]])
def test_kv_cache_decoding_equals_full_causal_attention(chunks: list[int]) -> None:
    q, k, v = qkv(2, 10)
    full = attend(q, k, v, AttnSpec("causal"))
    outs, end = [], 0
    for size in chunks:
        start, end = end, end + size
        outs.append(attend(q[:, start:end], k[:, :end], v[:, :end], AttnSpec("causal")))
    torch.testing.assert_close(torch.cat(outs, dim=1), full)


@pytest.mark.parametrize("kind", ["causal", "bidirectional"])
def test_flex_kv_cache_decoding_matches_sdpa(kind: str) -> None:
    q, k, v = qkv(2, 3, 9)
    with torch.no_grad():
        torch.testing.assert_close(attend(q, k, v, AttnSpec(kind), "flex"), attend(q, k, v, AttnSpec(kind), "sdpa"))


def test_kv_cache_bidirectional_attends_to_every_key() -> None:
    q, k, v = qkv(2, 3, 9)
    want = naive_attention(q, k, v, torch.ones(2, 3, 9, dtype=torch.bool))
    torch.testing.assert_close(attend(q, k, v, AttnSpec("bidirectional")), want)


def test_kv_cache_rejects_prefixlm_and_short_caches() -> None:
    q, k, v = qkv(1, 2, 6)
    with pytest.raises(ValueError, match="kind='causal'"):
        attend(q, k, v, AttnSpec("prefixlm", prefix_lens=torch.tensor([1])))
    with pytest.raises(ValueError, match="kv_len >= q_len"):
        attend(k, q, q, AttnSpec("causal"))


# ------------------------------------------------------------------------------------------------- registry
def test_builtins_are_registered_once() -> None:
    assert {"sdpa", "flex", "varlen", "xformers"} <= set(ATTENTION.names())
    for name in ("sdpa", "flex", "varlen", "xformers"):
        backend = get_backend(name)
        assert isinstance(backend, AttentionBackend) and backend.name == name
        assert get_backend(name) is backend


def test_unknown_backend_lists_known_names() -> None:
    q, k, v = qkv(1, 4)
    with pytest.raises(PluginError) as info:
        attend(q, k, v, AttnSpec("causal"), backend="sdpaa")
    message = str(info.value)
    assert all(name in message for name in ("flex", "sdpa", "varlen", "xformers", "auto"))

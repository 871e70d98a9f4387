"""Host-side plans that turn an :class:`AttnSpec` into block-diagonal varlen kernel calls.

Varlen kernels (FlashAttention's ``varlen_attn``, xformers' ``BlockDiagonal*`` biases) only know "bidirectional" and
"bottom-right causal" per block. PrefixLM is therefore two calls on disjoint query sets, exactly like HRM-Text's FA3
kernel: prefix queries x prefix keys (bidirectional) and suffix queries x whole-document keys (bottom-right causal,
so suffix query j sees the whole prefix plus suffix tokens <= j). Outputs are scattered back with a permutation, so
no log-sum-exp merge is needed. Empty segments are dropped from every call, and a call without queries is skipped
(the FA3 ``max_seqlen_q == 0`` crash in HRM-Text came from launching one).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import accumulate

import torch
from torch import Tensor

from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.backends.base import SpecCache


@dataclass(frozen=True, eq=False)
class VarlenCall:
    """One block-diagonal kernel call over rows gathered from the packed ``[N, H, D]`` tensors."""

    causal: bool  # bottom-right aligned within each block
    q_lens: tuple[int, ...]
    kv_lens: tuple[int, ...]
    q_index: Tensor | None = None  # rows of q taken as queries; None = all rows in order
    kv_index: Tensor | None = None  # rows of k/v taken as keys; None = all rows in order
    cu_q: Tensor | None = None  # int32 cumulative lengths, filled by VarlenPlan.to
    cu_k: Tensor | None = None
    # Stored, not derived on access: under torch.compile reading two ints guards on two ints, whereas max() over
    # the length tuples would guard on every document length of the batch.
    max_q: int = field(init=False)
    max_k: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_q", max(self.q_lens))
        object.__setattr__(self, "max_k", max(self.kv_lens))


@dataclass(frozen=True, eq=False)
class VarlenPlan:
    """Calls whose concatenated outputs, reordered by ``inverse``, give the output for every query row."""

    calls: tuple[VarlenCall, ...]
    inverse: Tensor | None = None  # None when the single call already covers all rows in order

    def to(self, device: torch.device) -> VarlenPlan:
        def move(c: VarlenCall) -> VarlenCall:
            opt = lambda t: None if t is None else t.to(device, non_blocking=True)
            return replace(c, q_index=opt(c.q_index), kv_index=opt(c.kv_index),
                           cu_q=_cumulative(c.q_lens, device), cu_k=_cumulative(c.kv_lens, device))

        inverse = None if self.inverse is None else self.inverse.to(device, non_blocking=True)
        return replace(self, calls=tuple(move(c) for c in self.calls), inverse=inverse)

    @property
    def ready(self) -> bool:
        """Whether every call has its cumulative lengths (``to`` was called), so the kernels can run it."""
        return all(c.cu_q is not None and c.cu_k is not None for c in self.calls)


def _cumulative(lens: tuple[int, ...], device: torch.device) -> Tensor:
    return torch.tensor([0, *accumulate(lens)], dtype=torch.int32).to(device, non_blocking=True)


def _rows(spans: list[tuple[int, int]]) -> Tensor:
    return torch.cat([torch.arange(a, b) for a, b in spans]) if spans else torch.zeros(0, dtype=torch.long)


def plan_calls(kind: str, q_lens: list[int], kv_lens: list[int], prefix_lens: list[int] | None = None) -> VarlenPlan:
    """Plan for documents laid end to end (``q_lens[i]`` queries against ``kv_lens[i]`` keys, queries last).

    ``prefix_lens`` (prefixlm only, needs ``q_lens == kv_lens``) is clamped to each document's length.
    """
    if kind != "prefixlm":
        keep = [i for i, n in enumerate(q_lens) if n > 0]  # a document without queries needs no kernel block
        if any(kv_lens[i] == 0 or (kind == "causal" and kv_lens[i] < q_lens[i]) for i in keep):
            raise ValueError(f"every block needs keys (and kv_len >= q_len when causal), got {q_lens=} {kv_lens=}")
        if not keep:
            return VarlenPlan(())
        kv_index = None
        if any(kv_lens[i] > 0 for i, n in enumerate(q_lens) if n == 0):  # their keys would shift later blocks
            starts = list(accumulate(kv_lens, initial=0))
            kv_index = _rows([(starts[i], starts[i + 1]) for i in keep])
        call = VarlenCall(kind == "causal", tuple(q_lens[i] for i in keep), tuple(kv_lens[i] for i in keep),
                          None, kv_index)
        return VarlenPlan((call,))

    if prefix_lens is None or len(prefix_lens) != len(q_lens) or q_lens != kv_lens:
        raise ValueError("prefixlm plans need one prefix length per document and as many keys as queries")
    lens = q_lens
    prefixes = [min(max(p, 0), n) for p, n in zip(prefix_lens, lens)]
    if all(p == 0 for p in prefixes):
        return plan_calls("causal", lens, lens)
    if all(p == n for p, n in zip(prefixes, lens)):
        return plan_calls("bidirectional", lens, lens)

    starts = list(accumulate(lens, initial=0))
    pre_docs = [i for i, p in enumerate(prefixes) if p > 0]
    suf_docs = [i for i, (p, n) in enumerate(zip(prefixes, lens)) if n > p]
    pre_rows = _rows([(starts[i], starts[i] + prefixes[i]) for i in pre_docs])
    suf_rows = _rows([(starts[i] + prefixes[i], starts[i + 1]) for i in suf_docs])
    all_keys = len(suf_docs) == sum(1 for n in lens if n > 0)  # every non-empty document has a suffix
    call_a = VarlenCall(False, tuple(prefixes[i] for i in pre_docs), tuple(prefixes[i] for i in pre_docs),
                        pre_rows, pre_rows)
    call_b = VarlenCall(True, tuple(lens[i] - prefixes[i] for i in suf_docs), tuple(lens[i] for i in suf_docs),
                        suf_rows, None if all_keys else _rows([(starts[i], starts[i + 1]) for i in suf_docs]))
    order = torch.cat([pre_rows, suf_rows])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel())
    return VarlenPlan((call_a, call_b), inverse)


def plan_for_spec(spec: AttnSpec, batch: int, q_len: int, kv_len: int) -> VarlenPlan:
    """Plan on the host for a ``[B, T, H, D]`` call; unpacked batches become ``B`` documents of length ``T``.

    Reads ``cu_seqlens``/``prefix_lens`` on the host: one device sync when they live on a GPU, so callers cache it.
    """
    if spec.cu_seqlens is not None:
        bounds = [int(x) for x in spec.cu_seqlens.tolist()]
        q_lens = kv_lens = [b - a for a, b in zip(bounds, bounds[1:])]
    else:
        q_lens, kv_lens = [q_len] * batch, [kv_len] * batch
    prefixes = None if spec.prefix_lens is None else [int(p) for p in spec.prefix_lens.reshape(-1).tolist()]
    return plan_calls(spec.kind, q_lens, kv_lens, prefixes)


def with_plan(spec: AttnSpec, batch: int, seq_len: int, device: torch.device | str | None = None) -> AttnSpec:
    """``spec`` carrying its varlen plan, moved to ``device`` (default: where ``cu_seqlens``/``prefix_lens`` live).

    Call it once per batch outside any compiled region (``TextTask.attn_spec`` does): planning reads the document
    lengths on the host, which is a device sync on a GPU and a graph break under ``torch.compile``. Backends that use
    plans (``varlen``, ``xformers``) then only read ``spec.plan``.
    """
    if device is None:
        source = spec.cu_seqlens if spec.cu_seqlens is not None else spec.prefix_lens
        device = source.device if source is not None else torch.device("cpu")
    return replace(spec, plan=plan_for_spec(spec, batch, seq_len, seq_len).to(torch.device(device)))


def spec_plan(spec: AttnSpec, cache: SpecCache, q: Tensor, kv_len: int) -> VarlenPlan:
    """The plan a block-diagonal backend runs: ``spec.plan`` when the caller planned outside (no host read here),
    else one built now and cached per spec object (a host sync; under torch.compile, a graph break)."""
    batch, q_len = q.shape[0], q.shape[1]
    if spec.plan is not None:
        if not torch.compiler.is_compiling():
            rows = sum(sum(c.q_lens) for c in spec.plan.calls)
            if rows != batch * q_len or not spec.plan.ready:
                raise ValueError(f"AttnSpec.plan covers {rows} query rows (ready={spec.plan.ready}), but this call "
                                 f"has {batch} x {q_len}; build it with with_plan(spec, {batch}, {q_len}, device)")
        return spec.plan
    build = lambda: plan_for_spec(spec, batch, q_len, kv_len).to(q.device)
    return cache.get(spec, (batch, q_len, kv_len, q.device), build)


def gather(q: Tensor, k: Tensor, v: Tensor, call: VarlenCall) -> tuple[Tensor, Tensor, Tensor]:
    """The packed rows one call reads (no copy when it reads all rows in order)."""
    qc = q if call.q_index is None else q.index_select(0, call.q_index)
    kc = k if call.kv_index is None else k.index_select(0, call.kv_index)
    vc = v if call.kv_index is None else v.index_select(0, call.kv_index)
    return qc, kc, vc


def assemble(outs: list[Tensor], plan: VarlenPlan, q: Tensor, v: Tensor) -> Tensor:
    """Put the calls' outputs back in token order; a gather, so autograd needs no in-place scatter."""
    if not outs:
        return q.new_zeros(*q.shape[:-1], v.shape[-1])
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return out if plan.inverse is None else out.index_select(0, plan.inverse)

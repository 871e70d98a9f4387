"""Autoregressive generation for :class:`hrmkit.tasks.text.TextTask` with a per-(module call, layer) KV cache.

HRM-Text's inference recipe (spec §6.1): the whole prompt (``<|im_start|>{conditions}{prompt}<|im_end|>``) is a
PrefixLM prefix, so the prefill attends bidirectionally over it; every new token then runs the full schedule once,
causally, appending its keys/values to each (call, layer) cache. The first response token is read from the logits of
the last prompt position, exactly where training's labels put it.

Two paths give the same tokens:

* ``cache="static"`` (default, the fast path): all prompts form one batch, left-padded to the longest; a
  :class:`~hrmkit.nn.cache.StaticKVCache` is allocated once at its final length and masks padding and the prefix
  itself. The prefill runs eagerly (its length varies); every decode step has fixed shapes, so with ``compile`` it is
  one inductor graph (no graph breaks; ``mode="reduce-overhead"``, i.e. CUDA graphs, on CUDA). Greedy decoding takes
  its argmax inside that graph. ``freeze`` (CPU, batches of 8 rows or more) compiles the weights in as constants,
  which lets inductor use its own GEMM kernels with pre-packed weights; it is for weights that no longer change
  (the generate and eval commands), and a frozen step compiles again if they do.
* ``cache="dynamic"``: the reference. Prompts of equal length decode together (no padding, no mask beyond the
  spec); a :class:`~hrmkit.nn.cache.KVCache` grows by concatenation; nothing is compiled.

Rows that hit a stop token keep being computed (their output is frozen) until every row has stopped or
``max_new_tokens`` is reached.

Auto-guidance (paper App. D): ``(1 + w)·logits(h) − w·logits(h′)`` where ``h`` is the core's final output and ``h′``
its output right after the first call of kind ``guidance_after`` (HRM: z_H after the first H cycle). It is computed
from the same pass, so it costs one extra LM-head product per token.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.cache import KVCache, StaticKVCache

# A hrmkit.tasks.text.TextTask, typed structurally (embed, core, lm_head, embed_tokens): TextTask.predict_step calls
# generate(), so importing the class here, even for type checking only, would close an import cycle.
TextTask = Any

CacheKind = Literal["static", "dynamic"]
#: static caches are sized up to a multiple of this many slots, so calls of similar length reuse one compiled graph
SLOT_BUCKET = 64
#: ``compile="auto"`` compiles when a call may take at least this many decode steps: the one-off compile (seconds
#: with a warm inductor cache, a minute or more cold on a small CPU) must be paid back by the steps it speeds up
AUTO_COMPILE_STEPS = 64


def core_outputs(task: TextTask, input_ids: Tensor, attn: AttnSpec, cache: KVCache | StaticKVCache | None = None,
                 after: str | None = None) -> tuple[Tensor, Tensor | None]:
    """The core's final output and (with ``after``) its output right after the first call of kind ``after``.

    Runs the core's schedule through its public pieces (``prepare``/``initial_state``/``call``/``output``) so the
    intermediate output can be read without a core-specific hook; the cache sees exactly the calls
    ``core.forward`` would make. Inference only: every call runs (no gradient horizon, no telemetry).
    """
    core = task.core
    schedule = core.schedule()
    if after is not None and after not in schedule:
        raise ValueError(f"guidance reads the output after the first {after!r} call, but core "
                         f"{type(core).__name__} has schedule {''.join(schedule)!r} with no such call; pick one of "
                         f"{sorted(set(schedule))} as guidance_after")
    x = task.embed(input_ids)
    if core.compute_dtype is not None:
        x = x.to(core.compute_dtype)
    state = core.initial_state(x)
    ctx = core.prepare(x, attn, cache)
    counts: dict[str, int] = {}
    early = None
    for i, kind in enumerate(schedule):
        k = counts.get(kind, 0)
        counts[kind] = k + 1
        state = core.call(kind, k, i, x, state, ctx)
        if early is None and kind == after:
            early = core.output(state)
    return core.output(state), early


def guided_logits(task: TextTask, input_ids: Tensor, attn: AttnSpec, cache: KVCache | StaticKVCache | None = None,
                  guidance_w: float = 0.0, guidance_after: str = "H", last_only: bool = False) -> Tensor:
    """fp32 logits ``[B, T, V]`` (``[B, 1, V]`` with ``last_only``: the LM head runs on the last position only) from
    one pass of :func:`core_outputs`, auto-guided when ``guidance_w != 0``.

    Pure tensor code over the core's pieces (no telemetry, no gradient contexts): what a compiled decode step runs.
    """
    final, early = core_outputs(task, input_ids, attn, cache, guidance_after if guidance_w != 0.0 else None)
    if last_only:
        final, early = final[:, -1:], None if early is None else early[:, -1:]
    logits = task.lm_head(final).float()
    if guidance_w == 0.0:
        return logits
    return (1.0 + guidance_w) * logits - guidance_w * task.lm_head(early).float()


def next_token_logits(task: TextTask, input_ids: Tensor, attn: AttnSpec, cache: KVCache | None = None,
                      guidance_w: float = 0.0, guidance_after: str = "H") -> Tensor:
    """fp32 logits ``[B, T, V]``, auto-guided when ``guidance_w != 0`` (unguided: the task's own forward)."""
    if guidance_w == 0.0:
        return task(input_ids, attn, cache).float()
    return guided_logits(task, input_ids, attn, cache, guidance_w, guidance_after)


def sample(logits: Tensor, temperature: float = 0.0, top_k: int | None = None,
           generator: torch.Generator | None = None, top_p: float | None = None) -> Tensor:
    """One token per row from ``logits`` ``[B, V]``: argmax when ``temperature <= 0``, else softmax(logits / T)
    restricted to the ``top_k`` largest logits (ties at the k-th value are kept) and then to the smallest set of
    most likely tokens whose probability reaches ``top_p`` (nucleus; the most likely token always stays)."""
    if temperature <= 0.0:
        return logits.argmax(-1)
    scaled = logits.float() / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        probs, order = torch.softmax(scaled, dim=-1).sort(dim=-1, descending=True)
        before = probs.cumsum(-1) - probs  # probability mass of the strictly more likely tokens
        drop = torch.zeros_like(before, dtype=torch.bool).scatter_(-1, order, before >= top_p)
        scaled = scaled.masked_fill(drop, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(task: TextTask, prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, stop_ids: Sequence[int] = (), guidance_w: float = 0.0, seed: int = 0,
             guidance_after: str = "H", top_p: float | None = None, cache: CacheKind = "static",
             compile: bool | Literal["auto"] = "auto", freeze: bool = False) -> list[list[int]]:
    """Continue every prompt by up to ``max_new_tokens`` tokens.

    Args:
        task: a TextTask (any core); it runs in eval mode and is put back in its previous mode afterwards.
        prompts: token-id lists, each the full PrefixLM prefix (HRM-Text: ``<|im_start|>`` conditions, prompt,
            ``<|im_end|>``); each must be non-empty. Lengths may differ.
        max_new_tokens: generation budget per prompt.
        temperature: 0 = greedy (argmax); > 0 samples from softmax(logits / temperature).
        top_k: sample among the k most likely tokens only (None = all).
        stop_ids: a generated token in this set ends that prompt's output (it is included as the last token).
            HRM-Text: ``<|box_end|>`` (id 11 in the released tokenizer).
        guidance_w: auto-guidance weight w (0 = off; the paper searched {−0.5, −0.1, 0, 0.1, 0.5}).
        seed: seeds the sampling generator (one generator for the whole call).
        guidance_after: schedule kind whose first call gives ``h′`` for guidance (HRM: ``H``).
        top_p: nucleus sampling: keep the most likely tokens up to this total probability (None = all).
        cache: ``static`` (one padded batch, pre-allocated cache, compilable decode step) or ``dynamic`` (the
            reference: equal-length groups, growing cache, eager).
        compile: compile the static decode step with torch.compile (``auto``: when ``max_new_tokens`` is at least
            ``AUTO_COMPILE_STEPS``). Ignored by ``cache="dynamic"``.
        freeze: on the CPU, compile the step with the weights as constants (inductor freezing and its CPU GEMM
            templates, chosen per matmul by autotuning) for batches of at least ``FROZEN_MIN_BATCH`` rows, where
            that measured faster (smaller batches keep the unfrozen step): for weights that no longer change. The
            frozen step is tied to the weights' versions; if any parameter or buffer changed since (an optimizer
            step, ``load_state_dict``, a new tensor), it compiles again, with a warning, and the old graph's packed
            weights stay in memory. Weights written through ``.data`` are not seen: keep ``freeze=False`` while
            training. Ignored without ``compile`` and on other devices.

    Returns:
        The generated ids per prompt (prompt not included), in the order of ``prompts``.
    """
    if max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"generate: top_k must be >= 1 or None, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"generate: top_p must be in (0, 1] or None, got {top_p}")
    if cache not in ("static", "dynamic"):
        raise ValueError(f"generate: cache must be 'static' or 'dynamic', got {cache!r}")
    if compile not in (True, False, "auto"):
        raise ValueError(f"generate: compile must be True, False or 'auto', got {compile!r}")
    vocab = task.embed_tokens.num_embeddings
    for n, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"generate: prompt {n} is empty; a prompt needs at least one token to prefill")
        bad = [t for t in prompt if not 0 <= int(t) < vocab]
        if bad:
            raise ValueError(f"generate: prompt {n} has token ids outside the vocabulary [0, {vocab}): {bad[:5]}")
    rope = getattr(task.core, "rope", None)
    if rope is not None and prompts and max_new_tokens > 0:
        longest = max(map(len, prompts)) + max_new_tokens - 1  # positions fed: prompt + all but the last token
        if longest > rope.max_seq_len:
            raise ValueError(f"generate: prompt length {max(map(len, prompts))} + max_new_tokens {max_new_tokens} "
                             f"needs {longest} positions but the core's RoPE table holds {rope.max_seq_len}; shorten "
                             "the prompt or the budget (or build the core with a larger max_seq_len)")
    if max_new_tokens == 0 or not prompts:
        return [[] for _ in prompts]
    device = task.embed_tokens.weight.device
    decoding = _Decoding(temperature, top_k, top_p, {int(s) for s in stop_ids}, max_new_tokens,
                         torch.Generator(device=device).manual_seed(seed))
    was_training = task.training
    task.eval()
    try:
        if cache == "static":
            if compile == "auto":
                compile = max_new_tokens >= AUTO_COMPILE_STEPS
            return _generate_static(task, prompts, decoding, guidance_w, guidance_after, bool(compile), device,
                                    freeze)
        return _generate_dynamic(task, prompts, decoding, guidance_w, guidance_after, device)
    finally:
        task.train(was_training)


class _Decoding:
    """Sampling settings and the per-row bookkeeping of one call (outputs, stop tokens)."""

    def __init__(self, temperature: float, top_k: int | None, top_p: float | None, stops: set[int],
                 max_new_tokens: int, generator: torch.Generator) -> None:
        self.temperature, self.top_k, self.top_p, self.stops = temperature, top_k, top_p, stops
        self.max_new_tokens, self.generator = max_new_tokens, generator

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def run(self, first: Tensor, step: Callable[[Tensor], Tensor], tokens: bool = False) -> list[list[int]]:
        """Sample from ``first`` logits ``[B, V]``, then feed each token to ``step`` (→ next logits) until every row
        has stopped or the budget is spent. With ``tokens``, ``first`` and ``step``'s results are already the next
        tokens ``[B]`` (greedy decoding whose argmax runs inside a compiled step)."""
        logits = first
        b = logits.shape[0]
        outs: list[list[int]] = [[] for _ in range(b)]
        done = [False] * b
        for n in range(self.max_new_tokens):
            token = logits if tokens else sample(logits, self.temperature, self.top_k, self.generator, self.top_p)
            for r, t in enumerate(token.tolist()):
                if not done[r]:
                    outs[r].append(t)
                    done[r] = t in self.stops
            if all(done) or n == self.max_new_tokens - 1:
                break
            logits = step(token.unsqueeze(1))
        return outs


def _prefix_attention(task: TextTask) -> bool:
    """Whether prompts are PrefixLM prefixes (bidirectional) or causal, as the task was trained."""
    return getattr(task.hparams, "attention", "prefixlm") == "prefixlm"


def _generate_dynamic(task: TextTask, prompts: Sequence[Sequence[int]], decoding: _Decoding, guidance_w: float,
                      guidance_after: str, device: torch.device) -> list[list[int]]:
    """The reference path: equal-length prompts decode as one batch sharing one growing :class:`KVCache`."""
    groups: dict[int, list[int]] = {}
    for n, prompt in enumerate(prompts):
        groups.setdefault(len(prompt), []).append(n)
    results: list[list[int]] = [[] for _ in prompts]
    decode = AttnSpec("causal")
    for length, idxs in groups.items():
        ids = torch.tensor([[int(t) for t in prompts[i]] for i in idxs], dtype=torch.long, device=device)
        cache = KVCache()
        prefill = (AttnSpec("prefixlm", prefix_lens=torch.full((len(idxs),), length, dtype=torch.int32,
                                                               device=device))
                   if _prefix_attention(task) else AttnSpec("causal"))
        first = next_token_logits(task, ids, prefill, cache, guidance_w, guidance_after)[:, -1]
        outs = decoding.run(first, lambda tok, c=cache: next_token_logits(task, tok, decode, c, guidance_w,
                                                                          guidance_after)[:, -1])
        for i, out in zip(idxs, outs):
            results[i] = out
    return results


def static_step(task: TextTask, input_ids: Tensor, cache: StaticKVCache, guidance_w: float = 0.0,
                guidance_after: str = "H", greedy: bool = False) -> Tensor:
    """fp32 next-token logits ``[B, V]`` (``greedy``: their argmax ``[B]``) for ``input_ids`` ``[B, T]`` written at
    the cache cursor (T = 1: a decode step). Fixed shapes and no host reads: this is the function :func:`generate`
    compiles."""
    attn = AttnSpec("causal", position_ids=cache.positions(input_ids.shape[1]))
    logits = guided_logits(task, input_ids, attn, cache, guidance_w, guidance_after, last_only=True)[:, -1]
    return logits.argmax(-1) if greedy else logits


_COMPILED: dict[str, Callable[..., Tensor]] = {}


def compiled_static_step(device_type: str) -> Callable[..., Tensor]:
    """:func:`static_step` under ``torch.compile(fullgraph=True)``; CUDA adds CUDA graphs (``reduce-overhead``).

    One compiled function per mode for the process: torch.compile keeps a graph per (task, batch, cache size), so
    later calls of the same shapes (e.g. the chunks of an evaluation) reuse it.
    """
    mode = "reduce-overhead" if device_type == "cuda" else "default"
    if mode not in _COMPILED:
        # CPU: inductor's C++ wrapper calls the step's kernels without a Python frame per kernel (batch-8 decoding
        # 1.80x -> 1.87x transformers', paired runs in docs/benchmarks.md)
        _COMPILED[mode] = (torch.compile(static_step, fullgraph=True, mode=mode) if device_type == "cuda" else
                           torch.compile(static_step, fullgraph=True, options={"cpp_wrapper": True}))
    return _COMPILED[mode]


#: inductor options of a frozen CPU decode step (``freezing`` also needs the global flag while dynamo traces: see
#: ``_generate_static``): weights as constants, each matmul autotuned between inductor's
#: CPU GEMM template (pre-packed weights) and ATen's (batch-8 decoding 1.92-1.96x -> 2.04-2.10x transformers', paired
#: runs in docs/benchmarks.md; ~57 s of compile per process against 6 s, as inductor caches no frozen graph)
FROZEN_OPTIONS = {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN",
                  "cpp_wrapper": True}
#: ``freeze`` applies to batches of at least this many rows. Paired on the 2-core AVX2 CPU (docs/benchmarks.md,
#: hidden 256): frozen/unfrozen decode time 1.4-1.6x at batch 1, 1.28x at 2, 0.99x at 4, 0.95x at 8, 0.94x at 32 (the
#: CPU GEMM template's one-row kernels stream the packed weights more slowly than MKL's)
FROZEN_MIN_BATCH = 8
_FROZEN: dict[int, tuple[weakref.ref, tuple[tuple[int, int], ...], Callable[..., Tensor]]] = {}


def weights_version(task: TextTask) -> tuple[tuple[int, int], ...]:
    """Where every parameter and buffer lives and how often it was written in place: what a frozen graph assumes."""
    return tuple((t.data_ptr(), t._version) for t in itertools.chain(task.parameters(), task.buffers()))


def _frozen_step(task: TextTask, input_ids: Tensor, cache: StaticKVCache, guidance_w: float, guidance_after: str,
                 greedy: bool) -> Tensor:
    """:func:`static_step` under its own code object: frozen graphs never share cache entries with the unfrozen
    step's, whose graphs read the weights at every call."""
    return static_step(task, input_ids, cache, guidance_w, guidance_after, greedy)


def frozen_static_step(task: TextTask) -> Callable[..., Tensor]:
    """The CPU decode step compiled with ``task``'s current weights as constants (:data:`FROZEN_OPTIONS`).

    One isolated torch.compile per (task, :func:`weights_version`): a task whose weights changed since its step was
    frozen gets a new one, so a frozen graph never runs with weights other than those it was compiled with.
    """
    version = weights_version(task)
    entry = _FROZEN.get(id(task))
    if entry is not None and entry[0]() is task:
        if entry[1] == version:
            return entry[2]
        warnings.warn("generate(freeze=True): the weights changed since the decode step was frozen, so it compiles "
                      "again (the old graph's packed weights stay in memory); use freeze=False for weights that "
                      "keep changing, e.g. generation during training", stacklevel=3)
    step = torch.compile(_frozen_step, fullgraph=True, isolate_recompiles=True, options=FROZEN_OPTIONS)
    _FROZEN[id(task)] = (weakref.ref(task), version, step)
    return step


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``[B, T]`` ids left-padded with ``pad_id`` to the longest prompt, and each row's padding ``[B]``."""
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), int(pad_id), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, longest - len(p):] = torch.tensor([int(t) for t in p], dtype=torch.long)
    pad = torch.tensor([longest - len(p) for p in prompts], dtype=torch.long)
    return ids.to(device), pad.to(device)


def _generate_static(task: TextTask, prompts: Sequence[Sequence[int]], decoding: _Decoding, guidance_w: float,
                     guidance_after: str, compile: bool, device: torch.device,
                     freeze: bool = False) -> list[list[int]]:
    """The fast path: one left-padded batch, one :class:`StaticKVCache`, an eager prefill and (compiled) steps."""
    ids, pad = left_pad(prompts, getattr(task.hparams, "pad_id", 0), device)
    length = ids.shape[1]
    slots = length + decoding.max_new_tokens - 1
    cache = StaticKVCache(pad, length, -(-slots // SLOT_BUCKET) * SLOT_BUCKET, prefix=_prefix_attention(task))
    greedy = decoding.greedy
    first = static_step(task, ids, cache, guidance_w, guidance_after, greedy)
    cache.advance(length)
    frozen = compile and freeze and device.type == "cpu" and ids.shape[0] >= FROZEN_MIN_BATCH
    if not compile:
        step_fn = static_step
    elif frozen:
        step_fn = frozen_static_step(task)
    else:
        step_fn = compiled_static_step(device.type)

    def step(token: Tensor) -> Tensor:
        out = step_fn(task, token, cache, guidance_w, guidance_after, greedy)
        cache.advance(1)
        return out.clone() if compile and device.type == "cuda" else out  # CUDA graphs reuse their output

    # dynamo reads inductor's *global* freezing flag while tracing (parameters then become graph constants); the
    # per-compile option alone leaves them graph inputs, and the GEMM templates need constants
    with torch._inductor.config.patch(freezing=True) if frozen else contextlib.nullcontext():
        return decoding.run(first, step, tokens=greedy)

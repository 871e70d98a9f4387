"""Autoregressive generation for :class:`hrmkit.tasks.text.TextTask` with a per-(module call, layer) KV cache.

HRM-Text's inference recipe (spec §6.1): the whole prompt (``<|im_start|>{conditions}{prompt}<|im_end|>``) is a
PrefixLM prefix, so the prefill attends bidirectionally over it; every new token then runs the full schedule once,
causally, appending its keys/values to each (call, layer) cache. The first response token is read from the logits of
the last prompt position, exactly where training's labels put it.

Batching: prompts of equal length decode together in one batch; prompts of different lengths go in separate
batches (in order of first appearance). The cache has no padding mask, so left-padding would let real tokens attend
to pad keys; grouping by length is exact and needs no mask. Rows that hit a stop token keep being computed (their
output is frozen) until the whole group has stopped or ``max_new_tokens`` is reached.

Auto-guidance (paper App. D): ``(1 + w)·logits(h) − w·logits(h′)`` where ``h`` is the core's final output and ``h′``
its output right after the first call of kind ``guidance_after`` (HRM: z_H after the first H cycle). It is computed
from the same pass, so it costs one extra LM-head product per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.cache import KVCache

# A hrmkit.tasks.text.TextTask, typed structurally (embed, core, lm_head, embed_tokens): TextTask.predict_step calls
# generate(), so importing the class here, even for type checking only, would close an import cycle.
TextTask = Any


def core_outputs(task: TextTask, input_ids: Tensor, attn: AttnSpec, cache: KVCache | None = None,
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


def next_token_logits(task: TextTask, input_ids: Tensor, attn: AttnSpec, cache: KVCache | None = None,
                      guidance_w: float = 0.0, guidance_after: str = "H") -> Tensor:
    """fp32 logits ``[B, T, V]``, auto-guided when ``guidance_w != 0``."""
    if guidance_w == 0.0:
        return task(input_ids, attn, cache).float()
    final, early = core_outputs(task, input_ids, attn, cache, guidance_after)
    logits = task.lm_head(final).float()
    return (1.0 + guidance_w) * logits - guidance_w * task.lm_head(early).float()


def sample(logits: Tensor, temperature: float = 0.0, top_k: int | None = None,
           generator: torch.Generator | None = None) -> Tensor:
    """One token per row from ``logits`` ``[B, V]``: argmax when ``temperature <= 0``, else softmax(logits / T)
    restricted to the ``top_k`` largest logits (ties at the k-th value are kept)."""
    if temperature <= 0.0:
        return logits.argmax(-1)
    scaled = logits.float() / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(task: TextTask, prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, stop_ids: Sequence[int] = (), guidance_w: float = 0.0, seed: int = 0,
             guidance_after: str = "H") -> list[list[int]]:
    """Continue every prompt by up to ``max_new_tokens`` tokens.

    Args:
        task: a TextTask (any core); it runs in eval mode and is put back in its previous mode afterwards.
        prompts: token-id lists, each the full PrefixLM prefix (HRM-Text: ``<|im_start|>`` conditions, prompt,
            ``<|im_end|>``); each must be non-empty.
        max_new_tokens: generation budget per prompt.
        temperature: 0 = greedy (argmax); > 0 samples from softmax(logits / temperature).
        top_k: sample among the k most likely tokens only (None = all).
        stop_ids: a generated token in this set ends that prompt's output (it is included as the last token).
            HRM-Text: ``<|box_end|>`` (id 11 in the released tokenizer).
        guidance_w: auto-guidance weight w (0 = off; the paper searched {−0.5, −0.1, 0, 0.1, 0.5}).
        seed: seeds the sampling generator (one generator for the whole call, consumed group by group).
        guidance_after: schedule kind whose first call gives ``h′`` for guidance (HRM: ``H``).

    Returns:
        The generated ids per prompt (prompt not included), in the order of ``prompts``.
    """
    if max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"generate: top_k must be >= 1 or None, got {top_k}")
    vocab = task.embed_tokens.num_embeddings
    groups: dict[int, list[int]] = {}
    for n, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"generate: prompt {n} is empty; a prompt needs at least one token to prefill")
        bad = [t for t in prompt if not 0 <= int(t) < vocab]
        if bad:
            raise ValueError(f"generate: prompt {n} has token ids outside the vocabulary [0, {vocab}): {bad[:5]}")
        groups.setdefault(len(prompt), []).append(n)
    rope = getattr(task.core, "rope", None)
    if rope is not None and groups and max_new_tokens > 0:
        longest = max(groups) + max_new_tokens - 1  # positions fed to the model: prompt + all but the last token
        if longest > rope.max_seq_len:
            raise ValueError(f"generate: prompt length {max(groups)} + max_new_tokens {max_new_tokens} needs "
                             f"{longest} positions but the core's RoPE table holds {rope.max_seq_len}; shorten the "
                             "prompt or the budget (or build the core with a larger max_seq_len)")
    results: list[list[int]] = [[] for _ in prompts]
    if max_new_tokens == 0 or not groups:
        return results
    device = task.embed_tokens.weight.device
    generator = torch.Generator(device=device).manual_seed(seed)
    stops = {int(s) for s in stop_ids}
    was_training = task.training
    task.eval()
    try:
        for idxs in groups.values():
            outs = _generate_group(task, [prompts[i] for i in idxs], max_new_tokens, temperature, top_k, stops,
                                   guidance_w, guidance_after, generator, device)
            for i, out in zip(idxs, outs):
                results[i] = out
    finally:
        task.train(was_training)
    return results


def _generate_group(task: TextTask, prompts: list[Sequence[int]], max_new_tokens: int, temperature: float,
                    top_k: int | None, stops: set[int], guidance_w: float, guidance_after: str,
                    generator: torch.Generator, device: torch.device) -> list[list[int]]:
    """Decode equal-length prompts as one batch sharing one KV cache."""
    ids = torch.tensor([[int(t) for t in p] for p in prompts], dtype=torch.long, device=device)
    b, length = ids.shape
    cache = KVCache()
    prefill = AttnSpec("prefixlm", prefix_lens=torch.full((b,), length, dtype=torch.int32, device=device))
    logits = next_token_logits(task, ids, prefill, cache, guidance_w, guidance_after)[:, -1]
    outs: list[list[int]] = [[] for _ in range(b)]
    done = [False] * b
    decode = AttnSpec("causal")
    for step in range(max_new_tokens):
        token = sample(logits, temperature, top_k, generator)
        for r, t in enumerate(token.tolist()):
            if not done[r]:
                outs[r].append(t)
                done[r] = t in stops
        if all(done) or step == max_new_tokens - 1:
            break
        logits = next_token_logits(task, token.unsqueeze(1), decode, cache, guidance_w, guidance_after)[:, -1]
    return outs

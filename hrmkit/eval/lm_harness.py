"""hrmkit text models as an lm-evaluation-harness model class ``hrmkit`` (needs ``pip install 'hrmkit[lm-eval]'``).

How requests map onto HRM-Text (specs/hrm-text.md §4.2, §6.4):

* **loglikelihood** ``(context, continuation)``: the context is the PrefixLM prefix (bidirectional), the continuation
  is scored causally after it, as HRM-Text was trained. With the envelope (default) the prefix is
  ``<|im_start|>`` + condition tokens + context + ``<|im_end|>`` and the continuation is the response, so the score
  is the model's training objective −log P(x_a | x_q) (no ``<|box_end|>`` is added: lm-eval scores the text only).
  Trailing whitespace of the context moves to the continuation (lm-eval's convention).
* **loglikelihood_rolling** ``(text,)``: the text is the response to an empty instruction (envelope) or follows one
  ``<|im_start|>`` token (no envelope); texts longer than the context window are scored in windows that each
  predict new tokens with as much preceding text as fits (causal), every token scored exactly once.
* **generate_until** ``(context, gen_kwargs)``: the prompt is the enveloped context, decoded by
  :func:`hrmkit.generate.generate` (KV-cached, PrefixLM prefill) until ``<|box_end|>`` or ``max_gen_toks``; the
  ``until`` strings cut the decoded text at their first occurrence (single-token stop strings also end decoding
  early). Cutting after greedy decoding gives the same text as stopping at the string.

Conditions (the paper's defaults): generation uses ``synth,cot`` (GSM8K, MATH), scoring uses ``direct`` (ARC-C and
the other multiple-choice tasks); set ``condition=direct`` for DROP. Inside ``--model_args`` write several
conditions with ``+`` (``condition=synth+cot``) because commas separate the arguments there. ``envelope=False``
feeds the raw text (a model trained without the HRM-Text layout).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hrmkit.data.text.tokenizer import Tokenizer, load_tokenizer, parse_condition
from hrmkit.errors import HrmkitInputError
from hrmkit.eval.prefix_scoring import ScoreItem, score_items
from hrmkit.loading import is_hf_dir, load
from hrmkit.tasks.text import TextTask

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("the lm-evaluation-harness adapter needs lm-eval: pip install 'hrmkit[lm-eval]'") from e

#: Paper defaults (specs/hrm-text.md §6.4): generation benchmarks run ``synth,cot``, scored ones ``direct``.
DEFAULT_CONDITION = "synth,cot"
DEFAULT_SCORE_CONDITION = "direct"
_DEFAULT_MAX_LENGTH = 4096


def _condition(value: str | None, where: str) -> tuple[str, ...]:
    """Condition names from ``synth,cot`` / ``synth+cot`` / ``""`` (none)."""
    return parse_condition(None if value is None else str(value).replace("+", ","), where)


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise HrmkitInputError(f"hrmkit lm-eval model: {name} must be true or false, got {value!r}")


def default_tokenizer(model: str) -> str:
    """The tokenizer stored next to the model: an HF directory's ``tokenizer.json``."""
    p = Path(model)
    folder = p if p.is_dir() else p.parent
    if is_hf_dir(p) and (folder / "tokenizer.json").is_file():
        return str(folder / "tokenizer.json")
    raise HrmkitInputError(f"{model}: no tokenizer.json next to the model; pass tokenizer=<tokenizer.json, a text "
                           "dataset folder, or gpt2>")


@register_model("hrmkit")
class HrmkitLM(LM):
    """An hrmkit TextTask (checkpoint or HF ``hrm_text`` directory) behind lm-eval's three request types."""

    def __init__(self, model: str | TextTask | None = None, tokenizer: str | Tokenizer | None = None,
                 batch_size: int | str | None = 8, device: str | None = None, envelope: bool | str = True,
                 condition: str | None = DEFAULT_CONDITION, score_condition: str | None = DEFAULT_SCORE_CONDITION,
                 max_length: int | None = None, max_gen_toks: int = 256, guidance_w: float = 0.0,
                 pretrained: str | None = None, **ignored: Any) -> None:
        """
        Args:
            model: a TextTask checkpoint (.ckpt), an HF ``hrm_text`` directory, or a TextTask in memory
                (``pretrained`` is accepted as an alias, as lm-eval's HF model calls it).
            tokenizer: ``gpt2``, a tokenizer.json, or a folder holding one; default: the HF directory's own.
            batch_size: requests per forward pass (lm-eval's ``auto`` means 8).
            device: ``cpu``, ``cuda``, ``cuda:1``...; default: CUDA when available.
            envelope: wrap contexts in HRM-Text's ``<|im_start|>`` conditions … ``<|im_end|>`` (default).
            condition: condition tokens for generation (default ``synth,cot``; ``""`` for none).
            score_condition: condition tokens for loglikelihood requests (default ``direct``).
            max_length: longest input in tokens; default: the core's RoPE table (else 4096). Longer contexts lose
                their beginning.
            max_gen_toks: generation budget when a task gives none.
            guidance_w: auto-guidance weight for generation (0 = off, as in the paper's tables).
        """
        super().__init__()
        model = model if model is not None else pretrained
        if model is None:
            raise HrmkitInputError("hrmkit lm-eval model: give model=<checkpoint or HF directory>")
        unknown = sorted(set(ignored) - {"max_batch_size", "trust_remote_code", "dtype", "parallelize"})
        if unknown:
            raise HrmkitInputError(f"hrmkit lm-eval model: unknown arguments {unknown}; accepted: model, tokenizer, "
                                   "batch_size, device, envelope, condition, score_condition, max_length, "
                                   "max_gen_toks, guidance_w")
        self.task = model if isinstance(model, TextTask) else load(model, TextTask)
        if tokenizer is None:
            if isinstance(model, TextTask):
                raise HrmkitInputError("hrmkit lm-eval model: an in-memory TextTask needs tokenizer=")
            tokenizer = default_tokenizer(model)
        self.tok = load_tokenizer(tokenizer)
        vocab = self.task.embed_tokens.num_embeddings
        if self.tok.vocab_size > vocab:
            raise HrmkitInputError(f"tokenizer {self.tok.source} has {self.tok.vocab_size} tokens but the model's "
                                   f"vocabulary holds {vocab}; pass the tokenizer the model was trained with")
        self.batch_size = 8 if batch_size in (None, "auto") or str(batch_size).startswith("auto") else int(batch_size)
        if self.batch_size < 1:
            raise HrmkitInputError(f"hrmkit lm-eval model: batch_size must be >= 1, got {batch_size}")
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._device = torch.device(dev)
        self.task.to(self._device).eval()
        self.envelope = _as_bool(envelope, "envelope")
        self.condition = _condition(condition, "condition")
        self.score_condition = _condition(score_condition, "score_condition")
        rope = getattr(self.task.core, "rope", None)
        self.max_length = int(max_length or getattr(rope, "max_seq_len", _DEFAULT_MAX_LENGTH))
        self.max_gen_toks = int(max_gen_toks)
        self.guidance_w = float(guidance_w)

    # ------------------------------------------------------------------------------------------------ prompts
    def _head(self, condition: tuple[str, ...]) -> tuple[list[int], list[int]]:
        """Tokens before and after the context text: the envelope, or one ``<|im_start|>`` / nothing."""
        if self.envelope:
            return [self.tok.boq_id, *self.tok.condition_token_ids(condition)], [self.tok.eoq_id]
        return [self.tok.boq_id], []

    def _split(self, context: str, continuation: str) -> tuple[str, list[int]]:
        """Move the context's trailing whitespace into the continuation and encode the continuation."""
        stripped = context.rstrip()
        continuation = context[len(stripped):] + continuation
        if self.envelope or not stripped:
            return stripped, self.tok.encode(continuation)
        whole = self.tok.encode(stripped + continuation)  # raw text: one tokenization, like a causal LM sees it
        return stripped, whole[len(self.tok.encode(stripped)):]

    def loglikelihood_items(self, pairs: Sequence[tuple[str, str]]) -> list[ScoreItem]:
        """The scoring item of every ``(context, continuation)`` pair."""
        items = []
        for n, (context, continuation) in enumerate(pairs):
            context, cont = self._split(context, continuation)
            if not cont:
                raise HrmkitInputError(f"hrmkit lm-eval: request {n} has an empty continuation {continuation!r}")
            room = self.max_length + 1 - len(cont)
            prefix = self._fit_prefix(context, self.score_condition, room)
            items.append(ScoreItem(tuple(prefix + cont), len(prefix), len(prefix)))
        return items

    def _fit_prefix(self, context: str, condition: tuple[str, ...], room: int) -> list[int]:
        head, tail = self._head(condition)
        text = self.tok.encode(context) if context else []
        if not self.envelope and text:
            head = []
        keep = room - len(head) - len(tail)
        if keep < 0 or (keep == 0 and not (head or tail)):
            raise HrmkitInputError(f"hrmkit lm-eval: a continuation leaves no room for its context within "
                                   f"max_length={self.max_length} tokens")
        return head + (text[len(text) - keep:] if keep < len(text) else text) + tail

    # ------------------------------------------------------------------------------------------------ requests
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        items = self.loglikelihood_items([tuple(r.args) for r in requests])
        out = []
        for req, score in zip(requests, score_items(self.task, items, self.batch_size)):
            out.append((score.logprob, score.is_greedy))
            self.cache_hook.add_partial("loglikelihood", req.args, out[-1])
        return out

    def rolling_items(self, text: str) -> list[ScoreItem]:
        """Windows scoring every token of ``text`` once, each after as much preceding text as fits."""
        head, tail = self._head(self.score_condition)
        prefix = head + tail
        ids = self.tok.encode(text)
        width = self.max_length + 1 - len(prefix)  # text tokens per window (inputs are tokens[:-1])
        if width < 1:
            raise HrmkitInputError(f"hrmkit lm-eval: max_length={self.max_length} leaves no room after the prefix")
        items, done = [], 0
        while done < len(ids):
            end = min(len(ids), done + width)
            start = max(0, end - width)
            items.append(ScoreItem(tuple(prefix + ids[start:end]), len(prefix), len(prefix) + done - start))
            done = end
        return items

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        windows = [self.rolling_items(r.args[0]) for r in requests]
        flat = [w for ws in windows for w in ws]
        scores = iter(score_items(self.task, flat, self.batch_size))
        out = []
        for req, ws in zip(requests, windows):
            out.append(float(sum(next(scores).logprob for _ in ws)))
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, out[-1])
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        groups: dict[tuple[int, float], list[int]] = {}
        prompts, untils = [], []
        for n, req in enumerate(requests):
            context, kwargs = req.args[0], dict(req.args[1] or {})
            until = kwargs.pop("until", None)
            untils.append([until] if isinstance(until, str) else list(until or []))
            budget = int(kwargs.pop("max_gen_toks", kwargs.pop("max_new_tokens", self.max_gen_toks)))
            temperature = float(kwargs.pop("temperature", 0.0)) if kwargs.pop("do_sample", False) else 0.0
            # prompt and answer share the context window (the reference's max_context): the prompt is cut only when
            # it alone overflows the window, and the budget shrinks to what the prompt leaves
            prompts.append(self._fit_prefix(context, self.condition, self.max_length))
            budget = min(budget, self.max_length - len(prompts[-1]) + 1)
            groups.setdefault((budget, temperature), []).append(n)
        texts: list[str] = [""] * len(requests)
        for (budget, temperature), idxs in groups.items():
            stops = {self.tok.eoa_id} | {t for i in idxs for t in self._single_token_stops(untils[i])}
            outs = self._generate([prompts[i] for i in idxs], budget, temperature, sorted(stops))
            for i, out in zip(idxs, outs):
                texts[i] = cut_at_stops(self.tok.decode([t for t in out if t != self.tok.eoa_id]), untils[i])
                self.cache_hook.add_partial("generate_until", requests[i].args, texts[i])
        return texts

    def _single_token_stops(self, until: list[str]) -> list[int]:
        ids = [self.tok.encode(s) for s in until if s]
        return [i[0] for i in ids if len(i) == 1]

    def _generate(self, prompts: list[list[int]], budget: int, temperature: float,
                  stop_ids: list[int]) -> list[list[int]]:
        """Decode in chunks of ``batch_size`` taken in length order (the generator batches equal lengths)."""
        from hrmkit.generate import generate

        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        outs: list[list[int]] = [[] for _ in prompts]
        for start in range(0, len(order), self.batch_size):
            chunk = order[start: start + self.batch_size]
            got = generate(self.task, [prompts[i] for i in chunk], budget, temperature=temperature,
                           stop_ids=stop_ids, guidance_w=self.guidance_w)
            for i, out in zip(chunk, got):
                outs[i] = out
        return outs

    # ------------------------------------------------------------------------------------------------ lm-eval API
    @property
    def tokenizer_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", f"hrmkit-{self.tok.sha256[:16]}")


def cut_at_stops(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string (lm-eval's ``until`` semantics)."""
    cut = len(text)
    for stop in until:
        if stop:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]

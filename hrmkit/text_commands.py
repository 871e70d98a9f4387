"""``hrmkit generate`` and ``hrmkit export hf``: the text model's command-line entry points."""

from __future__ import annotations

from pathlib import Path

from hrmkit.tasks.text import TextTask


def load_text_model(model: str) -> TextTask:
    """A TextTask from a Lightning checkpoint (``.ckpt``) or an HF ``hrm_text`` directory."""
    path = Path(model)
    if path.is_dir():
        from hrmkit.interop.hf_hrm_text import load_hf

        return load_hf(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: neither a checkpoint file nor an HF model directory")
    from hrmkit.registry import load_plugins

    load_plugins()
    return TextTask.load_from_checkpoint(path, map_location="cpu")


def generate_text(model: str, tokenizer: str, prompt: list[str], condition: str | None = None,
                  max_new_tokens: int = 256, temperature: float = 0.0, top_k: int | None = None,
                  guidance_w: float = 0.0, seed: int = 0) -> list[str]:
    """Answer instructions with a text model (KV-cached decoding after a bidirectional prefill of the prompt).

    Args:
        model: a TextTask checkpoint (.ckpt) or an HF hrm_text directory.
        tokenizer: ``gpt2``, a tokenizer.json, or a folder holding one (e.g. the built text dataset).
        prompt: one or more instructions.
        condition: optional condition token(s): direct, cot, noisy, synth.
        max_new_tokens: upper bound on the response length.
        temperature: 0 = greedy; otherwise sampling temperature.
        top_k: sample only among the k most likely tokens.
        guidance_w: auto-guidance weight w: (1+w)·logits(z_H) − w·logits(z_H after the first H call).
        seed: sampling seed.
    """
    from hrmkit.data.text import load_tokenizer
    from hrmkit.generate import generate

    task = load_text_model(model).eval()
    tok = load_tokenizer(tokenizer)
    ids = [tok.encode_prompt(p, condition) for p in prompt]
    out = generate(task, ids, max_new_tokens, temperature=temperature, top_k=top_k, stop_ids=(tok.eoa_id,),
                   guidance_w=guidance_w, seed=seed)
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

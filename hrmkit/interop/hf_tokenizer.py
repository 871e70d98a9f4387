"""The files that make an ``hrm_text`` export self-contained: tokenizer and generation config.

``transformers``' ``AutoTokenizer`` reads ``tokenizer.json`` through ``PreTrainedTokenizerFast`` as named in
``tokenizer_config.json``; its chat template writes hrmkit's inference prompt (``BOQ + instruction + EOQ``, see
:meth:`hrmkit.data.text.Tokenizer.encode_prompt`). ``generation_config.json`` stops generation at the
end-of-answer token, as ``hrmkit generate`` does. :func:`run_tokenizer` finds the tokenizer a run trained with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hrmkit.data.text.tokenizer import (
    BOQ_TOKEN,
    EOA_TOKEN,
    EOQ_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    Tokenizer,
    load_tokenizer,
)

#: Single-turn instruction prompt: BOQ, the user's text, EOQ (generation continues with the answer).
CHAT_TEMPLATE = ("{{ '" + BOQ_TOKEN + "' }}{% for message in messages %}{% if message['role'] == 'user' %}"
                 "{{ message['content'] }}{% endif %}{% endfor %}{{ '" + EOQ_TOKEN + "' }}")


def run_tokenizer(model: str | Path) -> str | None:
    """The tokenizer a model comes with: an export folder's ``tokenizer.json``, or for a Lightning checkpoint the
    ``data_dir`` of the text data module it was trained with (when that folder still holds ``tokenizer.json``)."""
    path = Path(model)
    if path.is_dir():
        return str(path) if (path / "tokenizer.json").is_file() else None
    if not path.is_file():
        return None
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    data_dir = (ckpt.get("datamodule_hyper_parameters") or {}).get("data_dir")
    if data_dir and (Path(data_dir) / "tokenizer.json").is_file():
        return str(data_dir)
    return None


def hf_tokenizer_files(tok: Tokenizer, model_max_length: int) -> dict[str, str]:
    """``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` for ``AutoTokenizer``."""
    special = {"bos_token": BOQ_TOKEN, "eos_token": EOA_TOKEN, "pad_token": PAD_TOKEN}
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
                              "clean_up_tokenization_spaces": False, "chat_template": CHAT_TEMPLATE,
                              "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in special.values()],
                              **special}
    return {"tokenizer.json": tok.to_str(),
            "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
            "special_tokens_map.json": json.dumps(special, indent=2) + "\n"}


def generation_config(tok: Tokenizer, pad_id: int) -> str:
    """``generation_config.json``: greedy decoding that stops at the end-of-answer token."""
    return json.dumps({"bos_token_id": tok.boq_id, "eos_token_id": tok.eoa_id, "pad_token_id": pad_id,
                       "do_sample": False}, indent=2) + "\n"


def export_files(tokenizer: str | Tokenizer, pad_id: int, model_max_length: int) -> tuple[dict[str, str], dict]:
    """The extra files of an export and the config.json token ids, from a tokenizer spec (see load_tokenizer)."""
    tok = load_tokenizer(tokenizer)
    files = hf_tokenizer_files(tok, model_max_length)
    files["generation_config.json"] = generation_config(tok, pad_id)
    return files, {"bos_token_id": tok.boq_id, "eos_token_id": tok.eoa_id, "pad_token_id": pad_id}

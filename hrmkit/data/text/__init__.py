"""Text data for HRM-Text style PrefixLM training: tokenizers, dataset builders, packing and the data module.

``build_text`` (JSONL), ``import_data_io`` (the reference's data_io layout) and ``build_gsm_symbolic`` (an offline
GSM8K-like task) write one on-disk format (``format``); ``TextDataModule`` streams it as packed batches
(``packing``). See docs/text-data.md.

Names are imported on first use (PEP 562): the builders load without Lightning and torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DataIoDataset": "hrmkit.data.text.data_io",
    "import_data_io": "hrmkit.data.text.data_io",
    "TextFormatError": "hrmkit.data.text.format",
    "TextMetadata": "hrmkit.data.text.format",
    "TextSplitStats": "hrmkit.data.text.format",
    "iter_samples": "hrmkit.data.text.format",
    "read_text_metadata": "hrmkit.data.text.format",
    "build_gsm_symbolic": "hrmkit.data.text.gsm_symbolic",
    "build_text": "hrmkit.data.text.jsonl",
    "build_text_dataset": "hrmkit.data.text.jsonl",
    "parse_record": "hrmkit.data.text.jsonl",
    "write_jsonl": "hrmkit.data.text.jsonl",
    "PackedTextLoader": "hrmkit.data.text.module",
    "TextDataModule": "hrmkit.data.text.module",
    "IGNORE_INDEX": "hrmkit.data.text.packing",
    "PackingCollate": "hrmkit.data.text.packing",
    "StreamPacker": "hrmkit.data.text.packing",
    "lpt_assign": "hrmkit.data.text.packing",
    "multipack_step": "hrmkit.data.text.packing",
    "pack_batch": "hrmkit.data.text.packing",
    "plan_greedy": "hrmkit.data.text.packing",
    "plan_multipack": "hrmkit.data.text.packing",
    "rank_batches": "hrmkit.data.text.packing",
    "CONDITION_TOKENS": "hrmkit.data.text.tokenizer",
    "CONDITIONS": "hrmkit.data.text.tokenizer",
    "SPECIAL_TOKENS": "hrmkit.data.text.tokenizer",
    "Tokenizer": "hrmkit.data.text.tokenizer",
    "char_level": "hrmkit.data.text.tokenizer",
    "TokenizerError": "hrmkit.data.text.tokenizer",
    "gpt2": "hrmkit.data.text.tokenizer",
    "load_tokenizer": "hrmkit.data.text.tokenizer",
    "padded_vocab_size": "hrmkit.data.text.tokenizer",
    "parse_condition": "hrmkit.data.text.tokenizer",
    "train_bpe": "hrmkit.data.text.tokenizer",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hrmkit.data.text' has no attribute {name!r}")

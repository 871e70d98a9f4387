"""Text data for HRM-Text style PrefixLM training: tokenizers, dataset builders, packing and the data module.

``build_text`` (JSONL), ``import_data_io`` (the reference's data_io layout) and ``build_gsm_symbolic`` (an offline
GSM8K-like task) write one on-disk format (``format``); ``TextDataModule`` streams it as packed batches
(``packing``). See docs/text-data.md.
"""

from hrmkit.data.text.data_io import DataIoDataset, import_data_io
from hrmkit.data.text.format import (
    TextFormatError,
    TextMetadata,
    TextSplitStats,
    iter_samples,
    read_text_metadata,
)
from hrmkit.data.text.gsm_symbolic import build_gsm_symbolic
from hrmkit.data.text.jsonl import build_text, build_text_dataset, parse_record, write_jsonl
from hrmkit.data.text.module import PackedTextLoader, TextDataModule
from hrmkit.data.text.packing import (
    IGNORE_INDEX,
    PackingCollate,
    StreamPacker,
    lpt_assign,
    multipack_step,
    pack_batch,
    plan_greedy,
    plan_multipack,
    rank_batches,
)
from hrmkit.data.text.tokenizer import (
    CONDITION_TOKENS,
    CONDITIONS,
    SPECIAL_TOKENS,
    Tokenizer,
    TokenizerError,
    gpt2,
    load_tokenizer,
    padded_vocab_size,
    parse_condition,
    train_bpe,
)

__all__ = [
    "CONDITIONS", "CONDITION_TOKENS", "DataIoDataset", "IGNORE_INDEX", "PackedTextLoader", "PackingCollate",
    "SPECIAL_TOKENS", "StreamPacker", "TextDataModule", "TextFormatError", "TextMetadata", "TextSplitStats",
    "Tokenizer", "TokenizerError", "build_gsm_symbolic", "build_text", "build_text_dataset", "gpt2",
    "import_data_io", "iter_samples", "load_tokenizer", "lpt_assign", "multipack_step", "pack_batch",
    "padded_vocab_size", "parse_condition", "parse_record", "plan_greedy", "plan_multipack", "rank_batches",
    "read_text_metadata", "train_bpe", "write_jsonl",
]

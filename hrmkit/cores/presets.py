"""Option bundles shared by the named variants of every core (plain dicts, merged into each variant)."""

from __future__ import annotations

#: HRM-Symbolic / TRM blocks: post-norm, RMSNorm eps 1e-5, truncated-at-2σ LeCun init, plain MHA.
SYMBOLIC = dict(norm="post", norm_eps=1e-5, init="trunc2", gated_attn=False, hidden_size=512, num_heads=8,
                expansion=4.0)

#: HRM-Text blocks: MagicNorm, eps 1e-6, fmod-3 LeCun init, gated attention, 4096-token RoPE table.
TEXT = dict(norm="magic", norm_eps=1e-6, init="fmod3", gated_attn=True, expansion=4.0, max_seq_len=4096)

#: HRM-Text sizes (specs/hrm-text.md §2.7): (hidden, total layers of a same-size Transformer). Heads = hidden / 128.
TEXT_SIZES = {"B": (1024, 12), "L": (1280, 24), "XL": (1536, 32), "XXL": (1792, 72), "XXL_wide": (2560, 32)}

#: A few-thousand-parameter configuration for tests and CPU smoke runs.
TINY = dict(hidden_size=32, num_heads=2, expansion=2.0, max_seq_len=256)


def text_size(size: str) -> dict:
    hidden, _ = TEXT_SIZES[size]
    return dict(TEXT, hidden_size=hidden, num_heads=hidden // 128)

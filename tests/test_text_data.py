"""Text datasets: the JSONL builder, the data_io importer, gsm_symbolic, and TextDataModule (round trip, resume,
stream and rank-aware multipack packing)."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import lightning as L
import numpy as np
import pytest
import torch
from test_text_packing import check_contract

from hrmkit.data.text import (
    TextDataModule,
    TextFormatError,
    build_text,
    import_data_io,
    iter_samples,
    load_tokenizer,
    read_text_metadata,
    train_bpe,
    write_jsonl,
)
from hrmkit.data.text.format import LENGTHS_FILE, read_sample_lengths
from hrmkit.data.text.gsm_symbolic import to_record
from hrmkit.data.text.module import PackedTextLoader
from hrmkit.data.text.multipack import MultipackTextLoader
from hrmkit.data.text.packing import lpt_assign, plan_multipack
from hrmkit.data.text.tokenizer import file_sha256

CONDITIONS = ["direct", "cot", "synth,cot", None]
BUDGET = 128


def _records(n: int = 120) -> list[dict]:
    return [{"instruction": f"Question {i}: what is {i} + {i}?", "response": f"The answer is {2 * i}. " * (1 + i % 5),
             "condition": CONDITIONS[i % 4], "id": i} for i in range(n)]


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tok")
    corpus = folder / "corpus.txt"
    corpus.write_text(" ".join(f"Question {i}: what is {i} + {i}? The answer is {2 * i}." for i in range(300)))
    return str(train_bpe([corpus], vocab_size=420).save(folder / "tokenizer.json"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tok_path):
    root = tmp_path_factory.mktemp("text")
    src = write_jsonl(root / "src" / "data.jsonl", _records())
    meta = build_text(str(root / "ds"), [str(src)], tokenizer=tok_path, val_fraction=0.1, seed=0)
    return root / "ds", meta


def _stored(path, split: str) -> list[tuple[tuple[int, ...], int]]:
    return [(tuple(int(x) for x in s["ids"]), int(s["prefix_len"])) for s in iter_samples(path, split)]


def _docs(batch: dict) -> list[tuple[np.ndarray, int]]:
    """The real samples of a packed batch, cut back out along cu_seqlens."""
    cu, ids = batch["cu_seqlens"].tolist(), batch["input_ids"][0].numpy()
    prefixes = batch["prefix_lens"].tolist()
    return [(ids[cu[k]:cu[k + 1]], prefixes[k]) for k in range(batch["num_samples"])]


# ------------------------------------------------------------------------------------------------ JSONL builder


def test_build_round_trip(dataset, tok_path):
    path, meta = dataset
    tok = load_tokenizer(tok_path)
    assert meta == read_text_metadata(path)
    assert (meta.vocab_size, meta.tokenizer_vocab_size, meta.token_dtype) == (512, 420, "uint16")
    assert (meta.pad_id, meta.boq_id, meta.eoq_id, meta.eoa_id) == (0, 6, 7, 11)
    assert meta.condition_ids == {"direct": 8, "cot": 9, "noisy": 12, "synth": 13}
    assert meta.splits["train"].samples == 108 and meta.splits["val"].samples == 12
    assert meta.dropped == {"empty_response": 0, "short_response": 0, "too_long": 0}
    assert meta.tokenizer_sha256 == file_sha256(path / "tokenizer.json")
    assert load_tokenizer(path).special_ids == tok.special_ids
    assert meta.sources[0]["records"] == 120 and len(meta.sources[0]["sha256"]) == 64
    expected = Counter(tuple(tok.encode_sample(r["instruction"], r["response"], r["condition"])[0]) for r in
                       _records())
    prefixes = {tuple(tok.encode_sample(r["instruction"], r["response"], r["condition"])[0]):
                tok.encode_sample(r["instruction"], r["response"], r["condition"])[1] for r in _records()}
    stored = _stored(path, "train") + _stored(path, "val")
    assert Counter(ids for ids, _ in stored) == expected
    assert all(prefixes[ids] == p for ids, p in stored)
    assert meta.splits["train"].tokens == sum(len(ids) for ids, _ in _stored(path, "train"))
    assert meta.splits["train"].max_sample_len == max(len(ids) for ids, _ in _stored(path, "train"))


def test_dropped_and_truncated_records_are_counted(tmp_path, tok_path):
    tok = load_tokenizer(tok_path)
    long = "The answer is 42. " * 30
    records = [{"instruction": "q", "response": ""}, {"instruction": "q", "response": "   \n"},
               {"instruction": "q", "response": "7"}, {"instruction": "q", "response": long},
               {"instruction": "Question " * 40, "response": "7"}, {"instruction": "ok", "response": "fine."}]
    src = write_jsonl(tmp_path / "d.jsonl", records)
    short = len(tok.encode("7")) + 1  # "7" + EOA
    meta = build_text(str(tmp_path / "a"), [str(src)], tokenizer=tok_path, val_fraction=0, max_len=40,
                      min_response_tokens=short + 1)
    assert meta.dropped == {"empty_response": 2, "short_response": 2, "too_long": 0}
    assert meta.splits["train"].samples == 2 and meta.splits["train"].truncated == 1 and "val" not in meta.splits
    cut = max(_stored(tmp_path / "a", "train"), key=lambda s: len(s[0]))
    assert len(cut[0]) == 40 and cut[0][-1] != tok.eoa_id  # the reference truncation cuts the response's end
    meta = build_text(str(tmp_path / "b"), [str(src)], tokenizer=tok_path, val_fraction=0, max_len=40,
                      truncate=False)
    assert meta.dropped == {"empty_response": 2, "short_response": 0, "too_long": 2}
    assert meta.splits["train"].samples == 2 and meta.splits["train"].truncated == 0


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"response": "x"}', "field 'instruction': missing"),
    ('{"instruction": "a", "response": 3}', "field 'response': expected a string, got int"),
    ('{"instruction": "a", "response": "b", "condition": "cot,think"}', "field 'condition'.*unknown condition 'think'"),
    ('{"instruction": "a", "response": "b", "condition": 5}', "field 'condition'.*comma-separated"),
])
def test_bad_lines_name_file_and_line_and_leave_nothing(tmp_path, tok_path, line, message):
    src = tmp_path / "in" / "bad.jsonl"
    src.parent.mkdir()
    src.write_text(json.dumps({"instruction": "a", "response": "b"}) + "\n\n" + line + "\n")
    with pytest.raises(TextFormatError, match=f"{src}:3: {message}"):
        build_text(str(tmp_path / "out" / "ds"), [str(src)], tokenizer=tok_path)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []  # no partial or temp dir


def test_output_directory_rules_and_val_files(tmp_path, tok_path, dataset):
    train = write_jsonl(tmp_path / "train.jsonl", _records(20))
    test = write_jsonl(tmp_path / "test.jsonl", _records(25)[20:])
    out = tmp_path / "ds"
    meta = build_text(str(out), [str(train)], tokenizer=tok_path, val_jsonl=[str(test)])
    assert meta.val_fraction == 0 and meta.splits["train"].samples == 20 and meta.splits["val"].samples == 5
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        build_text(str(out), [str(train)], tokenizer=tok_path)
    build_text(str(out), [str(test)], tokenizer=tok_path, val_fraction=0, overwrite=True)
    assert read_text_metadata(out).splits["train"].samples == 5
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a dataset"):
        build_text(str(tmp_path / "other"), [str(train)], tokenizer=tok_path, overwrite=True)
    with pytest.raises(FileNotFoundError, match="jsonl: no such JSONL file"):
        build_text(str(tmp_path / "x"), [str(tmp_path / "missing.jsonl")], tokenizer=tok_path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(TextFormatError, match=rf"{empty}: no records \(empty JSONL\)"):  # names the input
        build_text(str(tmp_path / "y"), [str(empty)], tokenizer=tok_path)
    blank = write_jsonl(tmp_path / "blank.jsonl", [{"instruction": "q", "response": " "}] * 3)
    with pytest.raises(TextFormatError, match=rf"{blank}: none of the 3 records became a training sample "
                                              r"\(3 empty_response"):
        build_text(str(tmp_path / "z"), [str(blank)], tokenizer=tok_path, val_fraction=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.jsonl", "ds", "empty.jsonl", "other", "test.jsonl",
                                                          "train.jsonl"]


def test_metadata_validation_names_file_and_field(dataset, tmp_path):
    path, _ = dataset
    good = json.loads((path / "metadata.json").read_text())
    cases = [(lambda m: m.pop("vocab_size"), "'vocab_size': missing"),
             (lambda m: m.update(vocab_size=500), "'vocab_size': must be a multiple of 256"),
             (lambda m: m.update(pad_id=420), "'pad_id': must be a token id"),
             (lambda m: m.update(colour="red"), "'colour': unknown field"),
             (lambda m: m.update(format_version=9), "'format_version'"),
             (lambda m: m.update(token_dtype="float32"), "'token_dtype'"),
             (lambda m: m["condition_ids"].update(think=3), "'condition_ids.think': unknown condition"),
             (lambda m: m["dropped"].update(vanished=1), "'dropped.vanished': unknown reason"),
             (lambda m: m["splits"].pop("train"), "'splits.train': missing"),
             (lambda m: m.update(max_len=10), "'splits.train.max_sample_len': .* exceeds max_len 10"),
             (lambda m: m["splits"]["train"].pop("tokens"), "'splits.train.tokens': missing")]
    for i, (edit, message) in enumerate(cases):
        d = tmp_path / f"d{i}"
        shutil.copytree(path, d)
        meta = json.loads(json.dumps(good))
        edit(meta)
        (d / "metadata.json").write_text(json.dumps(meta))
        with pytest.raises(TextFormatError, match=message) as err:
            TextDataModule(str(d)).setup("fit")
        assert str(d / "metadata.json") in str(err.value)
    (tmp_path / "d0" / "metadata.json").write_text("{oops")
    with pytest.raises(TextFormatError, match="not valid JSON"):
        read_text_metadata(tmp_path / "d0")
    with pytest.raises(FileNotFoundError, match="no text dataset metadata"):
        _ = TextDataModule(str(tmp_path / "missing")).vocab_size


# ------------------------------------------------------------------------------------------------ data_io import


def _write_data_io(root, tok, dtype=np.uint16) -> list[tuple[list[int], list[int]]]:
    """A small reference-layout dataset: 6 distinct samples, epoch_0 plain, epoch_1 with repeats, shuffled."""
    pairs = [(tok.instruction_ids(tok.encode(f"Question {i}?"), CONDITIONS[i % 4]),
              tok.response_ids(tok.encode(f"The answer is {i}." * (1 + i % 3)))) for i in range(6)]
    tokens, spans = [7, 7, 7], []  # leading junk: spans need not start at 0
    for inst, resp in pairs:
        spans.append((len(tokens), len(inst), len(tokens) + len(inst), len(resp)))
        tokens += inst + resp
    root.mkdir(parents=True)
    np.save(root / "tokens.npy", np.array(tokens, dtype=dtype))
    for epoch, order in ((0, [0, 1, 2, 3, 4, 5]), (1, [3, 0, 3, 5, 1, 3, 2, 4, 0, 5])):
        (root / f"epoch_{epoch}").mkdir()
        for k, name in enumerate(("inst_start", "inst_len", "resp_start", "resp_len")):
            np.save(root / f"epoch_{epoch}" / f"{name}.npy", np.array([spans[i][k] for i in order], dtype=np.int64))
    info = {"tokenizer_path": "/nonexistent/tokenizer.json", "boq": tok.boq_id, "eoq": tok.eoq_id,
            "eoa": tok.eoa_id, "condition_mapping": {"direct": 8, "cot": 9, "noisy": 12, "synth": 13},
            "vocab_size": tok.vocab_size}
    (root / "metadata.json").write_text(json.dumps({"tokenizer_info": info, "vocab_size": None, "max_seq_len": 4097,
                                                    "total_length": 100}))
    return pairs


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_data_io_import(tmp_path, tok_path, dtype):
    tok = load_tokenizer(tok_path)
    pairs = _write_data_io(tmp_path / "src", tok, dtype)
    meta = import_data_io(str(tmp_path / "src"), str(tmp_path / "ds"), epoch=1, val_fraction=0.3, seed=1)
    assert meta.tokenizer_file is None and meta.max_len == 4097 and meta.vocab_size == 512
    assert (meta.boq_id, meta.eoq_id, meta.eoa_id, meta.pad_id) == (6, 7, 11, 0)
    assert meta.condition_ids == {"direct": 8, "cot": 9, "noisy": 12, "synth": 13}
    train, val = _stored(tmp_path / "ds", "train"), _stored(tmp_path / "ds", "val")
    assert len(train) + len(val) == 10
    everything = {(tuple(i + r), len(i)) for i, r in pairs}
    assert set(train) | set(val) <= everything
    assert not set(train) & set(val) and len(set(val)) == 2  # repeats never straddle: 30% of 6 distinct samples
    with_tok = import_data_io(str(tmp_path / "src"), str(tmp_path / "ds0"), tokenizer=tok_path)
    assert with_tok.tokenizer_file == "tokenizer.json" and with_tok.sources[0]["epoch"] == 0
    assert sorted(_stored(tmp_path / "ds0", "train")) == sorted(everything) and "val" not in with_tok.splits


def _edit(root, name, fn):
    path = root / name
    np.save(path, fn(np.load(path)))


@pytest.mark.parametrize("edit, message", [
    (lambda r: _edit(r, "tokens.npy", lambda a: a.astype(np.float32)), "tokens.npy: dtype must be uint16 or int32"),
    (lambda r: _edit(r, "tokens.npy", lambda a: a.reshape(1, -1)), "tokens.npy: must be 1-D"),
    (lambda r: _edit(r, "epoch_0/resp_len.npy", lambda a: a + 1000), "epoch_0/resp_len.npy: sample 0: span start"),
    (lambda r: _edit(r, "epoch_0/inst_start.npy", lambda a: a - 100), "epoch_0/inst_start.npy: sample 0"),
    (lambda r: _edit(r, "epoch_0/inst_len.npy", lambda a: a[:3]), "epoch_0/inst_len.npy: 3 entries"),
    (lambda r: _edit(r, "epoch_0/inst_len.npy", lambda a: a.astype(np.float64)), "inst_len.npy: must be a 1-D int"),
    (lambda r: _edit(r, "epoch_0/inst_start.npy", lambda a: a + 1), "epoch_0: sample 0: instruction span must start"),
    (lambda r: _edit(r, "tokens.npy", lambda a: np.where(a == 7, 7, a % 400 + 500).astype(a.dtype)),
     "tokens.npy: sample 0 of epoch_0: .* token id .* >= vocab_size"),
    (lambda r: (r / "metadata.json").write_text('{"tokenizer_info": {"boq": 6}}'), "'tokenizer_info.eoq'"),
    (lambda r: (r / "epoch_0" / "inst_len.npy").write_text("garbage"), "inst_len.npy: not a readable .npy"),
    (lambda r: shutil.rmtree(r / "epoch_1") or shutil.rmtree(r / "epoch_0"), "no epoch_<k> directory"),
])
def test_data_io_validation_names_the_file(tmp_path, tok_path, edit, message):
    _write_data_io(tmp_path / "src", load_tokenizer(tok_path))
    edit(tmp_path / "src")
    with pytest.raises((TextFormatError, FileNotFoundError), match=message):
        import_data_io(str(tmp_path / "src"), str(tmp_path / "ds"), epoch=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_data_io_missing_epoch_and_wrong_tokenizer(tmp_path, tok_path):
    _write_data_io(tmp_path / "src", load_tokenizer(tok_path))
    with pytest.raises(FileNotFoundError, match=r"no epoch_7 \(found epochs \[0, 1\]\)"):
        import_data_io(str(tmp_path / "src"), str(tmp_path / "ds"), epoch=7)
    meta = json.loads((tmp_path / "src" / "metadata.json").read_text())
    meta["tokenizer_info"]["eoa"] = 5
    (tmp_path / "src" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(TextFormatError, match="'tokenizer_info.eoa' is 5 but tokenizer"):
        import_data_io(str(tmp_path / "src"), str(tmp_path / "ds"), tokenizer=tok_path)


# ------------------------------------------------------------------------------------------------ gsm_symbolic


def test_gsm_record_ends_with_boxed_answer():
    ex = {"question": "Ann has 3 apples and buys 4. How many? Give the result as your final answer. Do not include "
                      "units.", "answer": "7", "metadata": {"answer_cot": "She has 3+4=7 apples.\n#### 7"}}
    rec = to_record(ex)
    assert rec == {"instruction": "Ann has 3 apples and buys 4. How many?", "condition": "cot", "answer": "7",
                   "response": "She has 3+4=7 apples.\nThe answer is \\boxed{7}."}
    with pytest.raises(ValueError, match="ends with #### '8' but the answer is '7'"):
        to_record({**ex, "metadata": {"answer_cot": "x\n#### 8"}})
    with pytest.raises(ValueError, match="not a reasoning-gym example"):
        to_record({"question": "q"})


def test_build_gsm_symbolic(tmp_path, tok_path):
    pytest.importorskip("reasoning_gym")
    from hrmkit.data.text import build_gsm_symbolic

    meta = build_gsm_symbolic(str(tmp_path / "gsm"), train_size=24, test_size=6, seed=3, tokenizer=tok_path,
                              max_len=2048)
    rows = {name: [json.loads(x) for x in (tmp_path / "gsm" / "jsonl" / f"{name}.jsonl").read_text().splitlines()]
            for name in ("train", "test")}
    assert len(rows["train"]) == 24 and meta.splits["train"].samples == 24
    assert meta.splits["val"].samples == len(rows["test"]) >= 1
    assert not {r["instruction"] for r in rows["test"]} & {r["instruction"] for r in rows["train"]}
    for r in rows["train"] + rows["test"]:
        assert r["response"].endswith(f"\\boxed{{{r['answer']}}}.") and "####" not in r["response"]
        assert r["condition"] == "cot" and not r["instruction"].endswith("Do not include units.")
    assert {s["path"] for s in meta.sources} == {"jsonl/train.jsonl", "jsonl/test.jsonl"}
    cot = meta.condition_ids["cot"]
    assert all(ids[1] == cot for ids, _ in _stored(tmp_path / "gsm", "train"))
    again = build_gsm_symbolic(str(tmp_path / "gsm2"), train_size=24, test_size=6, seed=3, tokenizer=tok_path,
                               max_len=2048)
    assert _stored(tmp_path / "gsm2", "train") == _stored(tmp_path / "gsm", "train") and again.splits == meta.splits


# ------------------------------------------------------------------------------------------------ TextDataModule


def test_properties_read_metadata_before_setup(dataset):
    path, meta = dataset
    dm = TextDataModule(str(path), tokens_per_batch=BUDGET)
    assert (dm.vocab_size, dm.pad_id, dm.eoa_id) == (512, 0, 11)
    assert dm.special_ids == {"pad": 0, "boq": 6, "eoq": 7, "eoa": 11, "direct": 8, "cot": 9, "noisy": 12,
                              "synth": 13}
    assert dm.tokenizer_path == str(path / "tokenizer.json") and dm.has_val


def test_train_loader_packs_constant_batches(dataset):
    path, meta = dataset
    stored = Counter(ids for ids, _ in _stored(path, "train"))
    loader = TextDataModule(str(path), tokens_per_batch=BUDGET, seed=3).train_dataloader()
    assert isinstance(loader, PackedTextLoader) and len(loader) == meta.splits["train"].tokens // BUDGET
    batches = list(loader)
    assert len(batches) == len(loader)
    seen: list[tuple[int, ...]] = []
    for b in batches:
        docs = _docs(b)
        check_contract(b, docs, BUDGET)  # shapes, labels, positions, documents exactly as the contract says
        assert [len(d) for d, _ in docs] == sorted((len(d) for d, _ in docs), reverse=True)  # longest first
        seen += [tuple(int(x) for x in d) for d, _ in docs]
    assert set(seen) <= set(stored)  # whole stored samples
    used = sum(len(s) for s in seen)
    assert used / (BUDGET * len(batches)) > 0.9  # packing efficiency
    # the stream runs on across data epochs and the lookahead may pack a sample of the next epoch before one of this
    # epoch, but counting the samples still waiting in the packer, every sample was drawn equally often, give or take 1
    counts = Counter(seen)
    for _ in range(3):
        drawn = counts + Counter(tuple(int(x) for x in ids) for ids, _ in loader.packer.pending)
        assert max(drawn.values()) - min(drawn.get(s, 0) for s in stored) <= 1
        counts.update(tuple(int(x) for x in d) for b in loader for d, _ in _docs(b))
    assert min(counts[s] for s in stored) >= 3
    same = list(TextDataModule(str(path), tokens_per_batch=BUDGET, seed=3).train_dataloader())
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(batches, same))
    other = list(TextDataModule(str(path), tokens_per_batch=BUDGET, seed=4).train_dataloader())
    assert not all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(batches, other))


def test_val_loader_sees_every_sample_once(dataset):
    path, _ = dataset
    dm = TextDataModule(str(path), tokens_per_batch=BUDGET)
    dm.setup("validate")
    batches = list(dm.val_dataloader())
    docs = [tuple(int(x) for x in d) for b in batches for d, _ in _docs(b)]
    assert Counter(docs) == Counter(ids for ids, _ in _stored(path, "val"))
    assert all(b["input_ids"].shape == (1, BUDGET) for b in batches)
    assert [len(list(dm.val_dataloader()))] == [len(batches)]  # repeatable


def test_budget_and_missing_val(tmp_path, tok_path, dataset):
    path, meta = dataset
    with pytest.raises(ValueError, match="smaller than the longest stored sample"):
        TextDataModule(str(path), tokens_per_batch=meta.splits["train"].max_sample_len - 1).setup("fit")
    src = write_jsonl(tmp_path / "a.jsonl", _records(10))
    build_text(str(tmp_path / "noval"), [str(src)], tokenizer=tok_path, val_fraction=0)
    assert TextDataModule(str(tmp_path / "noval"), tokens_per_batch=BUDGET).val_dataloader() == []
    with pytest.raises(ValueError, match="'samples' and 'pending'"):
        TextDataModule(str(path), tokens_per_batch=BUDGET).train_dataloader().load_state_dict({"position": 1})


def _take(loader, n: int) -> list[dict]:
    """The next ``n`` batches, crossing as many ``iter()`` calls (Lightning epochs) as needed."""
    out: list[dict] = []
    while len(out) < n:
        for batch in loader:
            out.append(batch)
            if len(out) == n:
                break
    return out


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_resumes_mid_epoch_and_across_epochs(dataset, num_workers):
    path, _ = dataset

    def loader() -> PackedTextLoader:
        return TextDataModule(str(path), tokens_per_batch=BUDGET, num_workers=num_workers, seed=1).train_dataloader()

    per_epoch = len(loader())
    total = 2 * per_epoch + 3
    full = loader()
    reference = _take(full, total)
    full.close()  # stop worker processes now rather than at garbage collection
    for stop in (3, per_epoch + 2):
        first = loader()
        head = _take(first, stop)
        assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(reference, head))
        state = json.loads(json.dumps(first.state_dict()))  # must survive a checkpoint round trip
        first.close()
        assert state["pending"]  # the packer's lookahead is part of the state
        resumed = loader()
        resumed.load_state_dict(state)
        rest = _take(resumed, total - stop)
        resumed.close()
        for i, (a, b) in enumerate(zip(reference[stop:], rest)):
            assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"]), (stop, i)
            assert torch.equal(a["cu_seqlens"], b["cu_seqlens"]) and torch.equal(a["prefix_lens"], b["prefix_lens"])


class _Recorder(L.LightningModule):
    """Records the input ids of every training batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["input_ids"].clone())
        return (self.w * batch["input_ids"].float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.filterwarnings("ignore:.*(ckpt_path|validation_step|__len__|LeafSpec).*")
@pytest.mark.parametrize("num_workers", [0, 2])
def test_trainer_checkpoint_resumes_mid_epoch(dataset, tmp_path, num_workers):
    path, _ = dataset
    per_epoch = len(TextDataModule(str(path), tokens_per_batch=BUDGET).train_dataloader())
    stop, steps = 3, per_epoch + 4

    def trainer(n: int, **kw) -> L.Trainer:
        return L.Trainer(max_steps=n, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path, **kw)

    def dm() -> TextDataModule:
        return TextDataModule(str(path), tokens_per_batch=BUDGET, seed=2, num_workers=num_workers)

    full = _Recorder()
    trainer(steps, enable_checkpointing=False).fit(full, datamodule=dm())
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, every_n_train_steps=stop)
    trainer(stop, callbacks=[ckpt]).fit(_Recorder(), datamodule=dm())
    resumed = _Recorder()
    last = str(tmp_path / "ck" / "last.ckpt")
    trainer(steps, enable_checkpointing=False).fit(resumed, datamodule=dm(), ckpt_path=last)
    assert len(full.seen) == steps and len(resumed.seen) == steps - stop  # resumes mid-epoch, crosses into epoch 2
    assert all(torch.equal(a, b) for a, b in zip(full.seen[stop:], resumed.seen))


class _ValRecorder(_Recorder):
    """Also records the samples of every validation batch."""

    def __init__(self) -> None:
        super().__init__()
        self.val: list[tuple[int, ...]] = []

    def validation_step(self, batch, batch_idx):
        self.val += [tuple(int(x) for x in d) for d, _ in _docs(batch)]


@pytest.mark.filterwarnings("ignore:.*(__len__|LeafSpec).*")
def test_trainer_validates_every_val_sample_each_epoch(dataset, tmp_path):
    path, _ = dataset
    model = _ValRecorder()
    L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False, num_sanity_val_steps=1, default_root_dir=tmp_path).fit(
        model, datamodule=TextDataModule(str(path), tokens_per_batch=BUDGET))
    stored = Counter(ids for ids, _ in _stored(path, "val"))
    first = len(_docs(next(iter(TextDataModule(str(path), tokens_per_batch=BUDGET).val_dataloader()))))
    sanity = Counter(model.val[:first])
    assert Counter(model.val) - sanity == Counter({k: 2 * v for k, v in stored.items()})  # two full val epochs


# ------------------------------------------------------------------------------------------------ multipack


class _Trainer:
    """What the data module reads of a Trainer to find its rank."""

    def __init__(self, world_size: int, global_rank: int) -> None:
        self.world_size, self.global_rank = world_size, global_rank


def _loader(path, world: int = 1, rank: int = 0, seed: int = 5) -> MultipackTextLoader:
    dm = TextDataModule(str(path), tokens_per_batch=BUDGET, seed=seed, packing="multipack")
    dm.trainer = _Trainer(world, rank)
    loader = dm.train_dataloader()
    assert isinstance(loader, MultipackTextLoader)
    return loader


def test_builds_write_the_sample_lengths(dataset):
    path, meta = dataset
    for split in ("train", "val"):
        lengths = np.load(path / split / LENGTHS_FILE)
        assert lengths.dtype == np.int32
        assert lengths.tolist() == [len(ids) for ids, _ in _stored(path, split)]
        assert int(lengths.sum()) == meta.splits[split].tokens


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_take_disjoint_balanced_bins_of_one_global_stream(dataset, world):
    path, meta = dataset
    stored = [ids for ids, _ in _stored(path, "train")]
    loaders = [_loader(path, world, r) for r in range(world)]
    assert {len(x) for x in loaders} == {meta.splits["train"].tokens // world // BUDGET}
    steps = 3 * len(loaders[0])  # three Lightning epochs: crosses data-epoch boundaries
    per_rank = [_take(x, steps) for x in loaders]
    lengths = read_sample_lengths(path, "train", meta)
    order = np.random.default_rng([5, 0]).permutation(lengths.size)
    plan = plan_multipack(lengths[order].tolist(), world, BUDGET)
    counts: Counter = Counter()
    for step in range(steps):
        docs = [[tuple(int(x) for x in d) for d, _ in _docs(per_rank[r][step])] for r in range(world)]
        for r in range(world):
            check_contract(per_rank[r][step], _docs(per_rank[r][step]), BUDGET)
        flat = [d for rank_docs in docs for d in rank_docs]
        assert len(set(flat)) == len(flat)  # a step's bins are disjoint
        loads = [sum(map(len, rank_docs)) for rank_docs in docs]
        assert max(loads) <= BUDGET and all(loads)
        assert max(loads) - min(loads) <= max(map(len, flat))  # LPT: within one sample of each other
        if step < len(plan):  # the first data epoch follows the reference plan exactly
            assert docs == [[stored[order[i]] for i in bin_] for bin_ in plan[step]]
        counts.update(flat)
    # a sample is drawn at most once per data epoch; an epoch drops only its last, short window
    assert 1 <= loaders[0].epoch and max(counts.values()) <= loaders[0].epoch + 1
    planned = sum(int(lengths[order[i]]) for step in plan for bin_ in step for i in bin_)
    assert lengths.sum() - planned < world * BUDGET + lengths.max()


def test_one_rank_is_the_longest_prefix_that_fits(dataset):
    path, meta = dataset
    lengths = read_sample_lengths(path, "train", meta)
    loader = _loader(path)
    order = loader.order()
    pos = 0
    for batch in _take(loader, 4):
        n = batch["num_samples"]
        assert sum(lengths[order[pos:pos + n]]) <= BUDGET < sum(lengths[order[pos:pos + n + 1]])
        got = sorted(len(d) for d, _ in _docs(batch))
        assert got == sorted(lengths[order[pos:pos + n]].tolist())
        pos += n
    assert lpt_assign([3, 1, 2], 1)[0] == [[0, 2, 1]]  # one bin: longest first


def test_state_resumes_exactly_across_epochs(dataset):
    path, _ = dataset
    reference = _take(_loader(path, 2, 1), 3 * len(_loader(path, 2, 1)) + 2)
    for stop in (2, len(_loader(path, 2, 1)) + 1):
        first = _loader(path, 2, 1)
        _take(first, stop)
        state = json.loads(json.dumps(first.state_dict()))
        resumed = _loader(path, 2, 1)
        resumed.load_state_dict(state)
        rest = _take(resumed, len(reference) - stop)
        assert all(torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
                   for a, b in zip(reference[stop:], rest))
    with pytest.raises(ValueError, match="'num_ranks' is 2 but this run has 3"):
        _loader(path, 3, 0).load_state_dict(state)
    with pytest.raises(ValueError, match="another packing mode"):
        _loader(path).load_state_dict(TextDataModule(str(path), tokens_per_batch=BUDGET).train_dataloader()
                                      .state_dict())


@pytest.mark.filterwarnings("ignore:.*(ckpt_path|validation_step|__len__|LeafSpec).*")
def test_trainer_checkpoint_resumes_multipack(dataset, tmp_path):
    path, _ = dataset

    def dm() -> TextDataModule:
        return TextDataModule(str(path), tokens_per_batch=BUDGET, seed=2, packing="multipack")

    def trainer(n: int, **kw) -> L.Trainer:
        return L.Trainer(max_steps=n, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path, **kw)

    steps, stop = len(_loader(path)) + 3, 4
    full = _Recorder()
    trainer(steps, enable_checkpointing=False).fit(full, datamodule=dm())
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, every_n_train_steps=stop)
    trainer(stop, callbacks=[ckpt]).fit(_Recorder(), datamodule=dm())
    resumed = _Recorder()
    trainer(steps, enable_checkpointing=False).fit(resumed, datamodule=dm(), ckpt_path=str(tmp_path / "ck/last.ckpt"))
    assert len(resumed.seen) == steps - stop
    assert all(torch.equal(a, b) for a, b in zip(full.seen[stop:], resumed.seen))


def test_lengths_file_is_checked_and_optional(dataset, tmp_path):
    path, meta = dataset
    copy = tmp_path / "ds"
    shutil.copytree(path, copy)
    lengths_file = copy / "train" / LENGTHS_FILE
    expected = read_sample_lengths(path, "train", meta)
    lengths_file.unlink()  # datasets built before the file existed: scanned once
    assert read_sample_lengths(copy, "train", read_text_metadata(copy)).tolist() == expected.tolist()
    np.save(lengths_file, expected[:-1].astype(np.int32))
    with pytest.raises(TextFormatError, match=r"expected 108 integer sample lengths \(metadata splits.train.samples"):
        read_sample_lengths(copy, "train", read_text_metadata(copy))
    np.save(lengths_file, (expected + 1).astype(np.int32))
    with pytest.raises(TextFormatError, match="lengths sum to"):
        read_sample_lengths(copy, "train", read_text_metadata(copy))
    lengths_file.write_bytes(b"not numpy")
    with pytest.raises(TextFormatError, match="not a readable .npy"):
        read_sample_lengths(copy, "train", read_text_metadata(copy))
    with pytest.raises(ValueError, match="packing must be 'stream' or 'multipack'"):
        TextDataModule(str(path), packing="random")
    with pytest.raises(ValueError, match="not enough for one multipack step"):
        _loader(path, world=40)


def test_two_ddp_processes_take_their_own_multipack_bins(dataset, tmp_path):
    """Under a real 2-process DDP run each rank packs exactly its bin of the shared plan (world size and rank come
    from the Trainer; LitData's random access reads the same samples on every rank)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    path, _ = dataset
    steps = len(_loader(path, 2, 0)) + 2  # crosses a Lightning epoch
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "_dist_multipack.py"), str(path),
                           str(tmp_path), str(steps)], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    from litdata import StreamingDataset

    from hrmkit.data.text.format import text_split_dir

    meta = read_text_metadata(path)
    lengths = read_sample_lengths(path, "train", meta)
    seen = [json.loads((tmp_path / f"seen-rank{rank}.json").read_text()) for rank in (0, 1)]
    for rank in (0, 1):  # the plan built here, independently of the data module's rank lookup
        ds = StreamingDataset(str(text_split_dir(path, "train")), shuffle=False, drop_last=False)
        loader = MultipackTextLoader(ds, lengths, BUDGET, meta.pad_id, 2, rank, 5, steps)
        assert seen[rank] == [[d.tolist() for d, _ in _docs(b)] for b in loader], rank
    for a, b in zip(*seen):
        assert not {tuple(d) for d in a} & {tuple(d) for d in b}  # the ranks' batches of a step are disjoint

"""hrmkit.eval.text: boxed extraction, judging, and evaluate_text on a tiny model with tiny JSONL."""

import json
from pathlib import Path

import pytest
import torch

import hrmkit.generate
from hrmkit.cores import build_core
from hrmkit.data.text import load_tokenizer
from hrmkit.eval.text import evaluate_text, extract_answer, judge_math, last_boxed, numeric_match, read_records
from hrmkit.tasks.text import TextTask


@pytest.mark.parametrize("text, expected", [
    ("so \\boxed{42}.", "42"),
    ("\\boxed{\\frac{1}{2}} then", "\\frac{1}{2}"),                       # nested braces
    ("first \\boxed{1}, then \\boxed{2}", "2"),                           # several boxes: the last one
    ("\\boxed{a{b{c}}d} and \\fbox{7}", "7"),                              # \fbox counts too
    ("no box here", None),
    ("unclosed \\boxed{12", None),                                         # an incomplete box is no box
    ("\\boxed{3} and an unclosed \\boxed{4", "3"),
    ("\\boxed {x^{2}}", "x^{2}"),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_extract_answer_falls_back_to_the_whole_text():
    assert extract_answer("  The answer is 5 ") == "The answer is 5"
    assert extract_answer("x \\boxed{ 5 } y") == "5"


def test_numeric_and_math_judging():
    assert numeric_match("1,090", "1090") and numeric_match("8", "8.0") and numeric_match("$12", "12")
    assert not numeric_match("8", "9") and not numeric_match("8", "eight")
    assert judge_math("25", "25.0") and not judge_math("25", "26")
    try:
        import math_verify  # noqa: F401
    except ImportError:
        return
    assert judge_math("\\frac{1}{2}", "0.5") and judge_math("2\\sqrt{2}", "\\sqrt{8}")


def _write(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_read_records_formats(tmp_path):
    data = _write(tmp_path / "a.jsonl", [
        {"instruction": "q1", "response": "work \\boxed{3}"},
        {"instruction": "q2", "response": "x", "answer": "4", "condition": "cot"},
        {"question": "q3", "answer": "steps\n#### 5"},
    ])
    recs = read_records(data, "math")
    assert [r["gold"] for r in recs] == ["3", "4", "5"] and recs[1]["condition"] == "cot"
    assert len(read_records(data, "math", limit=2)) == 2
    mc = _write(tmp_path / "mc.jsonl", [{"question": "Sky?", "choices": ["red", "blue"], "answer": "b"},
                                        {"question": "Q\nA. x\nB. y\nC. z\nAnswer:", "answer": "C"}])
    a, b = read_records(mc, "mc")
    assert a["prompt"].endswith("A. red\nB. blue\nAnswer:") and a["gold"] == "B" and a["num_choices"] == 2
    assert b["num_choices"] == 3
    bad = _write(tmp_path / "bad.jsonl", [{"question": "Q", "choices": ["x", "y"], "answer": "D"}])
    with pytest.raises(ValueError, match="not one of the 2 choice letters"):
        read_records(bad, "mc")
    with pytest.raises(ValueError, match="needs 'instruction'"):
        read_records(_write(tmp_path / "c.jsonl", [{"prompt": "x"}]), "math")


@pytest.fixture(scope="module")
def tiny_model() -> TextTask:
    torch.manual_seed(0)
    return TextTask(build_core("hrm", "text-tiny"), vocab_size=50432, pad_id=50257)


def test_math_end_to_end_with_a_tiny_model(tiny_model, tmp_path):
    data = _write(tmp_path / "m.jsonl", [{"question": f"What is {a}+1?", "answer": str(a + 1)} for a in range(3)])
    res = evaluate_text(tiny_model, data, "math", "gpt2", max_new_tokens=4, out_dir=str(tmp_path / "out"))
    assert res["n"] == 3 and 0.0 <= res["accuracy"] <= 1.0 and res["kind"] == "math"
    rows = [json.loads(line) for line in (tmp_path / "out/predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and json.loads((tmp_path / "out/summary.json").read_text()) == res
    assert tiny_model.training, "the model's mode is restored"


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_math_scoring_with_fixed_generations(tiny_model, tmp_path, monkeypatch, batch_size):
    tok = load_tokenizer("gpt2")
    outputs = {"What is 1+1?": "1 + 1 = 2. \\boxed{2}", "What is 2+2?": "so \\boxed{5}", "Half?": "\\boxed{0.5}",
               "Nothing?": "7"}

    def fake_generate(task, prompts, max_new_tokens, stop_ids=(), **kwargs):
        return [tok.encode(outputs[tok.decode(p[1:-1])]) + [tok.eoa_id] for p in prompts]

    monkeypatch.setattr(hrmkit.generate, "generate", fake_generate)
    data = _write(tmp_path / "m.jsonl", [{"instruction": "What is 1+1?", "response": "\\boxed{2}"},
                                         {"instruction": "What is 2+2?", "response": "\\boxed{4}"},
                                         {"instruction": "Half?", "response": "\\boxed{\\frac{1}{2}}"},
                                         {"instruction": "Nothing?", "response": "#### 7"}])
    res = evaluate_text(tiny_model, data, "math", "gpt2", out_dir=str(tmp_path / "o"), batch_size=batch_size)
    rows = [json.loads(line) for line in (tmp_path / "o/predictions.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in rows] == ["2", "5", "0.5", "7"], "outputs stay in record order"
    expected = 3 if res["judge"] == "math-verify" else 2  # 1/2 == 0.5 needs math-verify
    assert res["accuracy"] == expected / 4 and res["boxed_rate"] == 3 / 4 and res["stop_rate"] == 1.0


def test_mc_scoring_rule(tiny_model, tmp_path, monkeypatch):
    """Greedy letter right: 1; wrong letter: 0; not a letter: 1/num_choices (the reference's rule)."""
    tok = load_tokenizer("gpt2")
    picks = iter([tok.encode("B")[0], tok.encode(" A")[0], tok.encode(" the")[0]])

    def fake_logits(task, ids, attn, *args, **kwargs):
        logits = torch.zeros(1, ids.shape[1], 50432)
        pick = next(picks)
        logits[0, -1, pick] = 10.0
        logits[0, -1, tok.encode("C")[0]] = 5.0  # the best letter when the greedy token is not one
        return logits

    monkeypatch.setattr(hrmkit.generate, "next_token_logits", fake_logits)
    data = _write(tmp_path / "mc.jsonl", [{"question": "q1", "choices": ["a", "b", "c", "d"], "answer": "B"},
                                          {"question": "q2", "choices": ["a", "b", "c", "d"], "answer": "B"},
                                          {"question": "q3", "choices": ["a", "b", "c", "d"], "answer": "C"}])
    res = evaluate_text(tiny_model, data, "mc", "gpt2")
    assert res["accuracy"] == pytest.approx((1 + 0 + 0.25) / 3)
    assert res["valid_rate"] == pytest.approx(2 / 3) and res["letter_accuracy"] == pytest.approx(2 / 3)


def test_mc_end_to_end_with_a_tiny_model(tiny_model, tmp_path):
    data = _write(tmp_path / "mc.jsonl", [{"question": "Which?", "choices": ["x", "y", "z", "w"], "answer": "A"}])
    res = evaluate_text(tiny_model, data, "mc", "gpt2")
    assert res["n"] == 1 and 0.0 <= res["accuracy"] <= 1.0 and 0.0 <= res["letter_accuracy"] <= 1.0


def test_bad_arguments(tiny_model, tmp_path):
    data = _write(tmp_path / "m.jsonl", [{"question": "q", "answer": "1"}])
    with pytest.raises(ValueError, match="kind"):
        evaluate_text(tiny_model, data, "essay", "gpt2")
    with pytest.raises(FileNotFoundError):
        evaluate_text(tiny_model, str(tmp_path / "missing.jsonl"), "math", "gpt2")

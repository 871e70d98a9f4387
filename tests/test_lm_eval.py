"""lm-evaluation-harness adapter: PrefixLM scoring equals the training batch's, two local YAML tasks run offline."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")

from hrmkit.cores import build_core  # noqa: E402
from hrmkit.data.text.packing import pack_batch  # noqa: E402
from hrmkit.data.text.tokenizer import train_bpe  # noqa: E402
from hrmkit.eval.lm_harness import HrmkitLM, cut_at_stops  # noqa: E402
from hrmkit.eval.prefix_scoring import ScoreItem, score_items  # noqa: E402
from hrmkit.generate import generate  # noqa: E402
from hrmkit.tasks.text import TextTask  # noqa: E402
from hrmkit.transfer import save_task_checkpoint  # noqa: E402

CORPUS = ("Question: What is two plus three? Answer: five. The sky is blue and the grass is green. "
          "Which planet is red? Mars is the red planet. Water boils at one hundred degrees.\n") * 4
ARC = [
    {"id": "q1", "question": "Which planet is red?", "choices": {"text": ["Mars", "Venus", "Earth"],
                                                                 "label": ["A", "B", "C"]}, "answerKey": "A"},
    {"id": "q2", "question": "What colour is the sky?", "choices": {"text": ["green", "blue", "red", "grey"],
                                                                    "label": ["A", "B", "C", "D"]}, "answerKey": "B"},
    {"id": "q3", "question": "Water boils at?", "choices": {"text": ["ten degrees", "one hundred degrees"],
                                                            "label": ["1", "2"]}, "answerKey": "2"},
]
GSM = [{"question": "What is two plus three?", "answer": "2 + 3 = 5\n#### 5"},
       {"question": "Tom has 4 apples and eats one. How many are left?", "answer": "4 - 1 = 3\n#### 3"},
       {"question": "What is 10 times 2?", "answer": "10 * 2 = 20\n#### 20"}]
GSM_YAML = Path(__file__).resolve().parents[1] / "recipes/lm-eval/hrm_gsm8k.yaml"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A locally trained BPE, a tiny random HRM text model saved as a checkpoint, and two YAML tasks on JSONL."""
    root = tmp_path_factory.mktemp("lm_eval")
    (root / "corpus.txt").write_text(CORPUS)
    tok = train_bpe([root / "corpus.txt"], vocab_size=360, min_frequency=1)
    tok.save(root / "tokenizer.json")
    torch.manual_seed(0)
    core = build_core("hrm", "text-tiny", hidden_size=32, num_heads=2, expansion=2.0, H_cycles=2, L_cycles=2,
                      H_layers=1, L_layers=1, max_seq_len=160)
    task = TextTask(core, vocab_size=tok.padded_vocab_size, pad_id=tok.pad_id, warmup_steps=0).eval()
    ckpt = save_task_checkpoint(task, root / "tiny.ckpt")
    tasks = root / "tasks"
    tasks.mkdir()
    for name, rows in (("arc", ARC), ("gsm", GSM)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = lambda name: (f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {root / name}.jsonl\n"  # noqa: E731
                         f"  cache_dir: {root / 'hf_cache'}\ntest_split: test\nfewshot_split: test\n")
    (tasks / "tiny_arc.yaml").write_text(
        "task: hrmkit_tiny_arc\n" + data("arc") +
        "output_type: multiple_choice\n"
        "doc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
        "doc_to_choice: \"{{choices.text}}\"\n"
        "doc_to_target: \"{{choices.label.index(answerKey)}}\"\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    # the shipped paper-protocol GSM8K task (boxed answer filter), pointed at local JSONL with a small budget
    (tasks / "tiny_gsm.yaml").write_text(
        f"include: {GSM_YAML}\ntask: hrmkit_tiny_gsm\n" + data("gsm") + "num_fewshot: 0\n"
        "generation_kwargs:\n  until: [\"Question:\"]\n  max_gen_toks: 6\n  do_sample: false\n")
    return {"root": root, "tok": tok, "task": task, "ckpt": ckpt, "tasks": tasks}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")


def _packed_loglikelihoods(task: TextTask, samples: list[tuple[list[int], int]]) -> list[float]:
    """hrmkit's own scoring: the training data path (pack_batch) and the TextTask forward under its attn spec."""
    batch = pack_batch([(torch.tensor(ids).numpy(), p) for ids, p in samples], sum(len(s) for s, _ in samples) + 3,
                       task.hparams.pad_id)
    with torch.no_grad():
        logits = task(batch["input_ids"], task.attn_spec(batch)).float()[0]
    labels = batch["labels"][0]
    logp = torch.log_softmax(logits, -1).gather(1, labels.clamp_min(0)[:, None])[:, 0]
    doc = TextTask.document_ids(batch["cu_seqlens"], labels.numel())
    return [float(logp[(doc == d) & (labels != -100)].double().sum()) for d in range(len(samples))]


def test_loglikelihood_equals_the_training_batch_scoring_batched_or_not(env):
    lm = HrmkitLM(env["task"], tokenizer=env["tok"], batch_size=1, device="cpu")
    pairs = [("Question: Which planet is red?\nAnswer:", " Mars"),
             ("Question: Which planet is red?\nAnswer: ", "Venus"),
             ("The sky is", " blue and the grass is green."), ("", "Water boils")]
    items = lm.loglikelihood_items(pairs)
    # the envelope and PrefixLM layout: <|im_start|> <direct> context <|im_end|> | continuation
    first = items[0]
    assert first.tokens[:2] == (env["tok"].boq_id, env["tok"].condition_ids["direct"])
    assert first.tokens[first.prefix_len - 1] == env["tok"].eoq_id and first.score_from == first.prefix_len
    assert list(first.tokens[first.prefix_len:]) == env["tok"].encode(" Mars")
    assert items[1].tokens == lm.loglikelihood_items([(pairs[1][0].rstrip(), " Venus")])[0].tokens  # spaces move
    reference = _packed_loglikelihoods(env["task"], [(list(it.tokens), it.prefix_len) for it in items])
    one = [s.logprob for s in score_items(env["task"], items, batch_size=1)]
    many = [s.logprob for s in score_items(env["task"], items, batch_size=4)]
    assert one == pytest.approx(reference, rel=1e-5, abs=1e-4)
    assert many == pytest.approx(one, rel=1e-5, abs=1e-4)
    assert all(v < 0 for v in one)


def test_raw_text_and_causal_models_score_like_their_training_batch(env):
    """Without the envelope the raw context is the prefix; a model trained ``attention: causal`` is scored causally
    (both equal to the packed batch under the task's own attention spec)."""
    tok = env["tok"]
    pairs = [("The sky is", " blue"), ("", "Water boils at one hundred"), ("Mars is the red", " planet.")]
    raw = HrmkitLM(env["task"], tokenizer=tok, device="cpu", envelope=False).loglikelihood_items(pairs)
    assert raw[0].tokens[: raw[0].prefix_len] == tuple(tok.encode("The sky is"))
    assert raw[1].tokens[:1] == (tok.boq_id,) and raw[1].prefix_len == 1  # an empty context: <|im_start|> alone
    ref = _packed_loglikelihoods(env["task"], [(list(it.tokens), it.prefix_len) for it in raw])
    assert [s.logprob for s in score_items(env["task"], raw, batch_size=3)] == pytest.approx(ref, rel=1e-5, abs=1e-4)
    causal = TextTask(env["task"].core, vocab_size=tok.padded_vocab_size, pad_id=tok.pad_id, attention="causal")
    causal.load_state_dict(env["task"].state_dict())
    causal.eval()
    items = HrmkitLM(causal, tokenizer=tok, device="cpu").loglikelihood_items(pairs)
    ref = _packed_loglikelihoods(causal, [(list(it.tokens), it.prefix_len) for it in items])
    got = [s.logprob for s in score_items(causal, items, batch_size=2)]
    assert got == pytest.approx(ref, rel=1e-5, abs=1e-4)
    prefixlm = [s.logprob for s in score_items(env["task"], items, batch_size=2)]
    assert got != pytest.approx(prefixlm, rel=1e-3)  # the mask matters: same weights, other scores


def test_prefix_tokens_are_bidirectional_and_the_continuation_causal(env):
    """Changing a later context token changes the first continuation score (bidirectional prefix); appending
    continuation tokens never changes earlier ones' scores (causal response)."""
    tok, task = env["tok"], env["task"]
    base = tok.encode("Question: Which planet is red?")
    cont = tok.encode(" Mars is the red planet")
    a = score_items(task, [ScoreItem(tuple(base + cont), len(base), len(base))])[0]
    b = score_items(task, [ScoreItem(tuple(base + cont[:2]), len(base), len(base))])[0]
    assert a.token_logprobs[:2] == pytest.approx(b.token_logprobs, abs=1e-5)
    with pytest.raises(ValueError, match="visible to its own prediction"):
        ScoreItem((1, 2, 3), prefix_len=3, score_from=2)


def test_rolling_windows_score_every_token_once(env):
    lm = HrmkitLM(env["task"], tokenizer=env["tok"], batch_size=2, device="cpu", max_length=12)
    text = "The sky is blue and the grass is green. Mars is the red planet."
    ids = env["tok"].encode(text)
    items = lm.rolling_items(text)
    assert len(items) > 1 and all(len(it.tokens) - 1 <= 12 for it in items)
    scored = [t for it in items for t in it.tokens[it.score_from:]]
    assert scored == ids
    whole = HrmkitLM(env["task"], tokenizer=env["tok"], device="cpu").rolling_items(text)
    assert len(whole) == 1 and list(whole[0].tokens[whole[0].score_from:]) == ids
    head = [env["tok"].boq_id, env["tok"].condition_ids["direct"], env["tok"].eoq_id]
    assert list(whole[0].tokens[:3]) == head  # the text is the response to an empty instruction


def _boxed_pattern() -> str:
    import yaml

    (flt,) = yaml.safe_load(GSM_YAML.read_text())["filter_list"]
    return flt["filter"][0]["regex_pattern"]


def test_the_shipped_gsm8k_filter_takes_the_last_box():
    found = re.findall(_boxed_pattern(), "first \\boxed{2}, then \\fbox{1,234} and \\boxed {7}.")
    assert found == ["2", "1,234", "7"]


def test_cut_at_stops():
    assert cut_at_stops("a b\n\nQuestion: c", ["Question:", "\n\n"]) == "a b"
    assert cut_at_stops("abc", []) == "abc"


def test_bad_arguments_are_named(env):
    from hrmkit.errors import HrmkitInputError

    with pytest.raises(HrmkitInputError, match="unknown arguments \\['temprature'\\]"):
        HrmkitLM(env["task"], tokenizer=env["tok"], temprature=1)
    with pytest.raises(HrmkitInputError, match="envelope must be true or false"):
        HrmkitLM(env["task"], tokenizer=env["tok"], envelope="maybe")
    with pytest.raises(HrmkitInputError, match="no tokenizer.json next to the model"):
        HrmkitLM(str(env["ckpt"]))


def test_hrmkit_eval_lm_eval_runs_both_local_tasks(env, capsys):
    """``hrmkit eval lm-eval`` on a checkpoint: MC accuracy equals the argmax of hrmkit's own scores, the generated
    answers are hrmkit.generate's, and the boxed regex filter is applied to them."""
    from hrmkit.cli import main

    out = env["root"] / "out"
    main(["eval", "lm-eval", "--model", str(env["ckpt"]), "--tokenizer", str(env["root"] / "tokenizer.json"),
          "--tasks", "[hrmkit_tiny_arc,hrmkit_tiny_gsm]", "--include_path", str(env["tasks"]), "--batch_size", "2",
          "--device", "cpu", "--out_dir", str(out), "--log_samples", "true", "--include_defaults", "false"])
    assert "hrmkit_tiny_arc" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())["results"]
    tok, task = env["tok"], env["task"]
    lm = HrmkitLM(task, tokenizer=tok, device="cpu")

    # multiple choice: acc is the mean of argmax over hrmkit's own (packed training-batch) loglikelihoods
    correct = []
    for doc in ARC:
        ctx = f"Question: {doc['question']}\nAnswer:"
        items = lm.loglikelihood_items([(ctx, " " + c) for c in doc["choices"]["text"]])
        ll = _packed_loglikelihoods(task, [(list(it.tokens), it.prefix_len) for it in items])
        correct.append(max(range(len(ll)), key=ll.__getitem__) == doc["choices"]["label"].index(doc["answerKey"]))
    assert results["hrmkit_tiny_arc"]["acc,none"] == pytest.approx(sum(correct) / len(correct))

    # generate-until: the responses are hrmkit.generate's greedy outputs of the enveloped prompt, cut at "Question:"
    samples = [json.loads(line) for line in (out / "samples_hrmkit_tiny_gsm.jsonl").read_text().splitlines()]
    assert len(samples) == len(GSM)
    for row in samples:
        prompt = tok.encode_prompt(row["doc"]["question"], "synth,cot")  # hrm_gsm8k: the question alone
        ids = generate(task, [prompt], 6, stop_ids=(tok.eoa_id,))[0]
        text = cut_at_stops(tok.decode([t for t in ids if t != tok.eoa_id]), ["Question:"])
        assert row["resps"] == [[text]]
        found = re.findall(_boxed_pattern(), text)
        assert row["filtered_resps"] == [found[-1] if found else "[invalid]"]
    em = results["hrmkit_tiny_gsm"]["exact_match,boxed"]
    assert em == sum(r["filtered_resps"][0] == r["target"] for r in samples) / len(samples)
    assert math.isfinite(results["hrmkit_tiny_arc"]["acc_norm,none"])


def test_the_model_class_is_registered_with_lm_eval():
    from lm_eval.api.registry import get_model

    assert get_model("hrmkit") is HrmkitLM


def test_lm_eval_cli_finds_the_hrmkit_model(env, capsys, monkeypatch):
    """``python -m hrmkit.eval.lm_eval_command`` is lm-eval's own CLI with ``--model hrmkit`` registered."""
    import lm_eval.tasks

    from hrmkit.eval.lm_eval_command import lm_eval_main

    class LocalTasksOnly(lm_eval.tasks.TaskManager):  # the built-in index only costs time here
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "include_defaults": False})

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", LocalTasksOnly)

    lm_eval_main(["--model", "hrmkit", "--model_args",
                  f"model={env['ckpt']},tokenizer={env['root'] / 'tokenizer.json'},score_condition=direct+cot",
                  "--tasks", "hrmkit_tiny_arc", "--include_path", str(env["tasks"]), "--device", "cpu",
                  "--batch_size", "3", "--limit", "2"])
    assert re.search(r"hrmkit_tiny_arc.*acc", capsys.readouterr().out)


def test_in_memory_model_through_simple_evaluate(env):
    import lm_eval
    from lm_eval.tasks import TaskManager

    lm = HrmkitLM(env["task"], tokenizer=env["tok"], batch_size=3, device="cpu", envelope=False)
    res = lm_eval.simple_evaluate(model=lm, tasks=["hrmkit_tiny_arc"], task_manager=TaskManager(
        include_path=str(env["tasks"]), include_defaults=False), limit=2)
    assert 0.0 <= res["results"]["hrmkit_tiny_arc"]["acc,none"] <= 1.0


def test_unknown_tasks_are_named(env):
    from hrmkit.errors import HrmkitInputError
    from hrmkit.eval.lm_eval_command import evaluate_lm_eval

    with pytest.raises(HrmkitInputError, match=r"unknown task\(s\) \['nope'\]"):
        evaluate_lm_eval(str(env["ckpt"]), "hrmkit_tiny_arc, nope", tokenizer=str(env["root"] / "tokenizer.json"),
                         include_path=str(env["tasks"]), include_defaults=False, device="cpu")
    with pytest.raises(FileNotFoundError, match="no such folder of task YAML files"):
        evaluate_lm_eval(str(env["ckpt"]), ["x"], include_path=str(env["root"] / "missing"))


def test_an_hf_directory_with_its_tokenizer_scores_like_the_checkpoint(env):
    from hrmkit.interop.hf_hrm_text import export_hf

    hf = export_hf(env["task"], env["root"] / "hf", dtype="float32", overwrite=True)
    env["tok"].save(Path(hf) / "tokenizer.json")
    pairs = [("Question: Which planet is red?\nAnswer:", " Mars"), ("The sky is", " blue")]
    from_hf = HrmkitLM(str(hf), device="cpu")  # the directory's own tokenizer.json
    from_ckpt = HrmkitLM(str(env["ckpt"]), tokenizer=env["tok"], device="cpu")
    a = [s.logprob for s in score_items(from_hf.task, from_hf.loglikelihood_items(pairs))]
    b = [s.logprob for s in score_items(from_ckpt.task, from_ckpt.loglikelihood_items(pairs))]
    assert a == pytest.approx(b, rel=1e-5, abs=1e-4)

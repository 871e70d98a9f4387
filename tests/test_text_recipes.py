"""The text recipes carry the paper's hyper-parameters, and their CPU derivations (recipes/tiny/, one process here)
survive a RoPE table shorter than the token budget (issue #13 item 1). Every recipe's full run: test_recipe_runs.py."""

import json
from pathlib import Path

import pytest

from hrmkit.cli import main
from hrmkit.data.text import build_text
from hrmkit.data.text.format import read_text_metadata

ROOT = Path(__file__).resolve().parents[1]


def test_paper_hyper_parameters_are_in_the_recipes():
    """Spot checks against specs/hrm-text.md §5.3 (values as YAML text, so no model is built)."""
    import yaml

    def load(name: str) -> dict:
        return yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())

    xl, big, sft = load("text-hrm-XL-16xH100"), load("text-hrm-L-8xH100"), load("sft-hrm-XL")
    for cfg, lr, tokens in ((xl, 2.2e-4, 196_608), (big, 2.5e-4, 172_032)):
        model, trainer = cfg["model"]["init_args"], cfg["trainer"]
        assert float(model["lr"]) == lr and model["betas"] == [0.9, 0.95] and model["weight_decay"] == 0.1
        assert model["warmup_steps"] == 2000 and model["schedule"] == "constant" and trainer["max_epochs"] == 4
        assert cfg["data"]["init_args"]["tokens_per_batch"] * trainer["devices"] * trainer["num_nodes"] == tokens
        callbacks = {c["class_path"].rsplit(".", 1)[-1]: c["init_args"] for c in trainer["callbacks"]}
        assert callbacks["EMA"]["decay"] == 0.9999 and callbacks["DeepCreditWarmup"]["warmup_ratio"] == 0.2
        assert callbacks["EMA"]["warmup"] is False  # the reference's closed form, for reproduction
    callbacks = {c["class_path"].rsplit(".", 1)[-1]: c["init_args"] for c in sft["trainer"]["callbacks"]}
    assert callbacks["DeepCreditWarmup"]["warmup_ratio"] == 0.0
    assert load("text-trm-0.6B")["model"]["init_args"]["core"]["init_args"]["shared"] is True


ONE_PROCESS = ["--trainer.devices", "1", "--trainer.strategy", "auto", "--trainer.precision", "32",
               "--data.init_args.num_workers", "0", "--trainer.enable_model_summary", "false",
               "--trainer.logger", "false", "--trainer.limit_val_batches", "2"]  # in-process, one process


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-text")
    records = [{"instruction": f"What is {a} plus {b}?", "response": f"{a} + {b} = {a + b}. \\boxed{{{a + b}}}",
                "condition": "cot"} for a in range(6) for b in range(6)]
    src = root / "tiny.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    build_text(str(root / "data"), [str(src)], tokenizer="gpt2", val_fraction=0.2, max_len=64)
    return root / "data"


@pytest.mark.parametrize("recipe", ["text-hrm-B", "text-hrm-XL-16xH100"])  # stream and multipack packing
def test_padding_tail_positions_stay_inside_a_short_rope_table(recipe, tiny_text, tmp_path, monkeypatch):
    """Issue #13 item 1: with max_seq_len below tokens_per_batch (every shipped text recipe) the padding tail of a
    packed row used to count positions up to tokens_per_batch - 1, past the RoPE table, at the first validation."""
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", str(ROOT / "recipes/tiny" / f"{recipe}.yaml"), "--data.init_args.data_dir", str(tiny_text),
          "--model.init_args.core.init_args.max_seq_len", "64", "--data.init_args.tokens_per_batch", "256"]
         + ONE_PROCESS)
    assert list(tmp_path.rglob("*.ckpt")), "the run should leave a checkpoint"


def test_a_document_longer_than_the_core_max_seq_len_is_refused_before_training(tiny_text, tmp_path, monkeypatch,
                                                                                  capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(ROOT / "recipes/tiny/text-hrm-B.yaml"), "--data.init_args.data_dir", str(tiny_text),
              "--model.init_args.core.init_args.max_seq_len", "8"] + ONE_PROCESS)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    longest = max(s.max_sample_len for s in read_text_metadata(tiny_text).splits.values())
    assert "hrmkit: error:" in err and "max_seq_len" in err and " 8" in err and str(longest) in err, err
    assert not list(tmp_path.rglob("*.ckpt")), "nothing may train"

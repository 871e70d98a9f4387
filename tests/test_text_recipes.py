"""Every text recipe parses (--print_config) and every tiny CPU twin trains a few steps on a tiny text dataset."""

import json
from pathlib import Path

import pytest

from hrmkit.cli import main
from hrmkit.data.text import build_text
from hrmkit.data.text.format import read_text_metadata

ROOT = Path(__file__).resolve().parents[1]
TEXT_NAMES = {"text-hrm-B", "text-hrm-L-8xH100", "text-hrm-XL-16xH100", "sft-hrm-XL", "text-transformer-1B",
              "text-ut-1B", "text-rins-1B", "text-trm-0.6B"}
FULL = sorted(p for p in (ROOT / "recipes").glob("*.yaml") if p.name.startswith(("text-", "sft-")))
TINY = sorted(p for p in (ROOT / "recipes/tiny").glob("*.yaml") if p.name.startswith(("text-", "sft-")))


def test_the_text_recipes_are_all_there():
    assert {p.stem for p in FULL} == TEXT_NAMES | {"text-gsm-symbolic-cpu"}
    assert {p.stem for p in TINY} == TEXT_NAMES


@pytest.mark.parametrize("recipe", FULL, ids=lambda p: p.stem)
def test_full_text_recipe_prints_its_config(recipe, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(recipe), "--print_config"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "hrmkit.tasks.TextTask" in out and "hrmkit.data.text.TextDataModule" in out


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


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-text")
    records = [{"instruction": f"What is {a} plus {b}?", "response": f"{a} + {b} = {a + b}. \\boxed{{{a + b}}}",
                "condition": "cot"} for a in range(6) for b in range(6)]
    src = root / "tiny.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    build_text(str(root / "data"), [str(src)], tokenizer="gpt2", val_fraction=0.2, max_len=256)
    return root / "data"


@pytest.mark.parametrize("recipe", TINY, ids=lambda p: p.stem)
def test_tiny_text_twin_trains(recipe, tiny_text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "init_from:" in recipe.read_text():  # SFT: first a pretraining run, whose checkpoint init_from then loads
        main(["fit", "-c", str(recipe), "--data.init_args.data_dir", str(tiny_text), "--model.init_args.init_from",
              "null", "--trainer.default_root_dir", "pretrain", "--trainer.enable_model_summary", "false"])
        (pretrained,) = (tmp_path / "pretrain").rglob("*.ckpt")
        main(["fit", "-c", str(recipe), "--data.init_args.data_dir", str(tiny_text), "--model.init_args.init_from",
              str(pretrained), "--trainer.enable_model_summary", "false"])
        assert list((tmp_path / "runs").rglob("*.ckpt")), "the SFT run should leave a checkpoint"
        return
    main(["fit", "-c", str(recipe), "--data.init_args.data_dir", str(tiny_text), "--trainer.enable_model_summary",
          "false"])
    assert list(tmp_path.rglob("*.ckpt")), "the run should leave a checkpoint"


@pytest.mark.parametrize("recipe", ["text-hrm-B", "text-hrm-XL-16xH100"])  # stream and multipack packing
def test_padding_tail_positions_stay_inside_a_short_rope_table(recipe, tiny_text, tmp_path, monkeypatch):
    """Issue #13 item 1: with max_seq_len below tokens_per_batch (every shipped text recipe) the padding tail of a
    packed row used to count positions up to tokens_per_batch - 1, past the RoPE table, at the first validation."""
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", str(ROOT / "recipes/tiny" / f"{recipe}.yaml"), "--data.init_args.data_dir", str(tiny_text),
          "--model.init_args.core.init_args.max_seq_len", "64", "--data.init_args.tokens_per_batch", "256",
          "--trainer.enable_model_summary", "false", "--trainer.logger", "false"])
    assert list(tmp_path.rglob("*.ckpt")), "the run should leave a checkpoint"


def test_a_document_longer_than_the_core_max_seq_len_is_refused_before_training(tiny_text, tmp_path, monkeypatch,
                                                                                  capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(ROOT / "recipes/tiny/text-hrm-B.yaml"), "--data.init_args.data_dir", str(tiny_text),
              "--model.init_args.core.init_args.max_seq_len", "8", "--trainer.enable_model_summary", "false",
              "--trainer.logger", "false"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    longest = max(s.max_sample_len for s in read_text_metadata(tiny_text).splits.values())
    assert "hrmkit: error:" in err and "max_seq_len" in err and " 8" in err and str(longest) in err, err
    assert not list(tmp_path.rglob("*.ckpt")), "nothing may train"

"""Text end to end through the command line: build a dataset, train a tiny TextTask, generate, export to HF."""

import json

import lightning as L
import pytest

from hrmkit.cli import main
from hrmkit.cores import build_core
from hrmkit.data.text import TextDataModule
from hrmkit.tasks.text import TextTask


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    rows = [{"instruction": f"add {a} and {b}", "response": f"{a + b}", "condition": "direct"}
            for a in range(6) for b in range(6)]
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    main(["data", "text", "--out_dir", str(root / "data"), "--jsonl", f"[{root / 'train.jsonl'}]",
          "--val_fraction", "0.2", "--max_len", "64"])
    dm = TextDataModule(str(root / "data"), tokens_per_batch=256)
    task = TextTask(build_core("hrm", "text-tiny"), vocab_size=dm.vocab_size, warmup_steps=1, lr=1e-3)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1)
    trainer.fit(task, dm)
    trainer.save_checkpoint(root / "text.ckpt")
    return root


def test_generate_from_a_checkpoint(trained, capsys):
    main(["generate", "--model", str(trained / "text.ckpt"), "--tokenizer", str(trained / "data"),
          "--prompt", "[add 2 and 3]", "--max_new_tokens", "4"])
    assert ">>> add 2 and 3" in capsys.readouterr().out


def test_export_hf_round_trip(trained, capsys):
    out = trained / "hf"
    main(["export", "hf", "--checkpoint", str(trained / "text.ckpt"), "--out_dir", str(out), "--dtype", "float32"])
    assert (out / "model.safetensors").is_file() and json.loads((out / "config.json").read_text())
    main(["generate", "--model", str(out), "--tokenizer", str(trained / "data"), "--prompt", "[add 1 and 1]",
          "--max_new_tokens", "3"])
    assert ">>> add 1 and 1" in capsys.readouterr().out


def test_export_is_self_contained_for_generate_and_transformers(trained, capsys, monkeypatch):
    """No --tokenizer anywhere: the export carries the run's tokenizer and generation config, and transformers'
    Auto classes load it offline and decode greedily exactly as hrmkit does."""
    import torch

    from hrmkit.data.text import load_tokenizer
    from hrmkit.generate import generate
    from hrmkit.loading import load

    tf = pytest.importorskip("transformers")
    if not hasattr(tf, "HrmTextForCausalLM"):
        pytest.skip(f"transformers {tf.__version__} has no hrm_text")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = trained / "hf-self"
    main(["export", "hf", "--checkpoint", str(trained / "text.ckpt"), "--out_dir", str(out), "--dtype", "float32"])
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json"):
        assert (out / name).is_file(), name
    capsys.readouterr()
    main(["generate", "--model", str(out), "--prompt", "[add 1 and 1]", "--max_new_tokens", "3"])
    assert ">>> add 1 and 1" in capsys.readouterr().out

    ours = load_tokenizer(trained / "data")
    prompt = ours.encode_prompt("add 1 and 1")
    hf_tok = tf.AutoTokenizer.from_pretrained(str(out))
    assert hf_tok.encode("add 1 and 1", add_special_tokens=False) == ours.encode("add 1 and 1")
    chat = hf_tok.apply_chat_template([{"role": "user", "content": "add 1 and 1"}], tokenize=True,
                                      add_generation_prompt=True, return_dict=False)
    assert list(chat) == prompt
    config = json.loads((out / "generation_config.json").read_text())
    assert config["eos_token_id"] == ours.eoa_id

    model = tf.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert type(model).__name__ == "HrmTextForCausalLM"
    ids = torch.tensor([prompt])
    with torch.no_grad():
        ref = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.ones_like(ids),
                             max_new_tokens=4, do_sample=False)
    task = load(str(out)).eval()
    expected = generate(task, [prompt], 4, stop_ids=(ours.eoa_id,))[0]
    assert ref[0, len(prompt):].tolist()[:len(expected)] == expected

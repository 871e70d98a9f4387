"""HF ``hrm_text`` interop: both weight layouts round-trip through hrmkit, and match transformers' own model."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hrmkit.cores import build_core
from hrmkit.generate import generate
from hrmkit.interop.hf_hrm_text import detect_layout, export_hf
from hrmkit.loading import load_hf
from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.tasks.text import TextTask

VOCAB = 48
IDS = torch.tensor([[1, 5, 9, 2, 7, 7, 30, 11, 40, 3], [1, 6, 2, 44, 12, 13, 14, 15, 16, 17]])
PREFIX = [4, 7]


def text_task(**core_kw) -> TextTask:
    torch.manual_seed(0)
    task = TextTask(build_core("hrm", "text-tiny", **core_kw), vocab_size=VOCAB, pad_id=5)
    return task.eval()


def logits(task: TextTask) -> torch.Tensor:
    with torch.no_grad():
        return task(IDS, AttnSpec("prefixlm", prefix_lens=torch.tensor(PREFIX))).float()


def token_types() -> torch.Tensor:
    tt = torch.zeros_like(IDS)
    for row, p in enumerate(PREFIX):
        tt[row, :p] = 1
    return tt


@pytest.mark.parametrize("layout", ["published", "transformers"])
@pytest.mark.parametrize("fused", [True, False])
def test_export_and_load_round_trip_fp32(tmp_path, layout, fused):
    task = text_task(fused_qkv=fused)
    out = export_hf(task, tmp_path / "ckpt", layout=layout, dtype="float32")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert detect_layout(keys) == layout
    loaded = load_hf(out, fused_qkv=not fused).eval()
    assert loaded.core.bp_steps == task.core.bp_steps and loaded.hparams.pad_id == 5
    torch.testing.assert_close(logits(loaded), logits(task), atol=0, rtol=0)


def test_published_layout_keys_config_and_bf16(tmp_path):
    task = text_task(H_layers=2, L_layers=2)
    out = export_hf(task, tmp_path / "pub", token_ids={"bos_token_id": 6, "eos_token_id": 11})
    cfg = json.loads((out / "config.json").read_text())
    d = task.core.hidden_size
    assert cfg["num_hidden_layers"] == 2 and "num_layers_per_stack" not in cfg  # per stack, as published
    assert cfg["embedding_scale"] == pytest.approx(math.sqrt(d)) and cfg["L_bp_cycles"] == [0, 3]
    assert (cfg["H_cycles"], cfg["L_cycles"], cfg["prefix_lm"], cfg["tie_word_embeddings"]) == (2, 3, True, False)
    assert (cfg["pad_token_id"], cfg["bos_token_id"], cfg["eos_token_id"]) == (5, 6, 11)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        assert f.get_slice("model.H_module.layers.1.attn.gqkv_proj.weight").get_shape() == [4 * d, d]
        assert f.get_slice("model.z_L_init").get_dtype() == "BF16"
        gqkv = f.get_tensor("model.L_module.layers.0.attn.gqkv_proj.weight")
    assert len(names) == 3 + 2 * 2 * 4
    # rows gate|q|k|v, exactly hrmkit's fused projection
    torch.testing.assert_close(gqkv.float(), task.core.L.layers[0].attn.gqkv_proj.weight.bfloat16().float())
    loaded = load_hf(out).eval()
    assert loaded.embed_tokens.weight.dtype == torch.float32
    torch.testing.assert_close(logits(loaded), logits(task), atol=0.1, rtol=0.05)
    assert loaded.hf_token_ids["eos_token_id"] == 11


def test_export_is_atomic_and_refuses_to_clobber(tmp_path):
    task = text_task()
    target = tmp_path / "ckpt"
    export_hf(task, target, dtype="float32")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_hf(task, target)
    export_hf(task, target, layout="transformers", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary leftovers
    assert json.loads((target / "config.json").read_text())["num_layers_per_stack"] == 1


def test_load_errors_name_the_problem(tmp_path):
    task = text_task()
    out = export_hf(task, tmp_path / "ok", dtype="float32")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    broken = tmp_path / "missing"
    broken.mkdir()
    (broken / "config.json").write_text((out / "config.json").read_text())
    save_file({k: v for k, v in tensors.items() if "H_module.layers.0.mlp.down" not in k},
              str(broken / "model.safetensors"))
    with pytest.raises(ValueError, match="H_module.layers.0.mlp.down_proj.weight"):
        load_hf(broken)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "config.json").write_text((out / "config.json").read_text())
    save_file({**tensors, "model.H_module.layers.1.mlp.down_proj.weight": torch.zeros(2)},
              str(extra / "model.safetensors"))
    with pytest.raises(ValueError, match="not used"):
        load_hf(extra)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf(tmp_path)
    with pytest.raises(ValueError, match="not HRM"):
        export_hf(TextTask(build_core("transformer", "tiny"), vocab_size=VOCAB), tmp_path / "nope")


# -- against transformers itself -------------------------------------------------------------------------------------
def _transformers():
    tf = pytest.importorskip("transformers")
    if not hasattr(tf, "HrmTextForCausalLM"):
        pytest.skip(f"transformers {tf.__version__} has no hrm_text (needs >= 5.9)")
    return tf


@pytest.fixture(scope="module")
def hf_model():
    tf = _transformers()
    torch.manual_seed(1)
    cfg = tf.HrmTextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=256, num_hidden_layers=2,
                           num_attention_heads=2, head_dim=16, H_cycles=2, L_cycles=3, L_bp_cycles=[0, 3],
                           max_position_embeddings=64, initializer_range=0.05, rms_norm_eps=1e-6,
                           rope_parameters={"rope_type": "default", "rope_theta": 1000.0}, pad_token_id=5)
    model = tf.HrmTextForCausalLM(cfg).eval()
    with torch.no_grad():  # HF inits z_L_init to zeros and weights at std 0.02: make every tensor matter
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (1.0 if "z_L_init" in name or "embed" in name else 0.25))
    return model


def hf_logits(model, ids=IDS, prefix=True) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, token_type_ids=token_types() if prefix else None).logits.float()


def test_transformers_save_pretrained_loads_with_equal_logits(tmp_path, hf_model):
    hf_model.save_pretrained(tmp_path / "hf")  # transformers writes the fused (published) layout
    task = load_hf(tmp_path / "hf").eval()
    assert task.embed_scale == pytest.approx(20.0)  # 1 / initializer_range, not √d
    torch.testing.assert_close(logits(task), hf_logits(hf_model), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        causal = task(IDS, AttnSpec("causal")).float()
    torch.testing.assert_close(causal, hf_logits(hf_model, prefix=False), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(causal, logits(task))  # the prefix really changes the logits


def test_transformers_split_state_dict_loads_with_equal_logits(tmp_path, hf_model):
    directory = tmp_path / "split"
    directory.mkdir()
    save_file({k: v.contiguous() for k, v in hf_model.state_dict().items()}, str(directory / "model.safetensors"))
    hf_model.config.to_json_file(str(directory / "config.json"))
    task = load_hf(directory).eval()
    torch.testing.assert_close(logits(task), hf_logits(hf_model), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["published", "transformers"])
def test_export_loads_in_transformers_with_equal_logits(tmp_path, hf_model, layout):
    tf = _transformers()
    hf_model.save_pretrained(tmp_path / "hf")
    task = load_hf(tmp_path / "hf").eval()
    export_hf(task, tmp_path / "out", layout=layout, dtype="float32")
    back, info = tf.HrmTextForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert back.config.num_layers_per_stack == 2 and back.config.L_bp_cycles == [0, 3]
    torch.testing.assert_close(hf_logits(back.eval()), hf_logits(hf_model), atol=1e-5, rtol=1e-5)


def test_greedy_generation_matches_transformers_generate(tmp_path, hf_model):
    hf_model.save_pretrained(tmp_path / "hf")
    task = load_hf(tmp_path / "hf")
    prompt = IDS[:1, :5]  # holds the pad id 5: pass the attention mask so HF does not mask it out
    with torch.no_grad():
        ref = hf_model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                token_type_ids=torch.ones_like(prompt), max_new_tokens=6, do_sample=False)
    assert generate(task, [prompt[0].tolist()], 6) == [ref[0, 5:].tolist()]


def test_padded_static_batch_matches_transformers_prompt_by_prompt(tmp_path, hf_model):
    """hrmkit's fast path (one left-padded batch, static cache) against transformers' generate on each prompt."""
    hf_model.save_pretrained(tmp_path / "hf")
    task = load_hf(tmp_path / "hf")
    prompts = [IDS[0, :7].tolist(), IDS[1, :4].tolist(), IDS[0, 2:4].tolist()]
    refs = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p])
            out = hf_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                    token_type_ids=torch.ones_like(ids), max_new_tokens=5, do_sample=False)
            refs.append(out[0, len(p):].tolist())
    assert generate(task, prompts, 5, cache="static", compile=False) == refs
    assert generate(task, prompts, 5, cache="dynamic") == refs

import pytest
import torch

from hrmkit.cores import build_core
from hrmkit.interop.hrm_checkpoint import convert_hrm_state_dict, load_hrm_checkpoint
from hrmkit.tasks.puzzle import PuzzleTask


def _batch(b=4, seq=81, vocab=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(1, vocab, (b, seq), generator=g)
    return {"inputs": inputs, "labels": torch.randint(2, vocab, (b, seq), generator=g),
            "puzzle_identifiers": torch.zeros(b, dtype=torch.long)}


def _tiny_task(halting="hrm", **kw):
    core = build_core("hrm", "tiny", max_seq_len=128)
    kw.setdefault("num_puzzle_identifiers", 1)
    return PuzzleTask(core, vocab_size=11, seq_len=81, halting=halting, halt_max_steps=4, **kw)


@pytest.mark.parametrize(
    "name,variant,prefix,total",
    [("hrm", "sudoku", 1, 27_275_266), ("trm", "sudoku", 16, 6_828_034), ("trm", "sudoku-mlp", 16, 5_028_866)],
)
def test_model_sizes_match_the_published_counts(name, variant, prefix, total):
    with torch.device("meta"):
        task = PuzzleTask(build_core(name, variant), vocab_size=11, seq_len=81, num_puzzle_identifiers=1,
                          puzzle_emb_len=prefix)
    assert sum(p.numel() for p in task.parameters()) == total  # puzzle-embedding table excluded (a buffer)
    assert task.puzzle_emb.weight.shape == (1, 512)


def test_training_carry_halts_early_when_the_head_says_so_and_eval_runs_fixed_segments():
    task = _tiny_task("trm", halt_exploration_prob=0.0)
    with torch.no_grad():
        task.q_head.bias.copy_(torch.tensor([5.0, -5.0]))  # q_halt > 0: halt after one segment
    task.train()
    task.training_step(_batch(), 0)
    assert task.carry.halted.all() and (task.carry.steps == 1).all()
    with torch.no_grad():
        task.q_head.bias.copy_(torch.tensor([-5.0, 5.0]))  # never halts by itself: runs to halt_max_steps
    task.training_step(_batch(seed=1), 0)
    data0 = task.carry.data["inputs"].clone()
    for step in range(2, 5):
        task.training_step(_batch(seed=step), 0)
        assert torch.equal(task.carry.data["inputs"], data0)  # busy slots keep their puzzle
        assert (task.carry.steps == step).all()
    assert task.carry.halted.all()  # forced at halt_max_steps = 4
    task.training_step(_batch(seed=9), 0)
    assert torch.equal(task.carry.data["inputs"], _batch(seed=9)["inputs"])  # halted slots refilled
    r = task._evaluate(_batch())
    assert (r["segments_halted"] == task.eval_segments).all()  # the head never asked to halt


def test_hrm_q_target_is_the_bootstrapped_next_segment_value():
    task = _tiny_task("hrm", halt_exploration_prob=0.0)
    task.train()
    batch = _batch()
    torch.manual_seed(0)
    task.training_step(batch, 0)
    target = task.last_act["target_q_continue"]
    # recompute: a second no-grad pass from the new carry on the same data
    with torch.no_grad():
        x = task.embed(task.carry.data["inputs"], task.carry.data["puzzle_identifiers"])
        _, _, nh, nc = task.segment(x, task.carry.state)
    is_last = task.carry.steps >= task.hparams.halt_max_steps
    expected = torch.sigmoid(torch.where(is_last, nh, torch.maximum(nh, nc)))
    torch.testing.assert_close(target, expected)


def test_exploration_forces_a_minimum_number_of_segments():
    task = _tiny_task("trm", halt_exploration_prob=1.0)
    with torch.no_grad():
        task.q_head.bias.copy_(torch.tensor([5.0, -5.0]))
    task.train()
    task.training_step(_batch(b=64), 0)
    assert not task.carry.halted.any()  # every sequence drew a minimum of >= 2 segments


def _reference_layout(task: PuzzleTask, prefix: str = "_orig_mod.model.inner.") -> dict[str, torch.Tensor]:
    """The key layout of sapientinc/HRM's HierarchicalReasoningModel_ACTV1 (written independently of the loader)."""
    g = torch.Generator().manual_seed(1)
    rnd = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    d, v = task.core.hidden_size, task.hparams.vocab_size
    sd = {f"{prefix}embed_tokens.embedding_weight": rnd(v, d), f"{prefix}lm_head.weight": rnd(v, d),
          f"{prefix}q_head.weight": rnd(2, d), f"{prefix}q_head.bias": rnd(2),
          f"{prefix}puzzle_emb.weights": rnd(task.hparams.num_puzzle_identifiers, d),
          f"{prefix}H_init": rnd(d).bfloat16(), f"{prefix}L_init": rnd(d).bfloat16(),
          f"{prefix}rotary_emb.cos_cached": rnd(4, 4)}
    for level, stack in (("H", task.core.H), ("L", task.core.L)):
        for i, layer in enumerate(stack.layers):
            sd[f"{prefix}{level}_level.layers.{i}.self_attn.qkv_proj.weight"] = rnd(*layer.attn.qkv_proj.weight.shape)
            sd[f"{prefix}{level}_level.layers.{i}.self_attn.o_proj.weight"] = rnd(*layer.attn.o_proj.weight.shape)
            sd[f"{prefix}{level}_level.layers.{i}.mlp.gate_up_proj.weight"] = rnd(*layer.mlp.gate_up_proj.weight.shape)
            sd[f"{prefix}{level}_level.layers.{i}.mlp.down_proj.weight"] = rnd(*layer.mlp.down_proj.weight.shape)
    return sd


@pytest.mark.parametrize("prefix", ["_orig_mod.model.inner.", "model.inner.", "inner."])
def test_official_hrm_checkpoint_layout_loads(tmp_path, prefix):
    task = _tiny_task("hrm", num_puzzle_identifiers=3)
    ref = _reference_layout(task, prefix)
    path = tmp_path / "step_100"
    torch.save(ref, path)
    load_hrm_checkpoint(task, path)
    torch.testing.assert_close(task.core.H.layers[0].attn.qkv_proj.weight,
                               ref[f"{prefix}H_level.layers.0.self_attn.qkv_proj.weight"])
    torch.testing.assert_close(task.puzzle_emb.weight, ref[f"{prefix}puzzle_emb.weights"])
    torch.testing.assert_close(task.core.z_L_init, ref[f"{prefix}L_init"].float())
    torch.testing.assert_close(task.embed_tokens.weight, ref[f"{prefix}embed_tokens.embedding_weight"])
    task.eval()
    assert task.solve(_batch()["inputs"], segments=2).shape == (4, 81)


def test_official_checkpoint_errors_name_the_problem(tmp_path):
    task = _tiny_task("hrm")
    ref = _reference_layout(task)
    with pytest.raises(ValueError, match="unexpected keys"):
        convert_hrm_state_dict({**ref, "something.else": torch.zeros(1)})
    bad = dict(ref)
    bad["_orig_mod.model.inner.lm_head.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="shape mismatch for lm_head.weight"):
        load_hrm_checkpoint(task, bad)
    with pytest.raises(FileNotFoundError):
        load_hrm_checkpoint(task, tmp_path / "missing.pt")


def test_core_length_is_checked_against_the_puzzle():
    with pytest.raises(ValueError, match="max_seq_len >= 82"):
        PuzzleTask(build_core("hrm", "tiny", max_seq_len=64), vocab_size=11, seq_len=81, num_puzzle_identifiers=1)
    with pytest.raises(ValueError, match="token-mixing"):
        PuzzleTask(build_core("trm", "tiny", mixer="mlp", seq_len=90, pos_encoding="none"), vocab_size=11,
                   seq_len=81, num_puzzle_identifiers=1, puzzle_emb_len=16)

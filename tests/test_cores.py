import pytest
import torch

from hrmkit.cores import CORES, HRM, TRM, RecursiveCore, build_core
from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.cache import KVCache

BUILTIN = ["hrm", "trm", "ut", "rins", "transformer"]


def _run(core: RecursiveCore, x: torch.Tensor, spec: AttnSpec | None = None):
    return core(x, core.initial_state(x), spec or AttnSpec())


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_core_runs_forward_and_backward(name):
    core = build_core(name, "tiny")
    x = torch.randn(2, 6, core.hidden_size, requires_grad=True)
    state, out = _run(core, x)
    assert out.shape == x.shape and all(v.shape == x.shape for v in state.values())
    out.square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in core.parameters())
    assert len(core.call_names()) == core.num_calls
    # deterministic given the same weights and input
    torch.testing.assert_close(_run(core, x)[1], out)


@pytest.mark.parametrize("name", BUILTIN)
def test_state_carries_across_segments(name):
    core = build_core(name, "tiny")
    x = torch.randn(1, 5, core.hidden_size)
    s1, o1 = _run(core, x)
    s2, o2 = core(x, {k: v.detach() for k, v in s1.items()}, AttnSpec())
    if name == "transformer":  # one stateless pass: a second segment recomputes the same output
        torch.testing.assert_close(o1, o2)
    else:
        assert not torch.allclose(o1, o2)


def _grad_calls(core: RecursiveCore, x: torch.Tensor) -> set[str]:
    with core.telemetry() as records:
        _run(core, x)
    return {r.name for r in records if r.grad}


def test_hrm_h2l3_gradient_allocation_matches_hrm_text_table():
    core = build_core("hrm", "text-tiny")
    assert core.schedule() == ["L", "L", "L", "H", "L", "L", "L", "H"]
    assert core.call_names() == ["L0", "L1", "L2", "H0", "L3", "L4", "L5", "H1"]
    expected = {
        2: {"L5", "H1"},
        3: {"H0", "L5", "H1"},
        4: {"H0", "L4", "L5", "H1"},
        5: {"H0", "L3", "L4", "L5", "H1"},
        8: {"L0", "L1", "L2", "H0", "L3", "L4", "L5", "H1"},
    }
    x = torch.randn(1, 4, core.hidden_size)
    for bp, calls in expected.items():
        core.bp_steps = bp
        assert _grad_calls(core, x) == calls, bp


@pytest.mark.parametrize("bp,embedding_gets_grad", [(2, False), (3, True), (4, True), (5, True)])
def test_token_embedding_gradient_with_hrm_text_injection(bp, embedding_gets_grad):
    core = build_core("hrm", "text-tiny", bp_steps=bp)
    emb = torch.nn.Embedding(10, core.hidden_size)
    x = emb(torch.randint(0, 10, (2, 5)))
    _, out = _run(core, x, AttnSpec("causal"))
    out.sum().backward()
    assert (emb.weight.grad is not None) == embedding_gets_grad
    assert all(p.grad is not None for p in core.parameters())


def test_hrm_symbolic_injection_gives_embedding_grad_at_one_step_gradient():
    core = build_core("hrm", "tiny")  # injection="hrm": x feeds every L call, so the last L call carries it
    assert core.bp_steps == 2
    emb = torch.nn.Embedding(10, core.hidden_size)
    _, out = _run(core, emb(torch.randint(0, 10, (2, 5))))
    out.sum().backward()
    assert emb.weight.grad is not None


def test_bp_steps_validation():
    core = build_core("hrm", "tiny")
    with pytest.raises(ValueError, match=r"bp_steps must be in \[2, 6\]"):
        core.bp_steps = 1
    with pytest.raises(ValueError, match="bp_steps"):
        build_core("trm", "tiny", bp_steps=99)


def test_trm_ut_rins_horizons():
    trm = build_core("trm", "tiny")  # T=2, n=2: grads through the whole last recursion
    assert trm.call_names() == ["z0", "z1", "y0", "z2", "z3", "y1"]
    assert _grad_calls(trm, torch.randn(1, 3, trm.hidden_size)) == {"z2", "z3", "y1"}
    ut = build_core("ut", "tiny")
    assert _grad_calls(ut, torch.randn(1, 3, ut.hidden_size)) == {"U1", "U2"}
    rins = build_core("rins", "tiny", bp_steps=3)
    assert _grad_calls(rins, torch.randn(1, 3, rins.hidden_size)) == {"L1", "L2", "H0"}


def test_telemetry_records_rms_and_gradient_norms_and_is_off_by_default():
    core = build_core("hrm", "text-tiny")
    x = torch.randn(2, 5, core.hidden_size)
    _run(core, x)
    assert core.records == []
    with core.telemetry(grads=True) as records:
        _, out = _run(core, x)
        out.sum().backward()
    assert [r.name for r in records] == core.call_names()
    # MagicNorm: every module call exits through a parameterless RMSNorm -> unit RMS states
    assert all(abs(float(r.rms) - 1.0) < 1e-3 for r in records)
    assert all((r.grad_norm is not None) == r.grad for r in records)


def test_shared_hrm_is_weight_tied():
    shared = build_core("hrm", "text-tiny", shared=True)
    separate = build_core("hrm", "text-tiny")
    assert not hasattr(shared, "H")
    assert shared.num_parameters() * 2 == separate.num_parameters()


def _nonembedding(core: RecursiveCore) -> int:
    return sum(p.numel() for p in core.parameters())


def test_hrm_text_xl_core_has_981_5m_parameters_on_meta():
    with torch.device("meta"):
        core = build_core("hrm", "text-XL")
    assert core.z_L_init.is_meta
    assert _nonembedding(core) == 981_467_136  # 32 layers x (5 d^2 + 3 d I), d=1536, I=4096
    # + untied embedding and LM head (V=65,536) + z_L_init = the published 1,182,795,264 tensors' elements
    assert _nonembedding(core) + 2 * 65536 * 1536 + core.z_L_init.numel() == 1_182_795_264


@pytest.mark.parametrize(
    "name,variant,core_params,heads",
    [
        # heads: token embedding (V x 512) + LM head (512 x V) + Q head (512 x 2 + 2) from specs/hrm-symbolic.md §1
        ("hrm", "sudoku", 27_262_976, 11 * 512 * 2 + 1026),  # -> 27,275,266
        ("trm", "sudoku", 6_815_744, 11 * 512 * 2 + 1026),  # -> 6,828,034
        ("trm", "sudoku-mlp", 5_016_576, 11 * 512 * 2 + 1026),  # -> 5,028,866
        ("trm", "maze", 6_815_744, 6 * 512 * 2 + 1026),  # -> 6,822,914
    ],
)
def test_symbolic_parameter_counts(name, variant, core_params, heads):
    with torch.device("meta"):
        core = build_core(name, variant)
    assert _nonembedding(core) == core_params
    published = {("hrm", "sudoku"): 27_275_266, ("trm", "sudoku"): 6_828_034, ("trm", "sudoku-mlp"): 5_028_866,
                 ("trm", "maze"): 6_822_914}
    assert core_params + heads == published[(name, variant)]


def test_trm_mlp_t_runs_without_rope():
    core = build_core("trm", "tiny", mixer="mlp", seq_len=7, pos_encoding="none")
    assert core.rope is None
    state, out = _run(core, torch.randn(2, 7, core.hidden_size))
    assert out.shape == (2, 7, core.hidden_size)


def test_meta_init_then_materialise():
    with torch.device("meta"):
        core = build_core("hrm", "tiny")
    core.to_empty(device="cpu")
    core.reset_parameters()
    assert all(torch.isfinite(p).all() and p.abs().sum() > 0 for p in core.parameters())
    assert core.z_L_init.abs().sum() > 0
    _run(core, torch.randn(1, 4, core.hidden_size))


def test_compute_dtype_bf16():
    core = build_core("hrm", "tiny", compute_dtype="bfloat16")
    _, out = _run(core, torch.randn(1, 4, core.hidden_size))
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("name", BUILTIN)
def test_kv_cache_decoding_matches_full_prefixlm_forward(name):
    core = build_core(name, "tiny").eval()
    t, prefix = 7, 3
    x = torch.randn(1, t, core.hidden_size)
    full_spec = AttnSpec("prefixlm", prefix_lens=torch.tensor([prefix]))
    with torch.no_grad():
        _, full = _run(core, x, full_spec)
        cache = KVCache()
        _, out_prefill = core(x[:, :5], core.initial_state(x[:, :5]), full_spec, cache)
        outs = [out_prefill]
        for pos in (5, 6):
            step = x[:, pos:pos + 1]
            _, o = core(step, core.initial_state(step), AttnSpec("causal"), cache)
            outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-4)
    layers_per_call = {"hrm": 1, "trm": 1, "ut": 1, "rins": 1, "transformer": 2}[name]
    assert len(cache) == core.num_calls * layers_per_call


def test_variants_and_unknown_names():
    assert set(BUILTIN) <= set(CORES.names())
    assert {"tiny", "sudoku", "text-XL"} <= set(HRM.variants)
    assert {"tiny", "sudoku-mlp"} <= set(TRM.variants)
    with pytest.raises(KeyError, match="no variant 'huge'"):
        build_core("hrm", "huge")
    for name in BUILTIN:
        assert "tiny" in CORES.get(name).variants


def test_core_config_round_trip_and_safe_rebuild():
    core = build_core("hrm", "text-tiny", bp_steps=3)
    cfg = core.to_config()
    assert cfg["class_path"] == "hrmkit.cores.hrm.HRM"
    assert cfg["init_args"]["injection"] == "hrm_text" and cfg["init_args"]["hidden_size"] == 32
    from hrmkit.cores import core_from_config

    rebuilt = core_from_config(cfg)
    rebuilt.load_state_dict(core.state_dict())
    x = torch.randn(1, 4, core.hidden_size)
    torch.testing.assert_close(_run(rebuilt, x)[1], _run(core, x)[1])
    assert rebuilt.bp_steps == 3
    with pytest.raises(ValueError, match="not a registered hrmkit core"):
        core_from_config({"class_path": "os.system", "init_args": {}})


def test_sequence_task_checkpoint_reloads_outside_the_cli(tmp_path):
    import lightning as L

    from hrmkit.data import SyntheticDataModule
    from hrmkit.tasks import SequenceTask

    model = SequenceTask(build_core("trm", "tiny"), vocab_size=8)
    trainer = L.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, num_sanity_val_steps=0, limit_val_batches=1)
    trainer.fit(model, SyntheticDataModule(seq_len=5, vocab_size=8, num_train=128, num_val=32, batch_size=32))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = SequenceTask.load_from_checkpoint(path)
    assert type(loaded.core).__name__ == "TRM"
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        torch.testing.assert_close(a, b)

"""Built-in cores: the shared contract (hrmkit.testing, the same suite plugins run) plus what is specific to each
built-in core (HRM's gradient allocation table, published parameter counts, ...)."""

import pytest
import torch

from hrmkit.cores import CORES, HRM, TRM, RecursiveCore, build_core, core_from_config
from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.cache import KVCache
from hrmkit.testing import CoreCase, CoreContract

BUILTIN = ["hrm", "trm", "ut", "rins", "transformer"]


class TestBuiltinCoreContract(CoreContract):
    """Every built-in core through the shared suite (the one-pass Transformer ignores the carried state)."""

    @pytest.fixture(params=[CoreCase(name, carries_state=name != "transformer") for name in BUILTIN], ids=str)
    def core_case(self, request) -> CoreCase:
        return request.param


def _run(core: RecursiveCore, x: torch.Tensor, spec: AttnSpec | None = None):
    return core(x, core.initial_state(x), spec or AttnSpec())


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


def test_variants_and_unknown_names():
    assert set(BUILTIN) <= set(CORES.names())
    assert {"tiny", "sudoku", "text-XL"} <= set(HRM.variants)
    assert {"tiny", "sudoku-mlp"} <= set(TRM.variants)
    with pytest.raises(KeyError, match="no variant 'huge'"):
        build_core("hrm", "huge")
    for name in BUILTIN:
        assert "tiny" in CORES.get(name).variants


def test_hrm_text_config_names_the_class_and_unregistered_paths_are_refused():
    cfg = build_core("hrm", "text-tiny", bp_steps=3).to_config()
    assert cfg["class_path"] == "hrmkit.cores.hrm.HRM"
    assert cfg["init_args"]["injection"] == "hrm_text" and cfg["init_args"]["hidden_size"] == 32
    assert core_from_config(cfg).bp_steps == 3
    with pytest.raises(ValueError, match="not a registered hrmkit core"):
        core_from_config({"class_path": "os.system", "init_args": {}})


@pytest.mark.parametrize("name,layers_per_call", [("hrm", 1), ("trm", 1), ("ut", 1), ("rins", 1), ("transformer", 2)])
def test_kv_cache_holds_one_entry_per_module_call_and_layer(name, layers_per_call):
    core = build_core(name, "tiny").eval()
    x = torch.randn(1, 4, core.hidden_size)
    cache = KVCache()
    with torch.no_grad():
        core(x, core.initial_state(x), AttnSpec("causal"), cache)
    assert len(cache) == core.num_calls * layers_per_call

from importlib.metadata import EntryPoint

import pytest
import torch

import hrmkit.registry as registry_mod
from hrmkit.cli import main
from hrmkit.cores import CORES, RecursiveCore, build_core
from hrmkit.registry import PluginError, Registry


def test_builtin_names_and_lookup():
    assert {"hrm", "trm", "ut", "rins", "transformer"} <= set(CORES.names())
    assert issubclass(CORES.get("hrm"), RecursiveCore)
    with pytest.raises(PluginError, match="did you mean 'hrm'"):
        CORES.get("hrn")


def test_register_rejects_non_cores_and_clashes():
    reg: Registry = Registry("core", group=None, base=RecursiveCore)
    with pytest.raises(PluginError, match="subclass of RecursiveCore"):
        reg.register("bad")(int)
    reg.register("hrm")(CORES.get("hrm"))
    with pytest.raises(PluginError, match="already registered"):
        reg.register("hrm")(CORES.get("trm"))


def _fake_entry_points(eps):
    return lambda group: [ep for ep in eps if ep.group == group]


def test_broken_plugin_is_reported_by_name_and_breaks_nothing(monkeypatch):
    eps = [
        EntryPoint("broken_core", "hrmkit_does_not_exist.mod:Core", "hrmkit.cores"),
        EntryPoint("not_a_core", "collections:OrderedDict", "hrmkit.cores"),
        EntryPoint("good_core", "hrmkit.cores.ut:UniversalTransformer", "hrmkit.cores"),
    ]
    monkeypatch.setattr(registry_mod, "entry_points", _fake_entry_points(eps))
    reg: Registry = Registry("core", group="hrmkit.cores", base=RecursiveCore)
    reg.register("hrm")(CORES.get("hrm"))
    assert reg.names() == ["broken_core", "good_core", "hrm", "not_a_core"]  # listed without importing
    with pytest.warns(UserWarning, match="broken_core"):
        errors = reg.load_all()
    assert set(errors) == {"broken_core", "not_a_core"}
    assert "ModuleNotFoundError" in errors["broken_core"]
    assert "subclass of RecursiveCore" in errors["not_a_core"]
    assert reg.get("good_core").__name__ == "UniversalTransformer"
    assert reg.get("hrm") is CORES.get("hrm")
    with pytest.raises(PluginError, match="broken_core.*unavailable"):
        reg.get("broken_core")
    rows = {e.name: e for e in reg.entries()}
    assert rows["broken_core"].error and rows["hrm"].source == "built-in"


def test_plugins_can_be_disabled(monkeypatch):
    monkeypatch.setenv("HRMKIT_DISABLE_PLUGINS", "1")
    monkeypatch.setattr(registry_mod, "entry_points",
                        _fake_entry_points([EntryPoint("x", "a.b:C", "hrmkit.cores")]))
    reg: Registry = Registry("core", group="hrmkit.cores", base=RecursiveCore)
    assert reg.names() == []


def test_installed_plugin_package_is_discovered_and_trains_a_step():
    assert "gated_loop" in CORES.names(), "make test installs plugins/hrmkit-gated-loop into .venv"
    entry = {e.name: e for e in CORES.entries()}["gated_loop"]
    assert entry.source == "hrmkit-gated-loop" and entry.target == "hrmkit_gated_loop:GatedLoop"
    core = build_core("gated_loop", "tiny")
    assert isinstance(core, RecursiveCore)
    x = torch.randn(4, 6, core.hidden_size)
    target = torch.randn_like(x)
    opt = torch.optim.AdamW(core.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        _, out = core(x, core.initial_state(x))
        loss = (out - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert core.gate.weight.grad is not None and losses[-1] < losses[0]


def test_hrmkit_cores_lists_everything(capsys):
    main(["cores"])
    out = capsys.readouterr().out
    for name in ("hrm", "trm", "ut", "rins", "transformer", "gated_loop"):
        assert f" {name} " in out
    assert "hrmkit-gated-loop" in out and "built-in" in out

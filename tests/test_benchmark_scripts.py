"""Every benchmark and experiment script still imports: they run by hand, not in the suite, so a moved or renamed
hrmkit symbol would otherwise break them silently (``generate_speed.py`` imported ``load_hf`` from its old module)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "benchmarks/experiments").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.relative_to(ROOT).as_posix() for p in SCRIPTS])
def test_the_script_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(script.parent))  # scripts import their siblings (e.g. flops.py)
    name = f"_bench_{script.stem}"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    assert module.__doc__, f"{script.name}: a benchmark says in its docstring what it measures and how to run it"

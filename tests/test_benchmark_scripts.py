"""Every benchmark and experiment script still imports: they run by hand, not in the suite, so a moved or renamed
hrmkit symbol would otherwise break them silently (``generate_speed.py`` imported ``load_hf`` from its old module)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "benchmarks/experiments").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.relative_to(ROOT).as_posix() for p in SCRIPTS])
def test_the_script_imports(script):
    module = load_script(script, f"_bench_{script.stem}")
    assert module.__doc__, f"{script.name}: a benchmark says in its docstring what it measures and how to run it"

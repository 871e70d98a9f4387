"""Every registered core × variant (plugins included) builds on meta, round-trips its config, and has the size
docs/cores.md records (timm-style: a new variant is tested the day it is registered)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from hrmkit.cli import main
from hrmkit.cores import CORES, build_core, core_from_config
from hrmkit.cores.sizes import core_sizes, markdown_table
from hrmkit.registry import load_plugins

load_plugins()
DOC = Path(__file__).resolve().parents[1] / "docs" / "cores.md"
VARIANTS = [(name, v) for name in CORES.names() if name not in CORES.errors
            for v in sorted(getattr(CORES.get(name), "variants", {}))]


@pytest.mark.parametrize(("name", "variant"), VARIANTS, ids=[f"{n}:{v}" for n, v in VARIANTS])
def test_every_variant_builds_on_meta_and_round_trips_its_config(name, variant):
    with torch.device("meta"):
        core = build_core(name, variant)
        again = core_from_config(core.to_config())
    assert type(again) is type(core)
    assert again.to_config() == core.to_config()
    assert again.num_parameters() == core.num_parameters() > 0
    assert again.schedule() == core.schedule()


def test_the_recorded_size_table_matches_the_registry():
    recorded = re.search(r"\| core \| variant \|.*?(?=\n\n|\Z)", DOC.read_text(), re.S)
    assert recorded, f"{DOC}: no size table"
    assert recorded.group(0).strip() == markdown_table(core_sizes()), \
        "docs/cores.md's size table is stale: paste `markdown_table(core_sizes())` from hrmkit.cores.sizes"


def test_cores_sizes_prints_every_variant(capsys):
    main(["cores", "--sizes", "true"])
    out = capsys.readouterr().out
    assert "981,467,136" in out and "text-XL" in out and "sudoku-mlp" in out

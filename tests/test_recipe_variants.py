"""Sizes live in one place: each shipped recipe's core arguments equal a named core variant (``hrmkit cores``), apart
from the overrides listed here with their reason. A new recipe must be added to the table (test fails otherwise)."""

from __future__ import annotations

import importlib

import pytest
import torch

from hrmkit.cores import build_core
from hrmkit.recipes import ROOT, load_recipe, shipped_recipes
from hrmkit.registry import load_plugins

load_plugins()
RUN_CHOICES = {"compute_dtype"}  # how a run computes, not what the model is
TEXT_WINDOW = {"max_seq_len"}  # a symbolic core reused on text keeps its weights; only the RoPE table grows
#: recipe -> (core, variant, overrides allowed); None: a custom size with the reason
VARIANT_OF: dict[str, tuple[str, str, set[str]] | str] = {
    "arc-agi-1-hrm": ("hrm", "arc", set()),
    "arc-agi-1-trm": ("trm", "arc", set()),
    "arc-agi-2-trm": ("trm", "arc", set()),
    "maze-hard-hrm": ("hrm", "maze", set()),
    "maze-hard-trm": ("trm", "maze", set()),
    "reverse-hrm-tiny": ("hrm", "tiny", set()),
    "sft-hrm-XL": ("hrm", "text-XL", set()),
    "sudoku-extreme-hrm": ("hrm", "sudoku", set()),
    "sudoku-extreme-trm-mlp": ("trm", "sudoku-mlp", set()),
    "text-hrm-B": ("hrm", "text-B", set()),
    "text-hrm-L-8xH100": ("hrm", "text-L", set()),
    "text-hrm-XL-16xH100": ("hrm", "text-XL", set()),
    "text-rins-1B": ("rins", "text-XL", set()),
    "text-transformer-1B": ("transformer", "text-XL", set()),
    "text-ut-1B": ("ut", "text-XL", set()),
    "text-trm-0.6B": ("hrm", "text-XL", {"shared", "H_layers"}),  # one weight-tied stack: TRM-style HRM-Text
    "transfer/sudoku-symbolic-hrm": ("hrm", "sudoku", set()),
    "transfer/sudoku-text-hrm": ("hrm", "sudoku", TEXT_WINDOW),
    "transfer/gsm-text-hrm": ("hrm", "sudoku", TEXT_WINDOW),
    "text-gsm-symbolic-cpu": "a CPU-sized HRM-Text (d=128, 1+1 layers) trained in minutes (docs/text-experiments.md)",
}


def _name(path) -> str:
    rel = path.relative_to(ROOT).as_posix().removesuffix(".yaml")
    return rel.removeprefix("recipes/")


RECIPES = {_name(p): p for p in shipped_recipes()}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_the_recipe_core_is_a_named_variant(name):
    entry = VARIANT_OF.get(name)
    if entry is None:
        if name.startswith(("plugins/", "transfer/cpu/")):
            pytest.skip("plugin and CPU transfer recipes size their own cores (no registry variant to name)")
        pytest.fail(f"{name}: add it to VARIANT_OF (its core variant, or why its size is custom)")
    if isinstance(entry, str):
        return  # custom size, reason recorded in the table
    core_name, variant, overrides = entry
    core = load_recipe(RECIPES[name])["model"]["init_args"]["core"]
    with torch.device("meta"):  # both built in full, so an omitted argument's class default counts too
        module, cls = str(core["class_path"]).rsplit(".", 1)  # as LightningCLI resolves it
        shipped = getattr(importlib.import_module(module), cls)(**core.get("init_args", {})).to_config()
        named = build_core(core_name, variant).to_config()
    assert shipped["class_path"] == named["class_path"], f"{name}: {shipped['class_path']} is not {core_name}"
    allowed = overrides | RUN_CHOICES
    a, b = shipped["init_args"], named["init_args"]
    differ = {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if k not in allowed and a.get(k) != b.get(k)}
    assert not differ, f"{name}: core arguments differ from {core_name}:{variant} (recipe, variant): {differ}"

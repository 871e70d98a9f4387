"""The import graph stays acyclic (lazy imports inside functions count) and its arrows point downward."""

import ast
from pathlib import Path

import networkx as nx
import pytest

PKG = Path(__file__).resolve().parents[1] / "hrmkit"


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def import_graph() -> nx.DiGraph:
    """Every ``hrmkit`` import anywhere in a module's source (top level, function bodies, TYPE_CHECKING blocks)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = nx.DiGraph()
    graph.add_nodes_from(mods)
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = ".".join(anchor[: len(anchor) - (node.level - 1)] + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for name in names:
                target = resolve(name) if name.split(".")[0] == "hrmkit" else None
                # a package's __init__ re-exporting its own submodules is its public face, not a cycle
                if target and target != mod and not (is_pkg and target.startswith(mod + ".")):
                    graph.add_edge(mod, target)
    return graph


def test_no_import_cycles_lazy_imports_included():
    cycles = [sorted(c) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1]
    assert cycles == []


@pytest.mark.parametrize(("lower", "upper"), [
    ("hrmkit.nn", "hrmkit.cores"), ("hrmkit.nn", "hrmkit.tasks"), ("hrmkit.cores", "hrmkit.tasks"),
    ("hrmkit.interop", "hrmkit.tasks"), ("hrmkit.transfer", "hrmkit.tasks"), ("hrmkit.callbacks", "hrmkit.tasks"),
    ("hrmkit.data", "hrmkit.tasks"), ("hrmkit.tasks", "hrmkit.commands"), ("hrmkit.tasks", "hrmkit.loading"),
    ("hrmkit.pictures", "hrmkit.tasks"), ("hrmkit.pictures", "hrmkit.cores"), ("hrmkit.eval", "hrmkit.commands"),
])
def test_imports_point_downward(lower, upper):
    graph = import_graph()
    up = [(a, b) for a, b in graph.edges if (a == lower or a.startswith(lower + "."))
          and (b == upper or b.startswith(upper + "."))]
    assert up == [], f"{lower} must not import {upper}"


def test_only_the_command_line_imports_commands():
    """Library modules stay importable without the CLI: only hrmkit.cli, the commands themselves and the
    deprecation aliases of moved modules (hrmkit._moved.MOVED) may import hrmkit.commands."""
    from hrmkit._moved import MOVED

    allowed = {"hrmkit.cli", *MOVED}
    up = [(a, b) for a, b in import_graph().edges if b.startswith("hrmkit.commands")
          and not a.startswith("hrmkit.commands") and a not in allowed]
    assert up == []


MAX_FUNCTION_LINES = 80


def test_no_function_over_80_lines():
    """Long bodies hide what a function does: split them by meaning (docstrings and signatures count)."""
    long = []
    for mod, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{mod}.{node.name} ({lines} lines, {path.name}:{node.lineno})")
    assert long == []


LEAVES = ("hrmkit.dtypes", "hrmkit.errors", "hrmkit.distributed", "hrmkit.pictures.charts")


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaves_import_only_leaves(leaf):
    """Helpers every layer may use stay at the bottom: they import no hrmkit module but other leaves."""
    assert [m for m in import_graph().successors(leaf) if m not in LEAVES] == []


def test_a_task_must_say_how_its_layers_are_sized_from_the_data():
    from hrmkit.tasks import Task

    class Unsized(Task):
        pass

    class Sized(Task):
        def _configure_io(self) -> None:
            pass

    with pytest.raises(TypeError, match="_configure_io"):
        Unsized()
    assert isinstance(Sized(), Task)

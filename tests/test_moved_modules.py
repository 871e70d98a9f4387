"""Modules that moved under hrmkit.commands / hrmkit.pictures: the old paths still import, warn once, and are the
same objects (so old imports, YAML class paths and pickled references keep loading)."""

import json
import subprocess
import sys

from hrmkit._moved import MOVED

PROBE = """
import importlib, json, sys, warnings
from hrmkit._moved import MOVED
out = {}
for old, new in MOVED.items():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        first = importlib.import_module(old)
        again = importlib.import_module(old)
    new_mod = importlib.import_module(new)
    names = [n for n in dir(new_mod) if not n.startswith("__")]
    out[old] = {"warnings": [str(w.message) for w in seen if w.category is DeprecationWarning],
                "same": first is again and all(getattr(first, n) is getattr(new_mod, n) for n in names)}
print(json.dumps(out))
"""


def test_old_module_paths_warn_once_and_are_the_new_modules():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result) == set(MOVED)
    for old, new in MOVED.items():
        assert result[old]["same"], old
        assert len(result[old]["warnings"]) == 1, (old, result[old]["warnings"])
        assert old in result[old]["warnings"][0] and new in result[old]["warnings"][0]


def test_old_plot_path_still_has_the_command_and_the_drawing():
    import warnings

    from hrmkit.commands.plot import plot
    from hrmkit.pictures.charts import render_chart

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import hrmkit.plot as old

    assert old.plot is plot and old.render_chart is render_chart


def test_old_class_paths_resolve_for_yaml_and_checkpoints():
    """jsonargparse resolves ``class_path`` strings with import_object: an old path gives the very same class."""
    import warnings

    from jsonargparse._util import import_object

    from hrmkit.commands.demo import TimeBudgetProgressBar
    from hrmkit.commands.lightning import HrmkitCLI

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert import_object("hrmkit.lightning_cli.HrmkitCLI") is HrmkitCLI
        assert import_object("hrmkit.demo.TimeBudgetProgressBar") is TimeBudgetProgressBar

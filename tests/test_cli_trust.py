"""The command line says what it does: every command listed, short core names, core swaps that build exactly the
named variant (or list what they carried), flag spellings in hints, the SIGTERM line, the cached core table."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from hrmkit.cli import COMMANDS, LIGHTNING_SUBCOMMANDS, command_line_spelling, main

ROOT = Path(__file__).resolve().parents[1]
TRM_RECIPE = ROOT / "tests/recipes/sudoku-trm-mlp.yaml"


def printed_config(capsys, *args: str) -> dict:
    """``hrmkit fit -c <tiny TRM recipe> ARGS --print_config`` as a dict (nothing is built or read)."""
    with pytest.raises(SystemExit) as info:
        main(["fit", "-c", str(TRM_RECIPE), *args, "--print_config"])
    assert info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_help_lists_every_command(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for name in (*LIGHTNING_SUBCOMMANDS, "cores", "demo", "data", "show", "plot", "eval", "generate", "export",
                 "transfer"):
        assert f"\n  {name} " in out, name
    assert set(COMMANDS) >= {"fit", "validate", "test", "predict"}


def test_hrmkit_cli_class_is_importable_at_module_level():
    import hrmkit.cli
    from hrmkit.commands.lightning import HrmkitCLI

    assert hrmkit.cli.HrmkitCLI is HrmkitCLI and HrmkitCLI.__qualname__ == "HrmkitCLI"


def test_unknown_command_is_a_short_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fitt"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "did you mean fit" in err


def test_hints_use_command_line_flag_spelling():
    assert command_line_spelling("x exists; pass overwrite=True to replace it") == \
        "x exists; pass --overwrite true to replace it"
    assert command_line_spelling("shape=[3] strict=False") == "shape=[3] --strict false"


def test_core_named_with_a_variant_builds_exactly_that_variant(capsys):
    from hrmkit.cores import HRM
    from hrmkit.cores.spec import core_defaults

    core = printed_config(capsys, "--model.init_args.core", "hrm:tiny")["model"]["init_args"]["core"]
    assert core["class_path"] == "hrmkit.cores.hrm.HRM"
    assert core["init_args"] == {**core_defaults(HRM), **HRM.variants["tiny"]}
    # nothing of the recipe's TRM survives: its MLP mixer, sequence length and missing positions are gone
    assert core["init_args"]["mixer"] == "attention" and core["init_args"]["seq_len"] is None
    assert core["init_args"]["pos_encoding"] == "rope" and core["init_args"]["H_layers"] == 1
    # later flags still apply on top of the variant
    core = printed_config(capsys, "--model.init_args.core=hrm:tiny",
                          "--model.init_args.core.init_args.hidden_size", "64")["model"]["init_args"]["core"]
    assert core["init_args"]["hidden_size"] == 64 and core["init_args"]["H_layers"] == 1


def test_a_plain_class_swap_lists_what_jsonargparse_carried(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(TRM_RECIPE), "--model.init_args.core=HRM", "--print_config"])
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if "carried over" in ln)
    for carried in ("mixer='mlp'", "seq_len=97", "pos_encoding='none'"):
        assert carried in line, line
    assert "hrm:tiny" in line


def test_variant_typo_is_a_user_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "-c", str(TRM_RECIPE), "--model.init_args.core", "hrm:tiniest", "--print_config"])
    assert info.value.code == 2 and "no variant 'tiniest'" in capsys.readouterr().err


@pytest.mark.parametrize("name,path", [("ut", "hrmkit.cores.ut.UniversalTransformer"),
                                       ("rins", "hrmkit.cores.rins.RINS"),
                                       ("transformer", "hrmkit.cores.transformer.Transformer"),
                                       ("hrm", "hrmkit.cores.hrm.HRM")])
def test_registry_names_work_as_class_paths(capsys, name, path):
    assert printed_config(capsys, f"--model.init_args.core={name}")["model"]["init_args"]["core"]["class_path"] == path


def test_registry_name_works_in_a_recipe_class_path(capsys, tmp_path):
    recipe = tmp_path / "short.yaml"
    recipe.write_text(TRM_RECIPE.read_text().replace("class_path: hrmkit.cores.TRM", "class_path: trm"))
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(recipe), "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["core"]["class_path"] == \
        "hrmkit.cores.trm.TRM"


def test_plugin_entry_point_names_resolve(capsys):
    from hrmkit.cores import CORES

    plugins = [e.name for e in CORES.entries() if e.source != "built-in" and not e.error]
    if not plugins:
        pytest.skip("no core plugin installed")
    core = printed_config(capsys, f"--model.init_args.core={plugins[0]}")["model"]["init_args"]["core"]
    assert core["class_path"].rsplit(".", 1)[-1] == CORES.get(plugins[0]).__qualname__


def test_resolved_core_line():
    from hrmkit.cores import build_core
    from hrmkit.cores.spec import describe_core

    line = describe_core(build_core("hrm", "tiny"))
    assert line.startswith("core hrm (variant tiny): ") and "schedule LLHLLH" in line and "parameters" in line
    assert "(variant custom)" in describe_core(build_core("hrm", "tiny", hidden_size=64))


def test_sigterm_checkpoint_line_says_what_happened():
    from types import SimpleNamespace

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from hrmkit.commands.lightning import _ExceptionCheckpointLine

    text = (f"An {SIGTERMException.__name__} was raised with message: \\\n            , saved checkpoint to "
            "runs/x/epoch=0-step=7.ckpt")
    record = logging.LogRecord("lightning", logging.INFO, __file__, 1, text, (), None)
    _ExceptionCheckpointLine(SimpleNamespace(global_step=7)).filter(record)
    assert record.getMessage() == ("hrmkit: stopped by SIGTERM/SIGUSR1 (preemption or kill) at step 7; saved a "
                                   "checkpoint to runs/x/epoch=0-step=7.ckpt (resume with --ckpt_path last)")


def test_core_table_is_cached_and_rebuilt_when_a_core_file_changes(tmp_path, monkeypatch, capsys):
    import hrmkit.commands.cores as table

    monkeypatch.setenv("HRMKIT_CACHE_DIR", str(tmp_path))
    main(["cores"])
    first = capsys.readouterr().out
    assert "hrm" in first and (tmp_path / "cores.json").is_file()

    def fail() -> list:
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(table, "build_rows", fail)
    main(["cores"])
    assert capsys.readouterr().out == first
    monkeypatch.setattr(table, "fingerprint", lambda: "something changed")
    with pytest.raises(AssertionError, match="cache was not used"):
        main(["cores"])


def test_light_commands_do_not_import_torch(tmp_path):
    import json
    import os
    import subprocess
    import sys

    probe = ("import sys, runpy; sys.argv = ['hrmkit'] + sys.argv[1:]\n"
             "try:\n    runpy.run_module('hrmkit.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "import json; print(json.dumps(sorted(m for m in ('torch', 'lightning') if m in sys.modules)))")
    env = {**os.environ, "HRMKIT_CACHE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", probe, "cores"], env=env, capture_output=True, check=True)  # fill cache
    for args in (["--help"], ["cores"], ["data", "sudoku", "--help"], ["data", "text", "--help"], ["plot", "--help"]):
        out = subprocess.run([sys.executable, "-c", probe, *args], env=env, capture_output=True, text=True,
                             timeout=300).stdout
        assert json.loads(out.strip().splitlines()[-1]) == [], args

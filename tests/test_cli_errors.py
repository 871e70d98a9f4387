"""User errors end the ``hrmkit`` process with a short message and a non-zero status, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_SUDOKU = ROOT / "tests/recipes/sudoku-hrm.yaml"


def run_hrmkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``hrmkit ARGS`` in a fresh interpreter (as a user would run it)."""
    env = {k: v for k, v in os.environ.items() if k != "HRMKIT_DEBUG"}
    return subprocess.run([sys.executable, "-m", "hrmkit.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def error_paragraph(proc: subprocess.CompletedProcess) -> str:
    """Assert the common shape of a user error and return the ``hrmkit: error:`` paragraph."""
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err)
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) <= 12, err  # the message plus a few Lightning start-up lines at most
    lines = err.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("hrmkit: error: "))
    paragraph = lines[start:]
    assert len(paragraph) <= 3 and paragraph[-1].startswith("hint: "), err
    return "\n".join(paragraph)


def test_unknown_core_lists_the_registered_cores(tmp_path):
    recipe = tmp_path / "bad-core.yaml"
    recipe.write_text(TINY_SUDOKU.read_text().replace("class_path: hrmkit.cores.HRM", "class_path: NoSuchCore"))
    msg = error_paragraph(run_hrmkit("fit", "-c", str(recipe), cwd=tmp_path))
    assert "NoSuchCore" in msg and "core" in msg
    for name in ("hrm", "trm", "hrmkit.cores.hrm:HRM"):
        assert name in msg


def test_missing_dataset_names_the_path(tmp_path):
    proc = run_hrmkit("fit", "-c", str(TINY_SUDOKU), "--data.init_args.data_dir", "/nonexistent/tiny-sudoku",
                      cwd=tmp_path)
    msg = error_paragraph(proc)
    assert "/nonexistent/tiny-sudoku" in msg and "hrmkit data sudoku" in msg


def test_yaml_typo_points_at_the_key(tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text(TINY_SUDOKU.read_text().replace("max_steps: 4", "max_stepz: 4"))
    msg = error_paragraph(run_hrmkit("fit", "-c", str(recipe), cwd=tmp_path))
    assert "trainer.max_stepz" in msg
    assert "usage:" not in msg


def test_data_builder_refuses_an_existing_directory(tmp_path):
    target = tmp_path / "not-a-dataset"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    msg = error_paragraph(run_hrmkit("data", "sudoku", "--out_dir", str(target), "--train_size", "4",
                                     "--test_size", "2", cwd=tmp_path))
    assert str(target) in msg and "overwrite" in msg
    assert (target / "notes.txt").read_text() == "keep me"


def test_main_returns_none_on_success(capsys):
    from hrmkit.cli import main

    assert main(["cores"]) is None
    assert "hrm" in capsys.readouterr().out


def test_sigterm_exits_143_and_debug_keeps_the_traceback(monkeypatch, capsys):
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    import hrmkit.cli as cli

    def preempted(argv: list[str]) -> None:
        raise SIGTERMException

    monkeypatch.setattr(cli, "_dispatch", preempted)
    with pytest.raises(SystemExit) as info:
        cli.main(["fit"])
    assert info.value.code == 143

    def missing(argv: list[str]) -> None:
        raise FileNotFoundError("no dataset at /x")

    monkeypatch.setattr(cli, "_dispatch", missing)
    with pytest.raises(SystemExit) as info:
        cli.main(["fit"])
    assert info.value.code == 2 and "hrmkit: error: FileNotFoundError: no dataset at /x" in capsys.readouterr().err
    monkeypatch.setenv("HRMKIT_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        cli.main(["fit"])

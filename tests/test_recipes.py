"""Every published puzzle recipe parses (--print_config) and every tiny CPU twin trains a few steps."""

import json
from pathlib import Path

import pytest

from hrmkit.cli import main
from hrmkit.data.puzzles.arc import build_arc
from hrmkit.data.puzzles.maze import build_maze
from hrmkit.data.puzzles.sudoku import build_sudoku

ROOT = Path(__file__).resolve().parents[1]
FULL = sorted((ROOT / "recipes").glob("*.yaml"))
PUZZLE_FULL = [p for p in FULL if p.name.startswith(("sudoku", "maze", "arc"))]
TINY = sorted(p for p in (ROOT / "recipes/tiny").glob("*.yaml") if p.name.startswith(("sudoku", "maze", "arc")))


def test_the_published_recipes_are_all_there():
    names = {p.stem for p in PUZZLE_FULL}
    assert names == {"sudoku-extreme-hrm", "sudoku-extreme-trm-mlp", "maze-hard-hrm", "maze-hard-trm",
                     "arc-agi-1-hrm", "arc-agi-1-trm", "arc-agi-2-trm"}
    assert {p.stem for p in TINY} == {"sudoku-hrm", "sudoku-trm-mlp", "maze-hrm", "maze-trm", "arc-agi-1-hrm",
                                      "arc-agi-1-trm", "arc-agi-2-trm"}


@pytest.mark.parametrize("recipe", PUZZLE_FULL, ids=lambda p: p.stem)
def test_full_recipe_prints_its_config(recipe, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(recipe), "--print_config"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "hrmkit.tasks.PuzzleTask" in out and "max_steps" in out


def _arc_tasks(root: Path) -> Path:
    """Two hand-made ARC tasks (one evaluation task with a held-out test pair), written as task JSON files."""
    grid = lambda rows, cols, v: [[(v + r + c) % 10 for c in range(cols)] for r in range(rows)]  # noqa: E731
    tasks = {"training/t1": {"train": [{"input": grid(3, 3, 1), "output": grid(3, 3, 2)},
                                       {"input": grid(2, 4, 3), "output": grid(2, 4, 4)}],
                             "test": [{"input": grid(4, 2, 5), "output": grid(4, 2, 6)}]},
             "evaluation/e1": {"train": [{"input": grid(2, 2, 7), "output": grid(4, 4, 8)}],
                               "test": [{"input": grid(3, 2, 9), "output": grid(6, 4, 0)}]}}
    for name, task in tasks.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / f"{name}.json").write_text(json.dumps(task))
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-data")
    build_sudoku(str(root / "sudoku"), train_size=8, test_size=4, levels=["easy"], num_aug=2, seed=0)
    build_maze(str(root / "maze"), train_size=8, test_size=4, size=10, min_path_len=4, num_loops=2, seed=0)
    build_arc(str(root / "arc"), [str(_arc_tasks(root / "arc-src"))], num_aug=2, seed=0)
    return root


@pytest.mark.parametrize("recipe", TINY, ids=lambda p: p.stem)
def test_tiny_twin_trains(recipe, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tiny_data / recipe.stem.split("-")[0]
    main(["fit", "-c", str(recipe), "--data.init_args.data_dir", str(data), "--trainer.enable_model_summary",
          "false"])
    assert list(tmp_path.rglob("*.ckpt")), "the run should leave a checkpoint"

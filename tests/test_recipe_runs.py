"""Every shipped recipe, through its CPU derivation (hrmkit.recipes): the committed twins are the derivation, the
derivation keeps what it must, and each derived run builds its data at tiny size, fits with validation and
checkpoints, is SIGKILLed mid-step, resumes with ``--ckpt_path last`` to the end, and validates its final checkpoint.

Runs are processes forked from a preloaded server (tests/_recipe_runner.py); multi-device recipes run as 2 gloo
processes. Datasets are built once per module and shared by every recipe that reads the same kind.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from _recipe_runner import run
from litdata.streaming import writer as litdata_writer
from litdata.streaming.writer import BinaryWriter

from hrmkit.checkpointing import load_checkpoint_file
from hrmkit.cli import main
from hrmkit.data.text import format as text_format
from hrmkit.recipes import (
    DEPTH_KEYS,
    ROOT,
    derive_cpu_run,
    load_recipe,
    shipped_recipes,
    step_factor,
    twin_path,
    write_twins,
)

RECIPES = shipped_recipes()
CHUNK_BYTES = 256


def small_chunks(path: str, **kwargs: Any) -> BinaryWriter:
    """LitData's writer with tiny chunks (the builders' default would put a tiny split in one chunk)."""
    return BinaryWriter(path, **dict(kwargs, chunk_bytes=CHUNK_BYTES))
IDS = [p.relative_to(ROOT).as_posix().removesuffix(".yaml").removeprefix("recipes/") for p in RECIPES]


def test_every_recipe_is_covered_and_every_twin_is_its_derivation():
    names = set(IDS)
    for expected in ("sudoku-extreme-hrm", "maze-hard-trm", "arc-agi-2-trm", "text-hrm-XL-16xH100", "sft-hrm-XL",
                     "text-gsm-symbolic-cpu", "reverse-hrm-tiny", "transfer/gsm-text-hrm", "transfer/cpu/gsm-text",
                     "plugins/hrmkit-gram/recipe", "plugins/hrmkit-gated-loop/recipe"):
        assert expected in names
    every = {p for p in (ROOT / "recipes").rglob("*.yaml")}
    twins, lm_eval = set((ROOT / "recipes/tiny").rglob("*.yaml")), set((ROOT / "recipes/lm-eval").rglob("*.yaml"))
    assert lm_eval, "recipes/lm-eval holds the lm-evaluation-harness task files (tests/test_lm_eval.py)"
    assert {p for p in RECIPES if p.is_relative_to(ROOT / "recipes")} == every - twins - lm_eval
    assert write_twins(check=True) == [], "recipes/tiny/ drifted from the recipes: run `python -m hrmkit.recipes`"
    twins = {p.resolve() for p in (ROOT / "recipes/tiny").rglob("*.yaml")}
    assert twins == {twin_path(p).resolve() for p in RECIPES}, "a twin without a recipe (or the reverse)"


@pytest.mark.parametrize("recipe", RECIPES, ids=IDS)
def test_the_shipped_recipe_parses_as_is(recipe, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(recipe), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "class_path: hrmkit.tasks." in capsys.readouterr().out


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": leaf}``; callbacks are keyed by class name."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    if isinstance(tree, list) and tree and all(isinstance(x, dict) and "class_path" in x for x in tree):
        return _flat({x["class_path"].rsplit(".", 1)[-1]: x.get("init_args", {}) for x in tree}, prefix)
    return {prefix[:-1]: tree}


ALLOWED = re.compile(r"^(model\.init_args\.core\.init_args\.(hidden_size|num_heads|max_seq_len|"
                     + "|".join(DEPTH_KEYS) + r")|model\.init_args\.(vocab_size|pad_id|warmup_steps|init_from)|"
                     r"data\.init_args\.(tokens_per_batch|batch_size|eval_batch_size|num_train|num_val|data_dir)|"
                     r"trainer\.(accelerator|devices|num_nodes|precision|max_steps|max_epochs|val_check_interval|"
                     r"log_every_n_steps|default_root_dir|logger\.init_args\.save_dir)|"
                     r"trainer\.callbacks\.ModelCheckpoint\.(every_n_train_steps|dirpath))$")


@pytest.mark.parametrize("recipe", RECIPES, ids=IDS)
def test_the_derivation_changes_only_sizes_and_keeps_the_ratios(recipe):
    shipped = load_recipe(recipe)
    derived = derive_cpu_run(shipped)
    a, b = _flat(shipped), _flat(derived)
    changed = {k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>")}
    assert not {k for k in changed if not ALLOWED.match(k)}, "the derivation changed a setting it must keep"
    trainer, data = derived["trainer"], derived["data"].get("init_args", {})
    assert trainer["accelerator"] == "cpu" and trainer.get("num_nodes", 1) == 1
    shipped_devices = shipped["trainer"].get("devices", 1) * shipped["trainer"].get("num_nodes", 1)
    assert trainer["devices"] == (2 if shipped_devices > 1 else 1)
    assert trainer.get("precision") == shipped["trainer"].get("precision")
    core_in, core_out = a.get("model.init_args.core.init_args.max_seq_len"), b.get(
        "model.init_args.core.init_args.max_seq_len")
    tokens_in, tokens_out = a.get("data.init_args.tokens_per_batch"), data.get("tokens_per_batch")
    if tokens_in is not None:  # text: one factor for the sequence and the token budget
        assert tokens_out * core_in == tokens_in * core_out and core_out <= 128
    for key in ("batch_size", "eval_batch_size"):
        if key in data and key in shipped["data"].get("init_args", {}):
            ratio = shipped["data"]["init_args"][key] / shipped["data"]["init_args"].get("batch_size", 64)
            assert abs(data[key] / data.get("batch_size", 64) - ratio) <= ratio / 2 + 0.5 / data.get("batch_size", 64)
    s, steps = step_factor(shipped, trainer["max_steps"]), trainer["max_steps"]
    for key in ("model.init_args.warmup_steps", "trainer.val_check_interval",
                "trainer.callbacks.ModelCheckpoint.every_n_train_steps"):
        if isinstance(a.get(key), int) and not isinstance(a.get(key), bool) and a[key] > 0:
            lowest = -(-steps // 2) if key == "trainer.val_check_interval" else 1  # validates at most twice
            assert b[key] == max(lowest, min(steps, round(a[key] * s))), (key, a[key], b[key], s)


# ----------------------------------------------------------------------------------------------- tiny data


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


def data_kind(config: dict[str, Any]) -> str | None:
    """Which tiny dataset a derived recipe reads (None: it makes its own)."""
    data = config.get("data", {})
    path = str(data.get("init_args", {}).get("data_dir", ""))
    if data.get("class_path", "").endswith("PuzzleDataModule"):
        return next(k for k in ("sudoku", "maze", "arc") if k in path)
    if data.get("class_path", "").endswith("TextDataModule"):
        # One tiny instruction/response set in the text format for every text recipe: GSM-Symbolic and
        # Sudoku-as-text samples are longer than the derived 128-token window, so their builders would drop them all.
        return "text"
    return None


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """``get(kind)``: the tiny dataset of that kind, built on first use and shared."""
    root = tmp_path_factory.mktemp("tiny-data")
    built: dict[str, Path] = {}

    def tokenizer() -> str:
        path = root / "tokenizer.json"
        if not path.is_file():
            from hrmkit.data.text.tokenizer import train_bpe

            records = [{"instruction": f"What is {a} plus {b}?", "response": f"{a} + {b} = {a + b}.",
                        "condition": "cot"} for a in range(12) for b in range(12)]
            (root / "tiny.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            train_bpe([root / "tiny.jsonl"], vocab_size=300).save(path)  # small vocabulary: small checkpoints
        return str(path)

    def get(kind: str) -> Path:
        if kind not in built:
            with pytest.MonkeyPatch.context() as mp:  # many small chunks, so 2 ranks each get a share
                for module in (litdata_writer, text_format):
                    if hasattr(module, "BinaryWriter"):
                        mp.setattr(module, "BinaryWriter", small_chunks)
                build(kind, root / kind)
            built[kind] = root / kind
        return built[kind]

    def build(kind: str, out: Path) -> None:
        if kind == "sudoku":
            from hrmkit.data.puzzles.sudoku import build_sudoku

            build_sudoku(str(out), train_size=8, test_size=24, levels=["easy"], num_aug=2, seed=0)  # 2 ranks x 11
        elif kind == "maze":
            from hrmkit.data.puzzles.maze import build_maze

            build_maze(str(out), train_size=8, test_size=32, size=10, min_path_len=4, num_loops=2, seed=0)
        elif kind == "arc":
            from hrmkit.data.puzzles.arc import build_arc

            build_arc(str(out), [str(_arc_tasks(root / "arc-src"))], num_aug=2, seed=0)
        elif kind == "text":
            from hrmkit.data.text import build_text

            tok = tokenizer()
            build_text(str(out), [str(root / "tiny.jsonl")], tokenizer=tok, val_fraction=0.2, max_len=128)

    return get


# ------------------------------------------------------------------------------------ fit, kill, resume, validate


def _checkpoints(cwd: Path, run_dir: str) -> list[tuple[int, Path]]:
    """(global step, path) of every checkpoint under the run's folder (files and sharded DCP directories)."""
    found = []
    for path in (cwd / run_dir).rglob("*.ckpt"):
        if path.is_dir():
            meta = path / "meta.pt"
            step = load_checkpoint_file(meta)["global_step"] if meta.is_file() else None
        else:
            step = load_checkpoint_file(path)["global_step"]
        if step is not None:
            found.append((int(step), path))
    return sorted(found)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """One working folder for every derived run, as a user's checkout: transfer and SFT twins find the
    checkpoints of their derived parents under runs/tiny/."""
    return tmp_path_factory.mktemp("runs")


# Parents first, so their children's init_from exists (the order of RECIPES is alphabetical otherwise).
PARENTS = {"sft-hrm-XL": "text-hrm-XL-16xH100", "transfer/gsm-text-hrm": "transfer/sudoku-symbolic-hrm",
           "transfer/sudoku-text-hrm": "transfer/sudoku-symbolic-hrm", "transfer/cpu/gsm-text":
           "transfer/cpu/sudoku-symbolic", "transfer/cpu/sudoku-text": "transfer/cpu/sudoku-symbolic"}
ORDERED = sorted(zip(IDS, RECIPES), key=lambda x: (x[0] in PARENTS, x[0]))


LIMITS = ["--trainer.limit_val_batches", "1"]  # one evaluation batch per rank: the CPU runs bf16 slowly


def _fit_args(twin: Path, data: Path | None, config: dict[str, Any]) -> list[str]:
    args = ["fit", "-c", str(twin), "--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar",
            "false"] + LIMITS
    return args + (["--data.init_args.data_dir", str(data)] if data is not None else [])


def _final_checkpoint(workdir: Path, config: dict[str, Any]) -> Path:
    found = _checkpoints(workdir, config["trainer"].get("default_root_dir", "."))
    assert found, "the run left no checkpoint"
    step, path = found[-1]
    assert step == config["trainer"]["max_steps"], found
    return path


@pytest.mark.parametrize(("name", "recipe"), ORDERED, ids=[i for i, _ in ORDERED])
def test_derived_run_fits_is_killed_resumes_and_validates(name, recipe, tiny_data, workdir):
    twin = twin_path(recipe)
    config = yaml.safe_load(twin.read_text())
    trainer, devices, steps = config["trainer"], config["trainer"]["devices"], config["trainer"]["max_steps"]
    kind = data_kind(config)
    data = tiny_data(kind) if kind else None
    init_from = config["model"]["init_args"].get("init_from")
    if name in PARENTS:
        assert init_from and (workdir / init_from).exists(), f"{PARENTS[name]} should have run first: {init_from}"
    logs = workdir / "logs" / name.replace("/", "_")
    logs.mkdir(parents=True, exist_ok=True)
    args = _fit_args(twin, data, config)
    if init_from != config["model"]["init_args"].get("init_from"):
        args += ["--model.init_args.init_from", init_from]

    # 1. fit with validation and checkpoints, SIGKILLed (every rank) after the backward of step `kill`.
    val = trainer.get("val_check_interval")
    kill = min(steps - 1, max(val if isinstance(val, int) else 1, 2))
    first = run(args + ["--trainer.callbacks+=_kill_switch.KillAtStep", "--trainer.callbacks.step", str(kill)],
                workdir, logs / "killed.log", devices)
    assert first.codes == [-9] * devices, first.tail()
    saved = _checkpoints(workdir, trainer.get("default_root_dir", "."))
    assert all(step <= kill for step, _ in saved), saved

    # 2. the same command with --ckpt_path last: resumes from the newest checkpoint (if the recipe saved one).
    # (the first run checked validation before training; the resumed one validates at its interval)
    second = run(args + ["--ckpt_path", "last", "--trainer.num_sanity_val_steps", "0"], workdir, logs / "resumed.log",
                 devices)
    assert second.codes == [0] * devices, second.tail()
    if saved:
        assert "Restored all states from the checkpoint" in second.log, second.tail()
        assert f"step={saved[-1][0]}" in second.log or str(saved[-1][1].name) in second.log, second.tail()
    final = _final_checkpoint(workdir, config)

    # 3. validation after the resume: the resumed run's own when the recipe validates at its last step, else a
    # `validate` run of the final checkpoint with the recipe as derived.
    record(name, first, second)
    if isinstance(val, int) and steps % val == 0:
        assert "Restored all states" in second.log or not saved
        return
    third = run(["validate", "-c", str(twin), "--ckpt_path", str(final), "--trainer.enable_progress_bar", "false"]
                + LIMITS                + (["--data.init_args.data_dir", str(data)] if data is not None else [])
                + (["--model.init_args.init_from", "null"] if init_from else []), workdir, logs / "validate.log",
                devices)
    assert third.codes == [0] * devices, third.tail()
    assert "Validate metric" in third.log, third.tail()
    record(name, third)


TIMES: dict[str, list[float]] = {}


def record(name: str, *runs: Any) -> None:
    """CPU and wall seconds per recipe, printed at the end of the module (the suite's cost on an idle machine is
    about its CPU seconds over the cores)."""
    spent = TIMES.setdefault(name, [0.0, 0.0])
    for r in runs:
        spent[0] += r.cpu_s
        spent[1] += r.wall_s


@pytest.fixture(scope="module", autouse=True)
def _report_times():
    yield
    if TIMES:
        total = sum(c for c, _ in TIMES.values())
        lines = [f"{n:40s} cpu {c:7.1f} s  wall {w:7.1f} s" for n, (c, w) in sorted(TIMES.items())]
        print("\nderived recipe runs:\n" + "\n".join(lines) + f"\n{'total':40s} cpu {total:7.1f} s")

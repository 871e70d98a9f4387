"""transfer: does a symbolic Sudoku core that solves puzzles help a text model solve them?

Source: a :class:`~hrmkit.tasks.PuzzleTask` trains text-cpu's HRM core (the same class and options, so it transfers
exactly) on symbolic 4x4 Sudoku: 16 cells, one token per cell (1 blank, 2-5 the digits), no puzzle-embedding
prefix, one full forward per step (:mod:`hrmkit.commands.symbolic_source`). The puzzles are reasoning-gym's
``mini_sudoku`` with one solution, drawn from seeds far from the targets', and every target held-out puzzle is
removed from the source's data.

Targets, with the same train and held-out puzzles (text-cpu's ``mini_sudoku`` splits):

* ``cells``: Sudoku as text with one character per cell and no separators (``_`` blank): the prompt's 16 cells sit
  at the 16 consecutive positions the core saw (RoPE is relative, so the chat envelope in front shifts nothing), the
  response is the 16 solved cells. Judged by exact match (every puzzle has one solution).
* ``gym``: reasoning-gym's own text format (header line, spaces, newlines), judged by the task's ``score_answer``:
  one step further from the symbolic input.

Arms, with equal steps, data order and recipe (text-cpu's: PrefixLM, response-only loss, MagicNorm, deep-credit
warm-up): ``transfer`` (``init_from`` the source, full fine-tune), ``frozen`` (the same with the core frozen: only the
embeddings and the LM head train) and ``scratch``. The transfer arms also start the rows of the cell characters
(``_``, ``1``-``4``) in the embedding and LM head from the source's rows for the same cells; every other row is new.

    PYTHONPATH=. .venv/bin/python benchmarks/experiments/transfer.py --workers 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from hrmkit.commands.symbolic_source import (
    SOURCE_SEED0,
    TAGS,
    CellRows,
    build_source_data,
    cells,
    tag_of,
    train_source,
)

ROOT = Path(__file__).resolve().parents[2]
NAME = "transfer"
ARMS = ("transfer", "frozen", "scratch")
TARGETS = ("cells", "gym")
def _atomic_write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(text.encode() if isinstance(text, str) else text)
    os.replace(tmp, path)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def cells_record(rec: dict[str, Any]) -> dict[str, Any]:
    """A mini_sudoku record rendered one character per cell, no separators."""
    meta = rec["entry"]["metadata"]
    return {"instruction": cells(meta["puzzle"]), "response": cells(meta["solution"]), "condition": "direct",
            "entry": rec["entry"]}


def blanks(rec: dict[str, Any]) -> int:
    return sum(v == 0 for row in rec["entry"]["metadata"]["puzzle"] for v in row)


def exact_cells(answer: str, rec: dict[str, Any]) -> float:
    return float(answer.strip() == rec["response"])


# --------------------------------------------------------------------------------------------------------- data
def target_data(cfg: Any, work_dir: Path, target: str) -> Any:
    """The target's built dataset, held-out records and scorer (text-cpu's mini_sudoku splits)."""
    from hrmkit.commands.text_demo import TaskData, text_data
    from hrmkit.data.text.reasoning_gym_tasks import build_char_text, resolve, scorer

    gym_dir, train, held_out = text_data(cfg, str(work_dir))
    if target == "gym":
        return TaskData(gym_dir, held_out, scorer(resolve(cfg.task)))
    out = work_dir / f"cells-{gym_dir.name}"
    cells_train, cells_held = [cells_record(r) for r in train], [cells_record(r) for r in held_out]
    if not (out / "metadata.json").is_file():
        build_char_text(str(out), cells_train, cells_held, "benchmarks/experiments/transfer.py",
                        {"render": "one character per cell", "from": gym_dir.name}, overwrite=True)
    return TaskData(out, cells_held, exact_cells)


# -------------------------------------------------------------------------------------------------------- arms
def run_arm(cfg_fields: dict[str, Any], target: str, arm: str, seed: int, source_ckpt: str, work_dir: str,
            threads: int, steps: int) -> dict[str, Any]:
    """One target run (in a worker process when ``--workers`` > 1)."""
    from hrmkit.commands.text_demo import TextCpuConfig, run_text_cpu

    torch.set_num_threads(threads)
    cfg = TextCpuConfig(**cfg_fields)
    cfg.steps = steps
    cfg.log_name = f"{target}-{arm}-seed{seed}"
    if arm != "scratch":
        cfg.init_from, cfg.freeze = source_ckpt, (["core"] if arm == "frozen" else [])
    data = target_data(cfg, Path(work_dir), target)
    callbacks = [CellRows(source_ckpt, data.data_dir)] if arm != "scratch" else []
    load_before, t = _load(), time.perf_counter()
    res = run_text_cpu(cfg, seed=seed, work_dir=work_dir, data=data, callbacks=callbacks,
                       log=lambda line: print(f"  [{target} {arm} seed {seed}] {line}", flush=True))
    by_tag: dict[str, list[float]] = {t: [] for t in TAGS}
    for rec, row in zip(data.held_out, res["rows"]):
        by_tag[TAGS[tag_of(blanks(rec))]].append(row["score"] >= 1.0)
    first = next((p["step"] for p in res["curve"] if p["exact"] >= 0.5), None)
    return {"target": target, "arm": arm, "seed": seed, "exact": res["exact"], "steps_to_50": first,
            "exact_by_tag": {t: round(sum(v) / len(v), 4) for t, v in by_tag.items() if v},
            "held_out_by_tag": {t: len(v) for t, v in by_tag.items()}, "held_out": res["held_out"],
            "steps": res["steps"], "minutes": res["minutes"], "wall_minutes": round((time.perf_counter() - t) / 60, 2),
            "tokens_per_s": res["tokens_per_s"], "params": res["params"],
            "trainable": res["params"] - (_core_params(cfg) if arm == "frozen" else 0),
            "curve": res["curve"], "load_before": load_before, "load_after": _load(),
            "examples": res["rows"][:4]}


def _core_params(cfg: Any) -> int:
    from hrmkit.commands.text_demo import text_core

    return sum(p.numel() for p in text_core(cfg).parameters())


# ------------------------------------------------------------------------------------------------------ summary
def _spread(values: list[float]) -> dict[str, Any]:
    return {"mean": round(statistics.fmean(values), 4), "min": min(values), "max": max(values),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else None, "n": len(values)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for target in TARGETS:
        for arm in ARMS:
            rs = [r for r in runs if r["target"] == target and r["arm"] == arm]
            if not rs:
                continue
            reached = [r["steps_to_50"] for r in rs if r["steps_to_50"] is not None]
            out[f"{target}/{arm}"] = {
                "exact": _spread([r["exact"] for r in rs]),
                "steps_to_50": {"reached": len(reached), "of": len(rs),
                                "mean": round(statistics.fmean(reached)) if reached else None,
                                "min": min(reached) if reached else None, "max": max(reached) if reached else None},
                "exact_by_tag": {t: round(statistics.fmean(r["exact_by_tag"][t] for r in rs), 4) for t in TAGS
                                 if all(t in r["exact_by_tag"] for r in rs)}}
    return out


def verdict(a: dict[str, Any], b: dict[str, Any]) -> str:
    """'higher' / 'lower' when the seed ranges do not overlap, else 'not established'."""
    if a["min"] > b["max"]:
        return "higher"
    if a["max"] < b["min"]:
        return "lower"
    return "not established"


def readings(summary: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for target in TARGETS:
        if f"{target}/scratch" not in summary:
            continue
        base = summary[f"{target}/scratch"]
        for arm in ("transfer", "frozen"):
            if f"{target}/{arm}" not in summary:
                continue
            s = summary[f"{target}/{arm}"]
            v = verdict(s["exact"], base["exact"])
            word = ("not established (the seed ranges overlap)" if v == "not established"
                    else f"{v} than scratch in every seed")
            out.append(f"- `{target}`: {arm} {_pct(s['exact']['mean'])} ({_pct(s['exact']['min'])}–"
                       f"{_pct(s['exact']['max'])}) vs scratch {_pct(base['exact']['mean'])} "
                       f"({_pct(base['exact']['min'])}–{_pct(base['exact']['max'])}) held-out exact: {word}. "
                       f"Steps to 50 %: {_steps50(s)} vs {_steps50(base)}.")
    return out


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _steps50(s: dict[str, Any]) -> str:
    t = s["steps_to_50"]
    if not t["reached"]:
        return f"not reached (0 of {t['of']} seeds)"
    span = f"{t['min']}–{t['max']}" if t["min"] != t["max"] else f"{t['min']}"
    return f"{span} ({t['reached']} of {t['of']} seeds)"


def _plot(runs: list[dict[str, Any]], target: str, path: Path) -> str:
    from hrmkit.pictures.charts import render_chart

    series = {f"{r['arm']} s{r['seed']}": [(p["step"], 100 * p["exact"]) for p in r["curve"]]
              for r in runs if r["target"] == target}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    render_chart(series, f"{target}: held-out exact (%) during training").save(tmp)
    os.replace(tmp, path)
    return path.name


HISTORY = """## History

### 2026-11-28: first design (0 / 20 either way)

`benchmarks/transfer_experiment.py` (removed at the redesign; it is in git history) trained a symbolic HRM (hidden 128,
1 + 1 layers, H2 L2, post-norm) for 100 steps on 9x9 Sudoku (test exact 0.0 %, token accuracy 58.3 %), then two text
tasks with a 1,024-piece BPE tokenizer, one seed each, transfer (`init_from`) against scratch, 100 steps:

| task | init | val loss before → after | exact |
|---|---|---|---|
| Sudoku-as-text | transfer | 7.452 → 1.054 | 0 / 20 |
| Sudoku-as-text | scratch | 7.828 → 1.095 | 0 / 20 |
| GSM-Symbolic | transfer | 7.424 → 3.900 | not measured |
| GSM-Symbolic | scratch | 7.431 → 3.932 | not measured |

It could not have shown an effect: the source solved no puzzle, BPE pieces did not line up with the 81 cells the
core had learned on, and one seed gave no spread. Curves: [transfer-sudoku-text.png](transfer-sudoku-text.png),
[transfer-gsm-text.png](transfer-gsm-text.png).
"""


def write_report(report_dir: Path, result: dict[str, Any]) -> Path:
    src, runs, summary = result["source"], result.get("runs", []), result.get("summary", {})
    c = result["config"]
    lines = ["# transfer: a symbolic Sudoku core that solves, started into a text model", "",
             "Produced by `benchmarks/experiments/transfer.py`; rerun with the command below.", "",
             "## Setup", "",
             f"- **Source**: `PuzzleTask` with text-cpu's HRM core (d={c['hidden_size']}, H{c['H_cycles']}L"
             f"{c['L_cycles']}, 1 + 1 layers, MagicNorm, `hrm_text` injection, gated attention; "
             f"{src['params']:,} parameters) on symbolic 4x4 Sudoku: 16 cells, one token each, no puzzle-embedding "
             f"prefix, one forward per step (`halting: none`, 1 segment). {result['source_train']:,} train puzzles "
             f"with one solution from reasoning-gym `mini_sudoku` seeds ≥ {SOURCE_SEED0:,}, every target held-out "
             f"puzzle removed; {src['steps']} steps × batch {src['batch_size']}, lr {src['lr']:g}, "
             f"{src['minutes']:.1f} min on {src['threads']} thread(s).",
             f"- **Targets**: text-cpu's `mini_sudoku` splits ({c['n_train']:,} train problems, held-out disjoint "
             "by seed and question), two renderings: `cells` (one character per cell, no separators, `_` blank; "
             "the prompt's cells are at the 16 consecutive positions the core saw, and RoPE is relative, so the chat "
             "envelope in front of them shifts nothing; judged by exact match) and `gym` (reasoning-gym's own text, "
             "judged by its `score_answer`). Character-level tokenizer.",
             f"- **Arms**: `transfer` (`init_from` the source, full fine-tune), `frozen` (`freeze: [core]`: only the "
             f"embeddings and LM head train), `scratch`. The transfer arms also start the embedding and LM-head "
             f"rows of `_`, `1`-`4` from the source's rows of the same cells. Same recipe for all: text-cpu's "
             f"(PrefixLM, response-only loss, deep-credit warm-up 2→5, lr {c['lr']:g} cosine, "
             f"{c['tokens_per_batch']} tokens per step), {result['steps']['cells']} steps on `cells` and "
             f"{result['steps']['gym']} on `gym`, seeds "
             f"{', '.join(str(s) for s in result['seeds'])}.",
             f"- Machine: {result['machine']}; 1 thread per run, {result['workers']} run(s) at once; 1-minute load "
             f"averages {_load_range(result)} on the 2 cores (other jobs shared them).", "",
             "## Command", "", f"    {result['command']}", "",
             "## Source", "",
             f"Held-out symbolic exact {_pct(src['exact'])} (token accuracy {_pct(src['token_acc'])}) on "
             f"{result['source_test']} puzzles; by blanks: "
             + ", ".join(f"{t} {_pct(v)}" for t, v in src["exact_by_tag"].items()) + ".", ""]
    for target in TARGETS:
        rows = [summary[f"{target}/{a}"] for a in ARMS if f"{target}/{a}" in summary]
        if not rows:
            continue
        n = next(r["held_out"] for r in runs if r["target"] == target)
        lines += [f"## Target `{target}`", "",
                  f"Held-out exact over {n} problems, mean (min–max over seeds); steps to 50 % from the curve "
                  f"(first {c['curve_n']} held-out problems judged every {c['eval_every']} steps).", "",
                  "| arm | exact | std | steps to 50 % | " + " | ".join(TAGS) + " | trainable params |",
                  "|---|---|---|---|" + "---|" * len(TAGS) + "---|"]
        for a in ARMS:
            s = summary.get(f"{target}/{a}")
            if s is None:
                continue
            r0 = next(r for r in runs if r["target"] == target and r["arm"] == a)
            e = s["exact"]
            lines.append(f"| {a} | {_pct(e['mean'])} ({_pct(e['min'])}–{_pct(e['max'])}) | "
                         f"{_pct(e['std'])} | {_steps50(s)} | "
                         + " | ".join(_pct(s["exact_by_tag"].get(t)) for t in TAGS)
                         + f" | {r0['trainable']:,} |")
        lines += ["", "Held-out problems per difficulty: " + ", ".join(
            f"{t} {k}" for t, k in next(r for r in runs if r["target"] == target)["held_out_by_tag"].items()), "",
                  f"![{target}: held-out exact during training]({result['plots'][target]})", ""]
    lines += ["## What it shows", "", *readings(summary), *_more_readings(result), "",
              "## What it does not show", "",
              "- 9x9 Sudoku: the source is 4x4. The demo's 9x9 model is a token-mixing MLP bound to 81 positions, "
              "which cannot run a causal text model, and an attention core that solves 9x9 takes 30-60 min of this "
              "CPU's time before any target run.",
              "- Transfer from a core trained on other tasks than the target's: source and target are the same "
              "puzzle family; only the rendering differs.",
              "- Effects at the published scale (27M-parameter source, 1B text model).", "",
              HISTORY]
    target = report_dir / f"{NAME}.md"
    _atomic_write(target, "\n".join(lines) + "\n")
    return target


def _more_readings(result: dict[str, Any]) -> list[str]:
    """The source against its text models, the frozen arms, and what the run cost."""
    src, summary, runs = result["source"], result.get("summary", {}), result.get("runs", [])
    out = []
    best = max((summary[f"{t}/transfer"]["exact"]["mean"], t) for t in TARGETS if f"{t}/transfer" in summary)
    out.append(f"- The source solves {_pct(src['exact'])} of its held-out puzzles in one forward pass; its text "
               f"models reach {_pct(best[0])} on `{best[1]}`. A text model writes the answer one cell at a time and "
               "reads the cells it has already written, so it can go past its source.")
    frozen = {t: summary[f"{t}/frozen"]["exact"] for t in TARGETS if f"{t}/frozen" in summary}
    if frozen:
        out.append("- `frozen` (the source's core as is; only embeddings and LM head train): "
                   + "; ".join(f"`{t}` {_pct(e['mean'])} ({_pct(e['min'])}–{_pct(e['max'])})" for t, e in
                               frozen.items())
                   + (". The core's own weights have to change to read Sudoku as text: every frozen seed is below "
                      "every transfer seed." if all(f"{t}/transfer" in summary and e["max"] <
                                                     summary[f"{t}/transfer"]["exact"]["min"]
                                                     for t, e in frozen.items()) else "."))
    wall = sum(r["wall_minutes"] for r in runs)
    out.append(f"- Cost: the source took {src['minutes']:.1f} min, the {len(runs)} target runs "
               f"{wall:.0f} min of wall time together (1 thread each, {result['workers']} at once, judging "
               "included). Budgets were shortened to stay near the 2.5 h CPU budget of the three experiments: "
               f"{result['steps']['cells']} steps on `cells` and {result['steps']['gym']} on `gym` (text-cpu's "
               "final run takes 4,200); each arm's schedule is complete (the cosine decays over its own steps).")
    return out


def _load_range(result: dict[str, Any]) -> str:
    loads = [result["source"]["load_before"], result["source"]["load_after"]]
    loads += [r[k] for r in result.get("runs", []) for k in ("load_before", "load_after")]
    return f"{min(loads):g}–{max(loads):g}"


# -------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200, help="training steps of every gym-target run")
    parser.add_argument("--cells_steps", type=int, default=600,
                        help="training steps of every cells-target run (its problems are 3x shorter, so a step "
                             "holds about 3x as many)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--source_steps", type=int, default=1500)
    parser.add_argument("--source_batch", type=int, default=64)
    parser.add_argument("--source_lr", type=float, default=1e-3)
    parser.add_argument("--source_train", type=int, default=20000)
    parser.add_argument("--source_test", type=int, default=1000)
    parser.add_argument("--n_train", type=int, default=None, help="target train problems (default: text-cpu's)")
    parser.add_argument("--n_test", type=int, default=None, help="target held-out seeds (default: text-cpu's)")
    parser.add_argument("--eval_every", type=int, default=100)
    parser.add_argument("--curve_n", type=int, default=200)
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--hidden_size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1, help="target runs at once (processes, 1 thread each)")
    parser.add_argument("--source_threads", type=int, default=1,
                        help="torch threads of the source run (1: the same numbers as the demo's source)")
    parser.add_argument("--work_dir", default="runs/transfer")
    parser.add_argument("--report_dir", default=str(ROOT / "docs" / "experiments"))
    parser.add_argument("--report_only", action="store_true",
                        help="rewrite transfer.md and the plots from <report_dir>/transfer.json; run nothing")
    args = parser.parse_args(argv)
    if args.report_only:
        report_dir = Path(args.report_dir)
        result = json.loads((report_dir / f"{NAME}.json").read_text())
        result["plots"] = {t: _plot(result["runs"], t, report_dir / f"{NAME}-{t}.png")
                           for t in TARGETS if any(r["target"] == t for r in result["runs"])}
        write_report(report_dir, result)
        return result

    from hrmkit.commands.text_demo import TextCpuConfig, _quiet, text_core, text_data

    overrides = {k: getattr(args, k) for k in ("n_train", "n_test", "eval_every", "curve_n", "max_new_tokens",
                                               "hidden_size") if getattr(args, k) is not None}
    # the answer-only task and text-cpu's recipe of then (50 warm-up steps), as the report's runs used
    cfg = replace(TextCpuConfig(task="mini_sudoku", warmup_steps=50, **overrides), steps=args.steps, minutes=60.0)
    work, report_dir = Path(args.work_dir), Path(args.report_dir)
    work.mkdir(parents=True, exist_ok=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    _, _, held_out = text_data(cfg, str(work))
    exclude = {cells(r["entry"]["metadata"]["puzzle"]) for r in held_out}
    src_dir = build_source_data(work / f"source-train{args.source_train}-test{args.source_test}",
                                args.source_train, args.source_test, exclude)
    torch.set_num_threads(args.source_threads)
    with _quiet():
        source = train_source(lambda: text_core(cfg), src_dir, work / f"source-{cfg.hidden_size}-{args.source_steps}x"
                              f"{args.source_batch}", args.source_steps, args.source_batch, args.source_lr, 0)
    print(json.dumps({"source": {k: v for k, v in source.items() if k != "checkpoint"}}), flush=True)

    command = "PYTHONPATH=. .venv/bin/python benchmarks/experiments/transfer.py " + shlex.join(
        argv if argv is not None else sys.argv[1:])
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    jobs = [(t, a, s) for t in args.targets.split(",") if t for a in args.arms.split(",") if a for s in seeds]
    for t, a, _ in jobs:
        if t not in TARGETS or a not in ARMS:
            raise SystemExit(f"unknown target/arm {t}/{a}: targets {TARGETS}, arms {ARMS}")
    for t in {t for t, _, _ in jobs}:  # build each target's data once, before workers read it
        target_data(cfg, work, t)
    result: dict[str, Any] = {"command": command, "machine": f"{platform.machine()} {os.cpu_count()} cores, "
                              f"torch {torch.__version__}", "workers": args.workers, "seeds": seeds,
                              "steps": {"gym": args.steps, "cells": args.cells_steps}, "config": asdict(cfg),
                              "source": source,
                              "source_train": args.source_train, "source_test": args.source_test, "runs": []}
    fields = asdict(cfg)
    steps = {"gym": args.steps, "cells": args.cells_steps}

    def finish(res: dict[str, Any]) -> None:
        result["runs"].append(res)
        print(json.dumps({k: v for k, v in res.items() if k not in ("curve", "examples")}), flush=True)

    if args.workers <= 1:
        torch.set_num_threads(1)
        for t, a, s in jobs:
            finish(run_arm(fields, t, a, s, source["checkpoint"], str(work), 1, steps[t]))
    else:
        with ProcessPoolExecutor(max_workers=args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_arm, fields, t, a, s, source["checkpoint"], str(work), 1, steps[t])
                       for t, a, s in jobs]
            for f in as_completed(futures):
                finish(f.result())
    order = {(t, a, s): i for i, (t, a, s) in enumerate(jobs)}
    result["runs"].sort(key=lambda r: order[(r["target"], r["arm"], r["seed"])])
    result["summary"] = summarise(result["runs"])
    result["readings"] = readings(result["summary"])
    result["plots"] = {t: _plot(result["runs"], t, report_dir / f"{NAME}-{t}.png")
                       for t in TARGETS if any(r["target"] == t for r in result["runs"])}
    _atomic_write(report_dir / f"{NAME}.json", json.dumps(result, indent=1) + "\n")
    write_report(report_dir, result)
    print("\n".join(result["readings"]))
    print(f"wrote {report_dir / (NAME + '.json')} and {report_dir / (NAME + '.md')}")
    return result


if __name__ == "__main__":
    main()

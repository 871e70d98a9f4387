"""Symbolic-to-text transfer, measured on a CPU: does a core trained on Sudoku help a text model?

Runs the CPU recipes of ``recipes/transfer/cpu/`` end to end and writes ``docs/experiments/transfer.md``:

1. builds easy Sudoku (``hrmkit data sudoku``), trains the symbolic core (PuzzleTask, HRM d 128);
2. trains one small BPE tokenizer on the Sudoku-as-text and GSM-Symbolic training text, and builds both text
   datasets with it (``hrmkit data text --from_puzzles sudoku`` and ``hrmkit data gsm-symbolic``);
3. for (a) Sudoku-as-text and (b) GSM-Symbolic trains the text recipe twice with the same steps and tokens: from
   the symbolic core (``init_from``) and from scratch, then measures validation loss / token accuracy, and for
   Sudoku the puzzle judge's exact accuracy of greedy answers (``hrmkit eval text --kind puzzle``);
4. draws the validation-loss curves (PNG, :mod:`hrmkit.pictures.charts`) and writes the table and figures.

    PYTHONPATH=. .venv/bin/python benchmarks/transfer_experiment.py            # about 30 min on 2 busy cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "transfer" / "cpu"
TEXT_TASKS = {"sudoku-text": "Sudoku-as-text", "gsm-text": "GSM-Symbolic"}


def _cli(recipe: Path, overrides: list[str]) -> Any:
    """A LightningCLI of ``recipe`` (not run), so the script drives fit/validate itself."""
    from lightning.pytorch.cli import LightningCLI

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return LightningCLI(args=["-c", str(recipe), "--trainer.enable_model_summary", "false", *overrides],
                            run=False, save_config_kwargs={"overwrite": True})


def _last(series: dict[str, list[tuple[float, float]]], key: str) -> float | None:
    return round(series[key][-1][1], 4) if series.get(key) else None


def build_data(out: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Sudoku puzzles, one BPE tokenizer for both text tasks, and the two text datasets (reused when present)."""
    from hrmkit.data.puzzles.sudoku import build_sudoku
    from hrmkit.data.text import build_gsm_symbolic, train_bpe, write_jsonl
    from hrmkit.data.text.gsm_symbolic import generate_records
    from hrmkit.data.text.puzzles_as_text import build_puzzle_text, puzzle_records

    data = out / "data"
    paths = {"sudoku": data / "sudoku", "tokenizer": data / "bpe.json", "sudoku-text": data / "sudoku-text",
             "gsm-text": data / "gsm-text"}
    if not (paths["sudoku"] / "metadata.json").exists():
        build_sudoku(str(paths["sudoku"]), train_size=args.puzzles, test_size=args.test_puzzles, levels=["easy"],
                     seed=0, num_workers=1)
    if not paths["tokenizer"].exists():
        with tempfile.TemporaryDirectory(dir=data) as tmp:
            files = [write_jsonl(Path(tmp) / "sudoku.jsonl",
                                 puzzle_records("sudoku", "train", args.puzzles, puzzle_dir=str(paths["sudoku"]))),
                     write_jsonl(Path(tmp) / "gsm.jsonl", generate_records(args.gsm_questions, 0))]
            train_bpe(files, args.vocab).save(paths["tokenizer"])
    if not (paths["sudoku-text"] / "metadata.json").exists():
        build_puzzle_text(str(paths["sudoku-text"]), "sudoku", puzzle_dir=str(paths["sudoku"]),
                          train_size=args.puzzles, test_size=args.test_puzzles, tokenizer=str(paths["tokenizer"]),
                          max_len=512)
    if not (paths["gsm-text"] / "metadata.json").exists():
        build_gsm_symbolic(str(paths["gsm-text"]), train_size=args.gsm_questions, test_size=100, seed=0,
                           tokenizer=str(paths["tokenizer"]), max_len=512)
    return paths


def train_symbolic(out: Path, paths: dict[str, Path], steps: int) -> dict[str, Any]:
    """Train the symbolic Sudoku core; returns its figures and the checkpoint path."""
    from hrmkit.pictures.charts import read_metrics

    cli = _cli(RECIPES / "sudoku-symbolic.yaml", [
        "--data.init_args.data_dir", str(paths["sudoku"]), "--trainer.max_steps", str(steps),
        "--trainer.val_check_interval", str(max(1, steps // 4)), "--trainer.limit_val_batches", "1",
        "--trainer.logger.init_args.save_dir", str(out),
        "--trainer.default_root_dir", str(out / "sudoku-symbolic")])
    from lightning.pytorch.callbacks import ModelCheckpoint

    for cb in cli.trainer.callbacks:  # keep the checkpoint under out_dir whatever the recipe's relative path says
        if isinstance(cb, ModelCheckpoint):
            cb.dirpath = str(out / "sudoku-symbolic" / "checkpoints")
    t = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    series = read_metrics(Path(cli.trainer.logger.log_dir) / "metrics.csv")
    return {"ckpt": str(out / "sudoku-symbolic" / "checkpoints" / "last.ckpt"), "steps": cli.trainer.global_step,
            "train_s": round(time.perf_counter() - t, 1), "val/exact_acc": _last(series, "val/exact_acc"),
            "val/token_acc": _last(series, "val/token_acc"),
            "params_core": sum(p.numel() for p in cli.model.core.parameters()), "metrics": series}


def train_text(out: Path, name: str, data_dir: Path, init_from: str | None, steps: int,
               eval_puzzles: int) -> dict[str, Any]:
    """One text run (transferred core or scratch) and its measurements."""
    from hrmkit.eval.text import evaluate_text
    from hrmkit.pictures.charts import read_metrics

    run = f"{name}-{'transfer' if init_from else 'scratch'}"
    cli = _cli(RECIPES / f"{name}.yaml", [
        "--data.init_args.data_dir", str(data_dir), "--model.init_args.init_from", init_from or "null",
        "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(max(1, steps // 6)),
        "--trainer.logger.init_args.save_dir", str(out), "--trainer.logger.init_args.name", run,
        "--trainer.default_root_dir", str(out / run), "--trainer.enable_checkpointing", "false",
        # validate() around fit(): metric states reset under inference mode could not be updated by fit later
        "--trainer.inference_mode", "false", "--trainer.num_sanity_val_steps", "0"])
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    before = trainer.validate(model, datamodule=dm, verbose=False)[0]
    t = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    train_s = time.perf_counter() - t
    after = trainer.validate(model, datamodule=dm, verbose=False)[0]
    result = {"run": run, "init_from": init_from, "steps": trainer.global_step, "train_s": round(train_s, 1),
              "tokens_per_step": dm.tokens_per_batch,
              "before": {k: round(float(v), 4) for k, v in before.items()},
              "after": {k: round(float(v), 4) for k, v in after.items()},
              "metrics": read_metrics(Path(trainer.logger.log_dir) / "metrics.csv")}
    if name == "sudoku-text" and eval_puzzles:
        t = time.perf_counter()
        ev = evaluate_text(model, str(data_dir / "jsonl" / "test.jsonl"), "puzzle", tokenizer=str(data_dir),
                           max_new_tokens=200, limit=eval_puzzles, out_dir=str(out / run / "eval"))
        result["judge"] = {**ev, "eval_s": round(time.perf_counter() - t, 1),
                           "reasons": judge_reasons(out / run / "eval" / "predictions.jsonl")}
    return result


def judge_reasons(predictions: Path) -> dict[str, int]:
    """How many answers failed for each kind of reason (the judge's message up to its first colon)."""
    from collections import Counter

    rows = [json.loads(line) for line in predictions.read_text().splitlines() if line.strip()]
    return dict(Counter(r["reason"].split(":")[0] if r["reason"] else "correct" for r in rows))


def _curves(runs: list[dict[str, Any]], key: str, title: str, target: Path) -> str:
    from hrmkit.pictures.charts import render_chart

    series = {f"{r['run'].split('-')[-1]} {key}": r["metrics"].get(key, []) for r in runs}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}.png")
    render_chart(series, title).save(tmp)
    os.replace(tmp, target)
    return target.name


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if pct else f"{value:.3f}"


def write_report(docs: Path, result: dict[str, Any], command: str) -> Path:
    """``docs/experiments/transfer.md``: setup, table, figures and what the numbers say (written atomically)."""
    sym = result["symbolic"]
    lines = [
        "# Symbolic-to-text transfer: measured CPU run",
        "",
        "Written by `benchmarks/transfer_experiment.py` (do not edit by hand; rerun the script). "
        "Tooling: [../transfer.md](../transfer.md).",
        "",
        f"Command: `{command}` on {result['machine']}, {result['date']} (a shared 2-core CPU, other jobs running; "
        f"total {result['total_min']:.1f} min).",
        "",
        "## Setup",
        "",
        "* **Symbolic core**: `recipes/transfer/cpu/sudoku-symbolic.yaml`, PuzzleTask + HRM (hidden 128, 1 + 1 "
        f"layers, H2 L2, post-norm; {sym['params_core']:,} core parameters), {sym['steps']} steps of 32 generated easy "
        f"Sudoku (40 givens) in {sym['train_s']:.0f} s. Its test split: token accuracy "
        f"{_fmt(sym['val/token_acc'], True)}, exact {_fmt(sym['val/exact_acc'], True)}.",
        "* **Text models**: `recipes/transfer/cpu/sudoku-text.yaml` and `gsm-text.yaml`, TextTask with the same core "
        "options (only `max_seq_len` differs, 2048 or 1024 vs 82: the RoPE table is re-derived, every weight is "
        f"copied exactly); a {result['vocab']}-token BPE trained on both training texts. Each task is trained twice "
        "with the same steps, tokens, seed and data order: **transfer** (`init_from` = the symbolic checkpoint; the "
        "embedding and LM head are new either way) and **scratch**.",
        "",
        "## Results",
        "",
        "| task | init | steps × tokens | val loss before → after | val token acc after | exact (judge) |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in TEXT_TASKS.items():
        for r in result[name]:
            judge = r.get("judge")
            exact = f"{judge['accuracy'] * judge['n']:.0f} / {judge['n']}" if judge else "not measured"
            lines.append(f"| {label} | {r['run'].rsplit('-', 1)[-1]} | {r['steps']} × {r['tokens_per_step']} | "
                         f"{_fmt(r['before'].get('val/loss'))} → **{_fmt(r['after'].get('val/loss'))}** | "
                         f"{_fmt(r['after'].get('val/token_acc'), True)} | {exact} |")
    lines += ["", "Validation loss during training (response tokens, nats):", ""]
    lines += [f"![{label}]({result['figures'][name]})" for name, label in TEXT_TASKS.items()]
    lines += ["", "## What it shows", ""] + [f"* {line}" for line in result["findings"]] + [
        "", "Raw figures: [transfer.json](transfer.json).", ""]
    target = docs / "transfer.md"
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, target)
    return target


def findings(result: dict[str, Any]) -> list[str]:
    """Plain statements computed from the numbers (no claim the numbers do not carry)."""
    out = []
    for name, label in TEXT_TASKS.items():
        t, s = result[name]
        lt, ls = t["after"].get("val/loss"), s["after"].get("val/loss")
        bt, bs = t["before"].get("val/loss"), s["before"].get("val/loss")
        diff = (ls - lt) / ls * 100 if lt is not None and ls else 0.0
        verdict = "lower (better)" if lt < ls else "higher (worse)" if lt > ls else "equal"
        out.append(f"{label}: after {t['steps']} steps the transferred core's validation loss is {lt:.3f} vs "
                   f"{ls:.3f} from scratch ({verdict}, {abs(diff):.1f}% {'below' if diff > 0 else 'above'}); "
                   f"at step 0 they were {bt:.3f} vs {bs:.3f}.")
        if t.get("judge") and s.get("judge"):
            out.append(f"{label}: greedy answers judged correct (valid completion of the givens): "
                       f"{t['judge']['accuracy'] * t['judge']['n']:.0f}/{t['judge']['n']} (transfer) vs "
                       f"{s['judge']['accuracy'] * s['judge']['n']:.0f}/{s['judge']['n']} (scratch).")
            why = {r["run"].rsplit("-", 1)[-1]: r["judge"].get("reasons") for r in (t, s)}
            if all(why.values()):
                out.append(f"{label}: judge verdicts by reason: " + "; ".join(
                    f"{k}: " + ", ".join(f"{n} × {reason!r}" for reason, n in v.items()) for k, v in why.items())
                    + " ('sudoku answer' = not 81 cells of 1-9, i.e. the wrong format).")
    out.append("Wall-clock times in transfer.json are not comparable between runs: other jobs shared the CPU.")
    out.append("One seed per run and no measured seed-to-seed spread, on a model and budget far below the published "
               "ones: small differences are not established by this run; it shows the tooling working end to end and "
               "the direction at this scale only.")
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def _command(values: dict[str, Any], parser: argparse.ArgumentParser) -> str:
    """The command line that reproduces a run (only the options that differ from the defaults)."""
    skip = ("out_dir", "docs_dir", "report_only")
    extra = " ".join(f"--{k} {v}" for k, v in values.items() if k not in skip and v != parser.get_default(k))
    return f"PYTHONPATH=. .venv/bin/python benchmarks/transfer_experiment.py {extra}".strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default="runs/transfer/cpu")
    parser.add_argument("--docs_dir", default=str(ROOT / "docs" / "experiments"))
    parser.add_argument("--puzzles", type=int, default=2000, help="training Sudoku (symbolic and text)")
    parser.add_argument("--test_puzzles", type=int, default=100)
    parser.add_argument("--gsm_questions", type=int, default=2000)
    parser.add_argument("--vocab", type=int, default=1024, help="BPE vocabulary of the text tasks")
    parser.add_argument("--symbolic_steps", type=int, default=100)
    parser.add_argument("--text_steps", type=int, default=100)
    parser.add_argument("--eval_puzzles", type=int, default=20, help="Sudoku-as-text answers judged per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report_only", action="store_true",
                        help="rewrite transfer.md from an existing transfer.json (no training)")
    args = parser.parse_args()
    if args.report_only:
        result = json.loads((Path(args.docs_dir) / "transfer.json").read_text())
        for r in result["sudoku-text"]:  # verdict reasons from the run's predictions, when they are still there
            predictions = Path(args.out_dir) / r["run"] / "eval" / "predictions.jsonl"
            if r.get("judge") and "reasons" not in r["judge"] and predictions.is_file():
                r["judge"]["reasons"] = judge_reasons(predictions)
        result["findings"] = findings(result)
        result["command"] = result.get("command") or _command(result["args"], parser)
        _write_json(Path(args.docs_dir) / "transfer.json", result)
        print(f"wrote {write_report(Path(args.docs_dir), result, result['command'])}")
        return

    import torch

    torch.set_num_threads(args.threads)
    start, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out, docs = Path(args.out_dir).absolute(), Path(args.docs_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = build_data(out, args)
    print(f"data ready in {time.perf_counter() - start:.0f} s", flush=True)
    symbolic = train_symbolic(out, paths, args.symbolic_steps)
    print(f"symbolic: {json.dumps({k: v for k, v in symbolic.items() if k != 'metrics'})}", flush=True)
    result: dict[str, Any] = {"symbolic": symbolic, "vocab": args.vocab, "args": vars(args),
                              "machine": f"{platform.machine()} CPU, torch threads {args.threads}",
                              "date": started, "figures": {}}
    for name, label in TEXT_TASKS.items():
        result[name] = [train_text(out, name, paths[name], init, args.text_steps, args.eval_puzzles)
                        for init in (symbolic["ckpt"], None)]
        for r in result[name]:
            print(f"{r['run']}: {json.dumps({k: v for k, v in r.items() if k != 'metrics'})}", flush=True)
        result["figures"][name] = _curves(result[name], "val/loss", f"{label}: validation loss, transfer vs scratch",
                                          docs / f"transfer-{name}.png")
    result["total_min"] = (time.perf_counter() - start) / 60
    result["findings"] = findings(result)
    result["command"] = _command(vars(args), parser)
    docs.mkdir(parents=True, exist_ok=True)
    _write_json(docs / "transfer.json", result)
    print(f"wrote {write_report(docs, result, result['command'].strip())}")


if __name__ == "__main__":
    main()

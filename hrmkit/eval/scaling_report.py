"""The report of ``hrmkit eval scaling``: ``scaling.json``, a Markdown table (``scaling.md``) and PNG charts.

Charts are drawn with :func:`hrmkit.pictures.charts.render_chart` (Pillow only, like ``hrmkit plot``):

* ``accuracy_vs_depth.png``: accuracy against segments (text: cycles) at width 1, one line per tag, plus the
  overall accuracy, the halting head's early-exit accuracy and the token accuracy;
* ``accuracy_vs_width.png`` (widths > 1): voted and any-of-N accuracy against samples at the deepest setting;
* ``accuracy_vs_compute.png``: accuracy against App. A FLOPs per example, depth and width on one FLOP axis;
* ``arc_pass_at_k_vs_depth.png`` (ARC): voted pass@K against segments under both scoring conventions.

The accuracy drawn is the dataset judge's where the dataset has one (maze: any shortest path), else exact match.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hrmkit.eval.arc import write_json_atomic
from hrmkit.eval.arc_runner import _finite
from hrmkit.pictures.charts import Series, render_chart

JSON_FILE = "scaling.json"
TABLE_FILE = "scaling.md"


def headline(result: dict[str, Any]) -> str:
    """The accuracy a result's charts draw: ``accuracy`` (text), ``judge_acc`` (judged datasets), else exact."""
    if result["kind"] == "text":
        return "accuracy"
    return "judge_acc" if result.get("judge") else "exact_acc"


def depth_key(result: dict[str, Any]) -> str:
    return "cycles" if result["kind"] == "text" else "segments"


def write_report(report: dict[str, Any], out_dir: str | Path) -> list[str]:
    """Write the JSON, the table and every chart that has data; return the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [str(out / JSON_FILE), str(out / TABLE_FILE)]
    (out / TABLE_FILE).write_text(markdown_table(report))
    for name, draw in CHARTS.items():
        image = draw(report["checkpoints"])
        if image is not None:
            image.save(out / name)
            files.append(str(out / name))
    write_json_atomic(_finite({**report, "files": files}), out / JSON_FILE)
    return files


# ---------------------------------------------------------------------------------------------------------- table
def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Column names and formatted cells of one checkpoint's result (one row per setting)."""
    pct = lambda v: "" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    if result["kind"] == "text":
        cols = ["cycles", "accuracy", "core passes", "GFLOP/example", "seconds"]
        rows = [[f"{r['cycles']}{'*' if r['cycles'] == result['trained_depth'] else ''}", pct(r["accuracy"]),
                 str(r["core_passes"]), f"{r['flops_per_example'] / 1e9:.3g}", f"{r['seconds']:.1f}"]
                for r in result["rows"]]
        return cols, rows
    tags = result["tags"]
    wide = any(r["samples"] > 1 for r in result["rows"])
    judged = bool(result.get("judge"))
    arc = result.get("pass_ks")
    cols = ["segments", "samples", "exact", "token", "exact@halt", "segments@halt", "q_halt acc"]
    cols += ["any-of-N"] if wide else []
    cols += ["judged", "judged@halt"] if judged else []
    cols += [f"pass@{k} task/fraction" for k in arc] if arc else []
    cols += [f"exact {t}" for t in tags] if len(tags) > 1 else []
    cols += ["GFLOP/example", "seconds"]
    rows = []
    for r in result["rows"]:
        mark = "*" if r["segments"] == result["eval_segments"] else ""
        cells = [f"{r['segments']}{mark}", str(r["samples"]), pct(r["exact_acc"]), pct(r["token_acc"]),
                 pct(r["exact_acc_halted"]), f"{r['segments_halted']:.2f}", pct(r["q_halt_acc"])]
        cells += [pct(r.get("exact_acc_any", r["exact_acc"]))] if wide else []
        cells += [pct(r["judge_acc"]), pct(r["judge_acc_halted"])] if judged else []
        if arc:
            cells += [f"{pct(r['pass_at_k']['task'][f'pass@{k}'])} / {pct(r['pass_at_k']['fraction'][f'pass@{k}'])}"
                      for k in arc]
        if len(tags) > 1:
            cells += [pct(r["per_tag"].get(t, {}).get("exact_acc")) for t in tags]
        cells += [f"{r['flops_per_example'] / 1e9:.3g}", f"{r['seconds']:.1f}"]
        rows.append(cells)
    return cols, rows


def _title(result: dict[str, Any]) -> str:
    if result["kind"] == "text":
        return (f"{result['name']}: {result['examples']} {result['scorer']} questions, depth = {result['depth_attr']} "
                f"(* trained: {result['trained_depth']})")
    return (f"{result['name']}: {result['examples']} {result['dataset']} test examples (* eval_segments "
            f"{result['eval_segments']}; vote {result['vote']}"
            + (f"; judge {result['judge']}" if result.get("judge") else "") + ")")


def markdown_table(report: dict[str, Any]) -> str:
    parts = []
    for result in report["checkpoints"]:
        cols, rows = table_rows(result)
        lines = [f"### {_title(result)}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    for result in report["checkpoints"]:
        cols, rows = table_rows(result)
        table = Table(title=_title(result))
        for col in cols:
            table.add_column(col, justify="right")
        for cells in rows:
            table.add_row(*cells)
        console.print(table)


# --------------------------------------------------------------------------------------------------------- charts
def _prefix(results: list[dict[str, Any]], result: dict[str, Any]) -> str:
    return f"{result['name']}: " if len(results) > 1 else ""


def _chart(series: Series, title: str, x_label: str):
    """The chart of ``series`` (None when empty), x on a base-2 log axis when it spans 8x or more (1, 2, 4, …)."""
    if not series:
        return None
    xs = [x for pts in series.values() for x, _ in pts]
    log2 = bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 8
    return render_chart(series, title, x_label=x_label, log_x=2 if log2 else None)


def depth_chart(results: list[dict[str, Any]]):
    series: Series = {}
    for result in results:
        p, key, metric = _prefix(results, result), depth_key(result), headline(result)
        rows = [r for r in result["rows"] if r["samples"] == 1]
        if result["kind"] == "puzzle":
            if len(result["tags"]) > 1:
                for tag in result["tags"]:
                    pts = [(r[key], r["per_tag"][tag][metric]) for r in rows if tag in r["per_tag"]]
                    if pts:
                        series[f"{p}{tag}"] = pts
            series[f"{p}all"] = [(r[key], r[metric]) for r in rows]
            series[f"{p}all, halting head"] = [(r[key], r[f"{metric}_halted"]) for r in rows]
            series[f"{p}all, token accuracy"] = [(r[key], r["token_acc"]) for r in rows]
        else:
            series[f"{p}accuracy"] = [(r[key], r[metric]) for r in rows]
    label = "segments" if all(r["kind"] == "puzzle" for r in results) else "depth (segments / cycles)"
    return _chart(series, "Accuracy against reasoning depth (width 1)", label)


def width_chart(results: list[dict[str, Any]]):
    series: Series = {}
    for result in results:
        if result["kind"] != "puzzle" or len(result["samples"]) < 2:
            continue
        p, metric, deepest = _prefix(results, result), headline(result), result["segments"][-1]
        rows = [r for r in result["rows"] if r["segments"] == deepest]
        series[f"{p}voted ({deepest} seg)"] = [(r["samples"], r[metric]) for r in rows]
        series[f"{p}any-of-N ({deepest} seg)"] = [(r["samples"], r.get("exact_acc_any", r["exact_acc"]))
                                                 for r in rows]
    return _chart(series, "Accuracy against width (sampled trajectories)", "samples N")


def compute_chart(results: list[dict[str, Any]]):
    series: Series = {}
    for result in results:
        p, metric = _prefix(results, result), headline(result)
        widths = sorted({r["samples"] for r in result["rows"]})
        for n in widths:
            pts = [(r["flops_per_example"], r[metric]) for r in result["rows"] if r["samples"] == n]
            series[f"{p}depth, N={n}" if len(widths) > 1 else f"{p}depth"] = pts
        if len(widths) > 1:
            deepest = max(r["segments"] for r in result["rows"])
            series[f"{p}width, {deepest} seg"] = [(r["flops_per_example"], r[metric]) for r in result["rows"]
                                                  if r["segments"] == deepest]
    if not any(x > 0 for pts in series.values() for x, _ in pts):
        return None
    return render_chart(series, "Accuracy against test-time compute", x_label="App. A FLOPs per example",
                        log_x=10)


def arc_chart(results: list[dict[str, Any]]):
    series: Series = {}
    for result in results:
        if not result.get("pass_ks"):
            continue
        p = _prefix(results, result)
        rows = [r for r in result["rows"] if r["samples"] == 1]
        for k in result["pass_ks"]:
            for scoring in ("task", "fraction"):
                series[f"{p}pass@{k} ({scoring})"] = [(r["segments"], r["pass_at_k"][scoring][f"pass@{k}"])
                                                     for r in rows]
    return _chart(series, "ARC voted pass@K against reasoning depth", "segments")


CHARTS: dict[str, Callable[[list[dict[str, Any]]], Any]] = {
    "accuracy_vs_depth.png": depth_chart, "accuracy_vs_width.png": width_chart,
    "accuracy_vs_compute.png": compute_chart, "arc_pass_at_k_vs_depth.png": arc_chart,
}

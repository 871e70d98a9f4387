"""PNG line charts with Pillow only: read Lightning ``CSVLogger`` files, stitch resumed runs, draw one chart.

Why Pillow: it is already a dependency (:mod:`hrmkit.pictures.boards`), while matplotlib would add a heavy optional
one for a handful of line charts. ``hrmkit plot`` (:mod:`hrmkit.commands.plot`) picks which series go on which chart.

Lightning writes sparse rows (train, validation and callback rows carry different columns), so each series keeps
only the rows where its column has a finite number, drawn against the ``step`` column.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from pathlib import Path

#: Every chart's size in pixels.
CHART_SIZE = (960, 540)
#: The plot area inside a chart: (left, top, right, bottom); the legend sits right of it.
PLOT_BOX = (78, 44, 740, 488)
#: Most series one chart draws (the first ones by name order); the legend says how many were left out.
MAX_SERIES = 24
#: Most points drawn per series (longer series are thinned evenly, the last point kept).
MAX_POINTS = 2000
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (0, 0, 128), (128, 0, 0),
)
_GRID = (225, 225, 225)
_AXIS = (60, 60, 60)
_TEXT = (20, 20, 20)
_BACKGROUND = (255, 255, 255)

Series = dict[str, list[tuple[float, float]]]


_VERSION = re.compile(r"version_(\d+)")
_PART = re.compile(r"metrics\.part-(\d+)\.csv")


def _segment_key(path: Path) -> tuple:
    """Order of a run's segments: logger version, then earlier parts, then the live ``metrics.csv``."""
    version = _VERSION.fullmatch(path.parent.name)
    part = _PART.fullmatch(path.name)
    return (int(version[1]) if version else -1, int(part[1]) if part else float("inf"))


def stitch_runs(files: Sequence[Path]) -> list[tuple[Path, Series]]:
    """Group metrics files into runs (see :func:`plot`) and stitch each run's segments; ``(first file, series)``."""
    groups: dict[Path, list[Path]] = {}
    for f in files:
        key = f.parent.parent if _VERSION.fullmatch(f.parent.name) else f.parent
        groups.setdefault(key, []).append(f)
    runs: list[tuple[Path, Series]] = []
    for key in sorted(groups):
        current: tuple[Path, Series, float] | None = None
        for f in sorted(groups[key], key=_segment_key):
            series = read_metrics(f)
            steps = [x for pts in series.values() for x, _ in pts]
            if not steps:
                continue
            start = min(steps)
            trains = any(k.startswith("train") for k in series)  # validate/test runs stand alone
            if current is not None and trains and start > current[2]:
                merged = {k: [p for p in pts if p[0] < start] for k, pts in current[1].items()}
                for k, pts in series.items():
                    merged.setdefault(k, []).extend(pts)
                current = (current[0], {k: v for k, v in merged.items() if v}, start)
                continue
            if current is not None:
                runs.append(current[:2])
            current = (f, series, start)
        if current is not None:
            runs.append(current[:2])
    return runs


def read_metrics(path: str | Path) -> Series:
    """Column name → ``[(step, value), ...]`` with the finite numeric cells of a Lightning ``metrics.csv``."""
    series: Series = {}
    with open(path, newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            step = _number(row.get("step"))
            x = float(i) if step is None else step
            for key, cell in row.items():
                if key in (None, "step", "epoch"):
                    continue
                value = _number(cell)
                if value is not None:
                    series.setdefault(key, []).append((x, value))
    return series


def _number(cell: str | None) -> float | None:
    if cell is None or cell == "":
        return None
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------------------------------------- drawing
def render_chart(series: Series, title: str, x_label: str = "step", log_y: bool | None = False,
                 log_x: int | None = None):
    """A ``PIL.Image`` line chart of ``name → [(x, y)]`` with axes, ticks, grid and legend.

    ``log_y=None`` picks a log scale when every value is positive and they span more than 100x. ``log_x`` (a base,
    e.g. 2 for segment counts, 10 for FLOPs) puts x on that log scale, ticked at the base's whole powers.
    """
    Image, ImageDraw = _pil()
    shown = dict(list(series.items())[:MAX_SERIES])
    if log_x:
        shown = {k: [(math.log(x, log_x), y) for x, y in pts if x > 0] for k, pts in shown.items()}
    points = [p for pts in shown.values() for p in pts]
    if log_y is None:
        ys = [y for _, y in points]
        log_y = bool(ys) and min(ys) > 0 and max(ys) / min(ys) > 100
    if log_y:
        shown = {k: [(x, math.log10(y)) for x, y in pts if y > 0] for k, pts in shown.items()}
        points = [p for pts in shown.values() for p in pts]
    img = Image.new("RGB", CHART_SIZE, _BACKGROUND)
    draw = ImageDraw.Draw(img)
    font, small = _font(15), _font(12)
    left, top, right, bottom = PLOT_BOX
    draw.text((left, 12), title + (" (log scale)" if log_y else ""), fill=_TEXT, font=font)
    if not points:
        draw.text((left + 10, top + 10), "no data", fill=_TEXT, font=font)
        return img
    x0, x1 = _span([x for x, _ in points])
    y0, y1 = _span([y for _, y in points])
    pad = 0.05 * (y1 - y0)  # keep flat series off the frame
    y0, y1 = y0 - pad, y1 + pad
    x_ticks = [t for t in nice_ticks(x0, x1) if x0 <= t <= x1]
    whole = [t for t in x_ticks if float(t).is_integer()]
    if log_x:  # whole powers of the base where the span has two of them
        x_ticks = whole if len(whole) >= 2 else x_ticks
    elif all(float(x).is_integer() for x, _ in points):  # steps: no fractional ticks
        x_ticks = whole
    if log_y and math.floor(y1) - math.ceil(y0) >= 1:  # whole decades
        y_ticks = [float(t) for t in range(math.ceil(y0), math.floor(y1) + 1)]
    else:
        y_ticks = [t for t in nice_ticks(y0, y1) if y0 <= t <= y1]

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)

    for t in x_ticks:
        draw.line([(px(t), top), (px(t), bottom)], fill=_GRID)
        label = _fmt(log_x ** t) if log_x else _fmt(t)
        draw.line([(px(t), bottom), (px(t), bottom + 5)], fill=_AXIS)
        draw.text((px(t) - draw.textlength(label, font=small) / 2, bottom + 8), label, fill=_TEXT, font=small)
    for t in y_ticks:
        draw.line([(left, py(t)), (right, py(t))], fill=_GRID)
        label = _fmt(10 ** t) if log_y else _fmt(t)
        draw.line([(left - 5, py(t)), (left, py(t))], fill=_AXIS)
        draw.text((left - 8 - draw.textlength(label, font=small), py(t) - 7), label, fill=_TEXT, font=small)
    draw.rectangle([left, top, right, bottom], outline=_AXIS)
    x_label += " (log scale)" if log_x else ""
    draw.text(((left + right) / 2 - draw.textlength(x_label, font=small) / 2, bottom + 28), x_label, fill=_TEXT,
              font=small)

    for i, (name, pts) in enumerate(shown.items()):
        colour = PALETTE[i % len(PALETTE)]
        xy = [(px(x), py(y)) for x, y in _thin(sorted(pts))]
        if len(xy) == 1:
            cx, cy = xy[0]
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
        elif xy:
            draw.line(xy, fill=colour, width=2)
        ly = top + 4 + 18 * i
        draw.line([(right + 14, ly + 7), (right + 38, ly + 7)], fill=colour, width=3)
        draw.text((right + 44, ly), _clip(name, 26), fill=_TEXT, font=small)
    if len(series) > MAX_SERIES:
        draw.text((right + 14, top + 4 + 18 * len(shown)), f"+{len(series) - MAX_SERIES} more", fill=_TEXT,
                  font=small)
    return img


def nice_ticks(low: float, high: float, target: int = 6) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 × 10^k apart) covering ``[low, high]`` with about ``target`` ticks."""
    if not high > low:
        raise ValueError(f"nice_ticks needs low < high, got {low}, {high}")
    raw = (high - low) / max(1, target - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(low / step + 1e-9)
    ticks = []
    for i in range(first, first + 10 * target + 2):
        ticks.append(round(i * step, 12))
        if i * step >= high - step * 1e-9:
            break
    return ticks


def _span(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi > lo:
        return lo, hi
    pad = abs(lo) * 0.1 or 1.0
    return lo - pad, hi + pad


def _thin(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(pts) <= MAX_POINTS:
        return pts
    stride = len(pts) / (MAX_POINTS - 1)
    return [pts[int(i * stride)] for i in range(MAX_POINTS - 1)] + [pts[-1]]


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e7:
        return str(int(value))
    if value != 0 and (abs(value) >= 1e7 or abs(value) < 1e-3):
        return f"{value:.2g}"
    return f"{value:.4g}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _pil():
    try:
        from PIL import Image, ImageDraw
    except ImportError as e:
        raise ModuleNotFoundError("hrmkit.pictures.charts needs Pillow: pip install pillow") from e
    return Image, ImageDraw


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()

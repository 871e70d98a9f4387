"""``hrmkit plot``: PNG line charts of training runs from Lightning ``CSVLogger`` files.

The drawing lives in :mod:`hrmkit.pictures.charts`; this module picks the charts. Each ``metrics.csv`` found under
the run directory gives up to eight charts, each read from the documented metric names (docs/cli.md, "Trackers"),
so TensorBoard, W&B and MLflow show the same series:

* ``loss.png``: every column whose name contains ``loss`` (train and val);
* ``accuracy.png``: every column whose name contains ``acc``;
* ``magicnorm_rms.png``: the MagicNormHealth per-call state RMS (``magicnorm/rms/<call>``);
* ``magicnorm_grad_norm.png``: its per-call gradient norms (log scale when they span more than 100x);
* ``recursion.png``: ``train/bp_steps`` (DeepCreditWarmup), ``train/segments`` and ``act/mean_segments`` (ACT);
* ``halting.png``: ``train/halted_frac`` and ``act/halted_frac``;
* ``learning_rate.png``: ``lr/*`` (LearningRates: both optimizers of a puzzle task);
* ``throughput.png``: ``perf/tokens_per_s`` and ``perf/samples_per_s`` (Throughput).

Lightning writes sparse rows (train, validation and callback rows carry different columns), so each series keeps
only the rows where its column has a finite number, drawn against the ``step`` column.
"""

from __future__ import annotations

import re
from pathlib import Path

from hrmkit.pictures.charts import Series, render_chart, stitch_runs

#: The series of the recursion, halting and throughput charts (names written by the task and hrmkit.callbacks).
RECURSION_FIGURES = ("train/bp_steps", "train/segments", "act/mean_segments")
HALTING_FIGURES = ("train/halted_frac", "act/halted_frac")
THROUGHPUT_FIGURES = ("perf/tokens_per_s", "perf/samples_per_s")


def plot(run_dir: str, out_dir: str | None = None) -> list[str]:
    """Render the charts listed in the module docstring for every ``metrics.csv`` under ``run_dir``.

    A run resumed with ``--ckpt_path`` is drawn as one continuous curve: its earlier segments (``metrics.part-<k>.csv``
    beside ``metrics.csv`` in the same version folder, and, for runs logged before hrmkit continued versions, the
    ``version_N`` folders of the same logger) are stitched in order, each later segment replacing the earlier
    points from its first step on. A segment that starts no later than the previous one is a new run, and a
    ``validate``/``test`` log (no ``train`` column) stands alone: charts of their own.

    Args:
        run_dir: a directory searched recursively for Lightning ``CSVLogger`` ``metrics.csv`` files (one run's
            version folder or a whole tree of runs), or one ``metrics.csv`` file.
        out_dir: where the PNGs go. Default: a ``plots`` folder next to each run's first ``metrics`` file. When
            given and several runs are found, each gets a sub-folder named after its path relative to ``run_dir``.

    Returns:
        The paths of the PNGs written, in order.
    """
    root = Path(run_dir)
    if root.is_file():
        files, root = [root], root.parent
    elif root.is_dir():
        files = sorted([*root.rglob("metrics.csv"), *root.rglob("metrics.part-*.csv")])
    else:
        raise FileNotFoundError(f"hrmkit plot: {run_dir} does not exist")
    if not files:
        raise FileNotFoundError(f"hrmkit plot: no metrics.csv under {run_dir} (is the run logged with CSVLogger?)")
    runs = stitch_runs(files)
    written: list[str] = []
    for first, series in runs:
        rel = first.parent.relative_to(root)
        if out_dir is None:
            target = first.parent / "plots"
        else:
            target = Path(out_dir) if len(runs) == 1 or rel == Path(".") else Path(out_dir) / "_".join(rel.parts)
        written += _plot_series(series, target)
    return written


def _plot_series(series: Series, out: Path) -> list[str]:
    charts = [
        ("loss.png", "Loss", _select(series, lambda k: "loss" in k.lower()), False),
        ("accuracy.png", "Accuracy", _select(series, lambda k: "acc" in k.lower()), False),
        ("magicnorm_rms.png", "MagicNorm: state RMS per call",
         _select(series, lambda k: k.startswith("magicnorm/rms/"), strip="magicnorm/rms/"), False),
        ("magicnorm_grad_norm.png", "MagicNorm: gradient norm per call",
         _select(series, lambda k: k.startswith("magicnorm/grad_norm/"), strip="magicnorm/grad_norm/"), None),
        ("recursion.png", "Recursion: backprop calls and ACT segments",
         _select(series, lambda k: k in RECURSION_FIGURES), False),
        ("halting.png", "ACT: fraction halted", _select(series, lambda k: k in HALTING_FIGURES), False),
        ("learning_rate.png", "Learning rates", _select(series, lambda k: k.startswith("lr/"), strip="lr/"), None),
        ("throughput.png", "Throughput (per second)",
         _select(series, lambda k: k in THROUGHPUT_FIGURES, strip="perf/"), None),
    ]
    written = []
    for name, title, chosen, log_y in charts:
        if not chosen:
            continue
        out.mkdir(parents=True, exist_ok=True)
        target = out / name
        render_chart(chosen, title, log_y=log_y).save(target)
        written.append(str(target))
    return written


def _select(series: Series, keep, strip: str = "") -> Series:
    names = sorted((k for k in series if keep(k)), key=_natural)
    return {k[len(strip):] if strip and k.startswith(strip) else k: series[k] for k in names}


def _natural(name: str) -> list:
    """Sort key: train before val, then digits numerically (L2 < L10)."""
    split = 0 if name.startswith("train") else 1 if name.startswith("val") else 2
    return [split] + [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]

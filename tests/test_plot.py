"""hrmkit plot: Lightning CSVLogger files → loss / accuracy / MagicNorm PNG charts (Pillow only)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hrmkit.commands.plot import plot
from hrmkit.pictures.charts import CHART_SIZE, PALETTE, PLOT_BOX, nice_ticks, read_metrics

COLUMNS = ["epoch", "step", "train/loss", "train/token_acc", "val/loss", "val/exact_acc", "magicnorm/rms/L0",
           "magicnorm/rms/H0", "magicnorm/rms_ratio_last_first"]


def _fake_run(path: Path, steps: int = 200, with_magicnorm: bool = True) -> Path:
    """A metrics.csv laid out as Lightning writes it: sparse train, validation and callback rows."""
    path.mkdir(parents=True)
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        for s in range(0, steps, 5):
            w.writerow({"epoch": 0, "step": s, "train/loss": 2 * math.exp(-s / 60) + 0.05 * math.sin(s),
                        "train/token_acc": 1 - math.exp(-s / 50)})
            if s % 50 == 45:
                w.writerow({"epoch": 0, "step": s, "val/loss": 2 * math.exp(-s / 70) + 0.2,
                            "val/exact_acc": 1 - math.exp(-s / 90)})
            if with_magicnorm and s % 10 == 0:
                w.writerow({"step": s, "magicnorm/rms/L0": 1 + 0.01 * math.sin(s), "magicnorm/rms/H0": 0.99,
                            "magicnorm/rms_ratio_last_first": 0.99})
        w.writerow({"step": steps, "train/loss": "nan"})  # non-finite cells are skipped
    return path / "metrics.csv"


def _plot_area(path: str) -> np.ndarray:
    img = Image.open(path)
    assert img.size == CHART_SIZE
    left, top, right, bottom = PLOT_BOX
    return np.asarray(img.convert("RGB"))[top + 2:bottom - 1, left + 2:right - 1]


def test_charts_exist_have_the_size_and_show_the_series(tmp_path):
    _fake_run(tmp_path / "lightning_logs" / "version_0")
    written = plot(str(tmp_path))
    names = [Path(p).name for p in written]
    assert names == ["loss.png", "accuracy.png", "magicnorm_rms.png"]
    assert all(Path(p).parent == tmp_path / "lightning_logs" / "version_0" / "plots" for p in written)
    for path in written:
        area = _plot_area(path)
        assert area.reshape(-1, 3).var(axis=0).sum() > 0
        for colour in PALETTE[:2]:  # both series of each chart are drawn inside the plot area
            assert (area == colour).all(axis=-1).sum() > 50, (path, colour)


def test_read_metrics_keeps_finite_cells_per_column(tmp_path):
    series = read_metrics(_fake_run(tmp_path / "run"))
    assert len(series["train/loss"]) == 40 and len(series["val/loss"]) == 4
    assert series["val/loss"][0][0] == 45.0
    assert "step" not in series and "epoch" not in series


def test_out_dir_with_several_runs_and_errors(tmp_path):
    _fake_run(tmp_path / "runs" / "a" / "version_0", with_magicnorm=False)
    _fake_run(tmp_path / "runs" / "b" / "version_0")
    written = plot(str(tmp_path / "runs"), out_dir=str(tmp_path / "out"))
    assert sorted(str(Path(p).relative_to(tmp_path / "out")) for p in written) == [
        "a_version_0/accuracy.png", "a_version_0/loss.png", "b_version_0/accuracy.png", "b_version_0/loss.png",
        "b_version_0/magicnorm_rms.png"]
    single = plot(str(tmp_path / "runs" / "a" / "version_0" / "metrics.csv"), out_dir=str(tmp_path / "one"))
    assert [Path(p).parent for p in single] == [tmp_path / "one"] * 2
    with pytest.raises(FileNotFoundError, match="no metrics.csv"):
        plot(str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot(str(tmp_path / "missing"))


def test_nice_ticks():
    assert nice_ticks(0, 300_000) == [0, 100_000, 200_000, 300_000]
    assert nice_ticks(-0.3, 2.2) == pytest.approx([-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    assert nice_ticks(0.98, 1.02) == pytest.approx([0.98, 0.99, 1.0, 1.01, 1.02])
    with pytest.raises(ValueError):
        nice_ticks(1.0, 1.0)

"""PredictionWriter: ``hrmkit predict`` results as one JSONL or CSV file next to the run.

Each ``predict_step`` of an hrmkit task returns a dict of per-example columns (tensors or lists with the batch as
the first dimension, plus an optional ``valid`` mask for the padded rows of an evaluation batch). The writer turns
every valid row into one record and appends it to ``<dir>/predictions-<checkpoint>.jsonl`` (or ``.csv``), written to
a temporary file and renamed into place when prediction ends, so an interrupted run never leaves a half file under
the final name.

``<dir>`` defaults to the run the checkpoint belongs to: ``runs/x`` for ``runs/x/checkpoints/last.ckpt``, the
checkpoint's own folder otherwise, and the Trainer's ``default_root_dir`` without a checkpoint. A text dataset's
tokenizer (``datamodule.tokenizer_path``) decodes every ``*_ids`` column into a text column beside it.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

Format = Literal["jsonl", "csv"]


def _column(value: Any) -> list[Any]:
    """A batch column as a Python list of per-row values."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    return list(value)


def prediction_rows(prediction: dict[str, Any]) -> list[dict[str, Any]]:
    """Split one ``predict_step`` result into per-example records (rows with ``valid=False`` dropped)."""
    if not isinstance(prediction, dict):
        raise TypeError(f"PredictionWriter expects predict_step to return a dict of columns, got "
                        f"{type(prediction).__name__}")
    columns = {k: _column(v) for k, v in prediction.items()}
    valid = columns.pop("valid", None)
    sizes = {len(v) for v in columns.values()}
    if len(sizes) > 1:
        raise ValueError(f"predict_step returned columns of different lengths: "
                         f"{ {k: len(v) for k, v in columns.items()} }")
    n = sizes.pop() if sizes else 0
    return [{k: v[i] for k, v in columns.items()} for i in range(n) if valid is None or valid[i]]


def default_output_dir(trainer: L.Trainer) -> Path:
    """The run the checkpoint belongs to (``runs/x`` for ``runs/x/checkpoints/*.ckpt``), else default_root_dir."""
    ckpt = getattr(trainer, "ckpt_path", None)
    if ckpt and Path(ckpt).is_file():
        folder = Path(ckpt).resolve().parent
        return folder.parent if folder.name == "checkpoints" else folder
    return Path(trainer.default_root_dir)


class PredictionWriter(BasePredictionWriter):
    """Write every predicted example as a JSONL (default) or CSV record; ``hrmkit predict`` adds one by default."""

    def __init__(self, output_dir: str | None = None, format: Format = "jsonl", name: str | None = None) -> None:
        """
        Args:
            output_dir: folder for the file (default: the checkpoint's run folder, see the module docstring).
            format: ``jsonl`` (lists stay lists) or ``csv`` (lists become space-separated numbers).
            name: file name without extension (default ``predictions-<checkpoint stem>``, or ``predictions``).
        """
        super().__init__(write_interval="batch")
        if format not in ("jsonl", "csv"):
            raise ValueError(f"PredictionWriter.format must be 'jsonl' or 'csv', got {format!r}")
        self.output_dir = output_dir
        self.format = format
        self.name = name
        self.path: Path | None = None  # the file written by the last predict run
        self._tmp: Path | None = None
        self._handle: Any = None
        self._csv: csv.DictWriter | None = None
        self._decoder: Any = None
        self.rows = 0

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Lightning looks for a sampler to tell a writer which dataset indices each batch holds, and warns when the
        # loader has none. hrmkit's loaders batch in the main process (no sampler); records carry their own fields
        # (text: ``index``), so the lookup is not needed.
        warnings.filterwarnings("ignore", message=r"Couldn't infer the batch indices fetched from your dataloader")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = Path(self.output_dir) if self.output_dir else default_output_dir(trainer)
        ckpt = getattr(trainer, "ckpt_path", None)
        stem = self.name or (f"predictions-{Path(ckpt).stem}" if ckpt else "predictions")
        if trainer.world_size > 1:
            stem += f"-rank{trainer.global_rank}"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{stem}.{self.format}"
        self._tmp = folder / f".{stem}.{self.format}.tmp{os.getpid()}"
        self._handle = self._tmp.open("w", newline="", encoding="utf-8")
        self._csv = None
        self.rows = 0
        self._decoder = _decoder_for(getattr(trainer, "datamodule", None))

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        for row in prediction_rows(prediction):
            if self._decoder is not None:
                row = self._decoder(row)
            self._write(row)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._handle is None:
            return
        self._handle.close()
        self._handle = None
        os.replace(self._tmp, self.path)
        rank_zero_info(f"hrmkit: wrote {self.rows} predictions to {self.path}")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            self._tmp.unlink(missing_ok=True)

    # -- records --------------------------------------------------------------------------------------------------
    def _write(self, row: dict[str, Any]) -> None:
        if self.format == "jsonl":
            self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            flat = {k: " ".join(str(x) for x in v) if isinstance(v, list) else v for k, v in row.items()}
            if self._csv is None:
                self._csv = csv.DictWriter(self._handle, fieldnames=list(flat))
                self._csv.writeheader()
            self._csv.writerow(flat)
        self.rows += 1


def _decoder_for(datamodule: Any) -> Any:
    """A row transform adding decoded text next to every ``*_ids`` column, when the data has a tokenizer."""
    path = getattr(datamodule, "tokenizer_path", None)
    if not path:
        return None
    from hrmkit.data.text.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(path)

    def decode(row: dict[str, Any]) -> dict[str, Any]:
        out = dict(row)
        for key, value in row.items():
            if key.endswith("_ids") and isinstance(value, list):
                out[key[: -len("_ids")]] = tokenizer.decode(value)
        return out

    return decode


def add_default_writer(trainer: L.Trainer) -> PredictionWriter | None:
    """Give ``trainer`` a JSONL :class:`PredictionWriter` unless it already has a prediction writer (``hrmkit
    predict`` calls this, so predictions land on disk without a recipe change)."""
    if any(isinstance(cb, BasePredictionWriter) for cb in trainer.callbacks):
        return None
    writer = PredictionWriter()
    trainer.callbacks.append(writer)
    return writer

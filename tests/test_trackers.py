"""A tiny recipe logs hrmkit's figures to TensorBoard, MLflow (local file store) and CSV under the documented names,
read back from the files each tracker wrote; ``hrmkit plot`` draws the same names."""

from __future__ import annotations

from pathlib import Path

import pytest

from hrmkit.cli import main
from hrmkit.data.puzzles.sudoku import build_sudoku

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "tests/recipes/sudoku-hrm.yaml"
#: the callbacks of docs/cli.md "Trackers", every figure written at every step
FIGURE_CALLBACKS = [
    "--trainer.callbacks+=hrmkit.callbacks.MagicNormHealth", "--trainer.callbacks.every_n_steps=1",
    "--trainer.callbacks+=hrmkit.callbacks.DeepCreditWarmup", "--trainer.callbacks.max_steps=3",
    "--trainer.callbacks+=hrmkit.callbacks.ACTStats", "--trainer.callbacks.every_n_steps=1",
    "--trainer.callbacks+=hrmkit.callbacks.LearningRates", "--trainer.callbacks.every_n_steps=1",
    "--trainer.callbacks+=hrmkit.callbacks.Throughput", "--trainer.callbacks.every_n_steps=2",
]
#: documented names (docs/cli.md): one of each family, and the families by prefix
NAMES = {"train/loss", "train/bp_steps", "train/segments", "train/halted_frac", "act/halted_frac",
         "act/mean_segments", "lr/main", "lr/puzzle_emb", "perf/tokens_per_s", "perf/samples_per_s",
         "perf/step_time_s", "val/exact_acc"}
PREFIXES = ("magicnorm/rms/", "magicnorm/grad_norm/")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny fit that writes to TensorBoard, MLflow (file store) and CSV at once (``--trainer.logger+=``)."""
    root = tmp_path_factory.mktemp("trackers")
    build_sudoku(str(root / "data"), train_size=8, test_size=4, levels=["easy"], num_aug=2, seed=0)
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.x keeps the file store behind this switch
    uri = (root / "mlruns").as_uri()
    try:
        main(["fit", "-c", str(RECIPE), "--data.init_args.data_dir", str(root / "data"),
              "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1", *FIGURE_CALLBACKS,
              "--trainer.logger+=TensorBoardLogger", f"--trainer.logger.save_dir={root / 'tb'}",
              "--trainer.logger.name=run",
              "--trainer.logger+=MLFlowLogger", f"--trainer.logger.tracking_uri={uri}",
              "--trainer.logger.experiment_name=hrmkit-tiny", "--trainer.logger.run_name=sudoku",
              "--trainer.logger+=CSVLogger", f"--trainer.logger.save_dir={root / 'csv'}"])
    finally:
        mp.undo()
    return root, uri


def _check(names: set[str]) -> None:
    assert NAMES <= names, f"missing {sorted(NAMES - names)}"
    for prefix in PREFIXES:
        assert any(n.startswith(prefix) for n in names), f"no {prefix}* figure in {sorted(names)}"
    # MLflow's file store keeps each metric in a file at its name: no name may be a folder of another
    clashes = [(a, b) for a in names for b in names if b.startswith(a + "/")]
    assert not clashes, f"metric names that are folders of other names: {clashes}"


def test_tensorboard_event_files_hold_the_figures(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, _ = run
    (events,) = (root / "tb/run").rglob("events.out.tfevents.*")
    acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    _check(set(tags["scalars"]))
    assert "act/halted_at" in tags["histograms"]  # ACTStats' histogram of segments
    lr = [e.value for e in acc.Scalars("lr/puzzle_emb")]
    assert len(lr) >= 3 and all(v > 0 for v in lr)
    assert all(e.value > 0 for e in acc.Scalars("perf/tokens_per_s"))


def test_mlflow_file_store_holds_the_figures(run, monkeypatch):
    from mlflow.tracking import MlflowClient

    root, uri = run
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("hrmkit-tiny")
    (found,) = client.search_runs([experiment.experiment_id])
    _check(set(found.data.metrics))
    history = client.get_metric_history(found.info.run_id, "lr/main")
    assert [m.step for m in history] == sorted(m.step for m in history) and len(history) >= 3
    params = found.data.params
    assert params.get("model/init_args/halt_max_steps", params.get("halt_max_steps")) == "2", sorted(params)[:20]


def test_csv_and_hrmkit_plot_read_the_same_names(run):
    from hrmkit.commands.plot import plot
    from hrmkit.pictures.charts import read_metrics

    root, _ = run
    (metrics,) = (root / "csv").rglob("metrics.csv")
    _check(set(read_metrics(metrics)))
    written = {Path(p).name for p in plot(str(root / "csv"))}
    assert {"recursion.png", "halting.png", "learning_rate.png", "throughput.png", "magicnorm_rms.png",
            "magicnorm_grad_norm.png", "loss.png"} <= written


def test_throughput_counts_real_tokens_of_packed_text_and_puzzle_rows():
    import numpy as np
    import torch

    from hrmkit.callbacks.throughput import batch_counts
    from hrmkit.data.text.packing import pack_batch

    text = pack_batch([(np.arange(1, 6), 2), (np.arange(1, 4), 1)], tokens_per_batch=12, pad_id=0)
    tokens, samples = batch_counts(text)
    assert int(tokens) == 8 and samples == 2  # the 4-token padding tail is not counted
    assert batch_counts({"inputs": torch.zeros(4, 81, dtype=torch.long)}) == (324, 4)
    assert batch_counts([torch.zeros(2)]) == (0, 0)


def test_learning_rates_names_every_optimizer_group():
    import lightning.pytorch as pl
    import torch

    from hrmkit.callbacks.learning_rates import learning_rates

    class Two(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
            self.side = torch.optim.SGD(self.b.parameters(), lr=0.5)

        def extra_optimizers(self):
            return {"side": self.side}

    module = Two()
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy._lightning_optimizers = []
    trainer.optimizers = [torch.optim.AdamW([{"params": module.a.weight, "lr": 1e-3},
                                             {"params": module.a.bias, "lr": 2e-3}])]
    assert learning_rates(trainer, module) == {"lr/main/pg0": 1e-3, "lr/main/pg1": 2e-3, "lr/side": 0.5}

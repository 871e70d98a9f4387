"""The GRAM-style plugin (plugins/hrmkit-gram): installed, listed, through the shared core suite, and trained on
Sudoku by PuzzleTask through YAML alone with N sampled trajectories voted at evaluation."""

import csv
from pathlib import Path

import pytest
import torch

from hrmkit.cli import main
from hrmkit.cores import CORES, build_core
from hrmkit.data.puzzles.sudoku import build_sudoku
from hrmkit.tasks.puzzle import PuzzleTask
from hrmkit.testing import CoreCase, CoreContract

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "plugins/hrmkit-gram/recipe.yaml"


class TestGRAMContract(CoreContract):
    case = CoreCase("gram")


def test_plugin_is_installed_from_its_package_and_listed(capsys):
    assert "gram" in CORES.names(), "make venv installs plugins/hrmkit-gram into .venv (pip install -e)"
    entry = {e.name: e for e in CORES.entries()}["gram"]
    from hrmkit_gram import GRAM

    assert entry.source == "hrmkit-gram" and CORES.get("gram") is GRAM
    main(["cores"])
    out = capsys.readouterr().out
    assert " gram " in out and "hrmkit-gram" in out


def _batch(b=4, seq=81, vocab=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"inputs": torch.randint(1, vocab, (b, seq), generator=g),
            "labels": torch.randint(2, vocab, (b, seq), generator=g),
            "puzzle_identifiers": torch.zeros(b, dtype=torch.long)}


def _task(**kw) -> PuzzleTask:
    core_kw = kw.pop("core_kw", {})
    return PuzzleTask(build_core("gram", "tiny", max_seq_len=128, **core_kw), vocab_size=11, seq_len=81,
                      num_puzzle_identifiers=1, halt_max_steps=2, **kw)


def test_training_loss_is_the_elbo_reconstruction_plus_the_cores_kl():
    task = _task(halt_exploration_prob=0.0)
    with torch.no_grad():  # move the posterior away from the prior so the KL is not zero
        task.core.posterior.weight.normal_(0, 0.05)
    task.train()
    losses = []
    for weight in (1.0, 0.0):
        task.core.kl_weight = weight
        task.carry = None
        torch.manual_seed(3)
        losses.append(task.training_step(_batch(), 0))
    task.core.kl_weight = 1.0
    task.carry = None
    torch.manual_seed(3)  # the step's own first segment again (the bootstrap pass overwrote aux_losses)
    x = task.embed(_batch()["inputs"], _batch()["puzzle_identifiers"])
    task.segment(x, task.core.initial_state(x), task.embed_targets(_batch()["labels"]))
    kl = task.core.aux_losses["kl"]
    assert kl > 0 and kl.requires_grad
    torch.testing.assert_close(losses[0] - losses[1], kl.to(losses[0].dtype), rtol=1e-5, atol=1e-6)


def test_evaluation_samples_n_trajectories_and_votes_them():
    task = _task(num_samples=5, vote="answer", core_kw={"temperature": 20.0}).eval()
    batch = _batch(b=3)
    torch.manual_seed(0)
    r = task._evaluate(batch)
    samples = r["samples"]
    assert samples.shape == (5, 3, 81)
    assert not all(torch.equal(samples[0], s) for s in samples[1:]), "trajectories should differ"
    # the voted answer is one of the sampled answers, the most frequent one
    for j in range(3):
        counts = [(samples[:, j] == samples[i, j]).all(-1).sum().item() for i in range(5)]
        winners = {i for i, c in enumerate(counts) if c == max(counts)}
        assert any(torch.equal(r["pred"][j], samples[i, j]) for i in winners)
    assert (r["exact_any"] >= r["exact"]).all()
    assert torch.equal(r["exact_single"], ((samples[0] == batch["labels"]).all(-1)))


def test_num_samples_needs_a_stochastic_core():
    with pytest.raises(ValueError, match="num_samples=4 needs a stochastic core, but HRM is deterministic"):
        PuzzleTask(build_core("hrm", "tiny"), num_samples=4)
    with pytest.raises(ValueError, match="vote must be one of"):
        _task(num_samples=2, vote="mean")


def test_sudoku_recipe_trains_and_evaluates_with_sampled_trajectories(tmp_path, monkeypatch):
    data = tmp_path / "tiny-sudoku"
    build_sudoku(str(data), train_size=16, test_size=8, levels=["easy"], num_aug=1, seed=0)
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", str(RECIPE), "--data.init_args.data_dir", str(data), "--trainer.enable_model_summary",
          "false", "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", "logs"])
    (ckpt,) = tmp_path.rglob("*.ckpt")
    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    kl = [float(r["train/aux/kl"]) for r in rows if r.get("train/aux/kl")]
    assert len(kl) == 4 and all(v >= 0 for v in kl), "the ELBO's KL term is logged every training step"
    (val,) = [r for r in rows if r.get("val/exact_acc")]
    for key in ("val/exact_acc", "val/exact_acc_any", "val/exact_acc_single", "val/token_acc"):
        assert 0.0 <= float(val[key]) <= 1.0, key
    assert float(val["val/exact_acc_any"]) >= float(val["val/exact_acc"])
    model = PuzzleTask.load_from_checkpoint(ckpt)  # the plugin core reloads from the checkpoint
    assert type(model.core).__name__ == "GRAM" and model.hparams.num_samples == 4


def test_text_task_trains_a_stochastic_core_on_its_elbo():
    """TextTask honours the same extension points: targets reach the posterior in training, the KL joins the loss,
    and evaluation runs the prior (no targets, no KL)."""
    from hrmkit.data.text.packing import pack_batch
    from hrmkit.tasks.text import TextTask

    rng = torch.Generator().manual_seed(0)
    samples = [(torch.randint(3, 40, (n,), generator=rng).numpy(), p) for n, p in ((20, 8), (15, 5), (25, 10))]
    batch = pack_batch(samples, 64, pad_id=0)
    torch.manual_seed(0)
    task = TextTask(build_core("gram", "tiny", max_seq_len=64), vocab_size=40)
    with torch.no_grad():
        task.core.posterior.weight.normal_(0, 0.05)
    task.train()
    losses = []
    for weight in (1.0, 0.0):
        task.core.kl_weight = weight
        torch.manual_seed(3)
        losses.append(task.training_step(batch, 0))
    task.core.kl_weight = 1.0
    torch.manual_seed(3)
    r = task._step(batch)
    assert set(r["aux"]) == {"kl"} and r["aux"]["kl"] > 0 and r["aux"]["kl"].requires_grad
    torch.testing.assert_close(losses[0] - losses[1], r["aux"]["kl"].to(losses[0].dtype), rtol=1e-5, atol=1e-6)
    losses[0].backward()
    assert task.core.posterior.weight.grad is not None and task.core.posterior.weight.grad.abs().sum() > 0
    task.eval()
    with torch.no_grad():
        assert task._step(batch)["aux"].get("kl") is None  # the prior alone: nothing to regularise

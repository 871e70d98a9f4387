"""ARC evaluation of trained checkpoints: every augmented version of every test input, voted (spec §4.6).

:func:`evaluate_arc` is what ``hrmkit eval arc`` runs: it streams the dataset's test split (every version × every
example, :class:`hrmkit.data.PuzzleDataModule`'s evaluation loader), runs the model for a fixed number of
segments, undoes each version's augmentation and votes (:class:`hrmkit.eval.arc.ArcVoter`), then reports pass@K
under both scoring conventions and writes a Kaggle ``submission.json``.

The row collection (:func:`collect_votes`) takes any ``predict(batch) -> (pred, q_halt_logits)``, so the same code
path is exercised by the model and, in tests, by an oracle that answers with the labels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hrmkit.eval.arc import DEFAULT_PASS_KS, ArcVoter, Checkpoint, write_json_atomic

Predict = Callable[[dict[str, Tensor]], tuple[Tensor, Tensor]]
SCORINGS = ("task", "fraction")
SUBMISSION_FILE = "submission.json"
METRICS_FILE = "metrics.json"


def collect_votes(voter: ArcVoter, batches: Iterable[dict[str, Tensor]], predict: Predict,
                  checkpoint: Checkpoint = 0, device: torch.device | str = "cpu") -> int:
    """Feed ``voter`` every valid row of ``batches``: ``predict`` sees the whole (padded) batch on ``device`` and
    returns argmax tokens ``[B, L]`` and q_halt logits ``[B]``; padding rows (``valid=False``) cast no vote.

    Returns the number of votes added.
    """
    added = 0
    for i, batch in enumerate(batches):
        valid = batch["valid"].bool() if "valid" in batch else torch.ones(len(batch["inputs"]), dtype=torch.bool)
        if not valid.any():
            continue
        on_device = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            pred, q_halt = predict(on_device)
        if pred.shape != batch["inputs"].shape or q_halt.shape != valid.shape:
            raise ValueError(f"batch {i}: predict returned predictions {tuple(pred.shape)} and q_halt "
                             f"{tuple(q_halt.shape)} for inputs {tuple(batch['inputs'].shape)}")
        rows = valid.numpy()
        added += voter.add_sequences(batch["puzzle_identifiers"].numpy()[rows], batch["inputs"].numpy()[rows],
                                     pred.detach().cpu().numpy()[rows], q_halt.detach().float().cpu().numpy()[rows],
                                     checkpoint=checkpoint)
    return added


def model_predict(task: Any, segments: int | None = None) -> Predict:
    """``predict`` for :func:`collect_votes` from a :class:`hrmkit.tasks.PuzzleTask`: its evaluation pass
    (``segments`` segments from a fresh state, default the task's ``eval_segments``), the final segment's argmax and
    q_halt logit, as the reference evaluator records them."""
    if segments is not None and segments < 1:
        raise ValueError(f"segments must be >= 1, got {segments}")

    def predict(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return task.predict(batch["inputs"], batch["puzzle_identifiers"], segments)

    return predict


def _load_task(path: str, device: torch.device) -> Any:
    from hrmkit.loading import load
    from hrmkit.tasks.puzzle import PuzzleTask

    return load(path, PuzzleTask).to(device).eval()


def _check_sizes(task: Any, path: str, meta: Any, data_dir: str) -> None:
    for key in ("vocab_size", "seq_len", "num_puzzle_identifiers"):
        have, want = task.hparams.get(key), getattr(meta, key)
        if have != want:
            raise ValueError(f"checkpoint {path}: {key}={have} but {Path(data_dir) / 'metadata.json'} field {key!r} "
                             f"is {want}; evaluate on the dataset the model was trained on")


def _names(checkpoints: Sequence[str]) -> list[str]:
    """Short, unique vote keys: file names, or full paths when two files share a name."""
    short = [Path(c).name for c in checkpoints]
    names = short if len(set(short)) == len(short) else [str(c) for c in checkpoints]
    if len(set(names)) != len(names):
        raise ValueError(f"the same checkpoint is listed twice: {list(checkpoints)}")
    return names


def _scores(voter: ArcVoter, checkpoint: Checkpoint) -> dict[str, dict[str, float]]:
    return {s: {f"pass@{k}": v for k, v in voter.pass_at_k(s, checkpoint).items()} for s in SCORINGS}


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ARC pass@K: {result['num_tasks']} tasks, {result['num_test_inputs']} test inputs, "
                        f"{result['num_votes']} votes, {result['segments']} segments"
                        + (", pooled" if result["pooled"] and len(result["checkpoints"]) > 1 else ""))
    table.add_column("K", justify="right")
    table.add_column("all test inputs (HRM)", justify="right")
    table.add_column("fraction (TRM / ARC Prize)", justify="right")
    scores = result["pass_at_k"]
    for key in scores["task"]:
        table.add_row(key.removeprefix("pass@"), f"{100 * scores['task'][key]:.2f}%",
                      f"{100 * scores['fraction'][key]:.2f}%")
    Console().print(table)


def evaluate_arc(checkpoint: str | Sequence[str], data_dir: str, out_dir: str | None = None,
                 segments: int | None = None, batch_size: int = 64, pooled: bool = False,
                 pass_ks: Sequence[int] = DEFAULT_PASS_KS, device: str | None = None, num_workers: int = 0,
                 quiet: bool = False) -> dict[str, Any]:
    """Evaluate PuzzleTask checkpoints on an ARC dataset's test split with augmentation voting.

    Every stored version of every test example is solved; predictions are cropped, mapped back through the inverse
    augmentation and voted per test input (count, then mean sigmoid(q_halt)). pass@K is reported under both
    conventions: ``task`` (HRM: a task counts when all its test inputs are solved) and ``fraction`` (TRM / ARC Prize:
    the mean fraction of test inputs solved). The checkpoint's ``state_dict`` is evaluated: with the EMA callback
    that is the EMA weights (its default ``save="ema"``).

    Args:
        checkpoint: a Lightning checkpoint of a ``PuzzleTask``, or several (evaluated in order; see ``pooled``).
            Checkpoints are unpickled, as ``fit --ckpt_path`` does: evaluate only files you trust.
        data_dir: the ARC dataset the model was trained on (built by ``hrmkit data arc``; needs ``test/``,
            ``identifiers.json`` and ``test_puzzles.json``).
        out_dir: where ``submission.json`` (Kaggle format, two attempts per test input) and ``metrics.json`` are
            written, each atomically; None writes nothing.
        segments: reasoning segments per example (default: the checkpoint's ``eval_segments``, i.e.
            ``halt_max_steps`` unless set); more segments is test-time scaling.
        batch_size: examples per forward pass (the last batch is padded).
        pooled: with several checkpoints, pool their votes into one ensemble (TRM's ``aggregated_voting``); the
            headline numbers and the submission then use all votes, otherwise the last checkpoint's alone.
        pass_ks: the K of pass@K (the official metric is pass@2).
        device: torch device to run on (default: ``cuda`` when available, else ``cpu``).
        num_workers: loader worker processes reading the test split.
        quiet: do not print the pass@K table.

    Returns:
        The metrics written to ``metrics.json``: ``pass_at_k`` (``{"task"|"fraction": {"pass@K": score}}``, None
        when the test split has no ground truth), ``per_checkpoint`` (the same for each checkpoint, cumulative when
        pooled), ``checkpoints``, ``num_votes``, ``num_tasks``, ``num_test_inputs``, ``segments``, ``pooled`` and
        the written ``submission`` path (or None).
    """
    paths = [checkpoint] if isinstance(checkpoint, (str, os.PathLike)) else list(checkpoint)
    if not paths:
        raise ValueError("evaluate_arc needs at least one checkpoint")
    paths = [str(p) for p in paths]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dm, test_puzzles, identifiers = _arc_test_split(str(data_dir), batch_size, num_workers)
    scored = all(pair.get("output") is not None for entry in test_puzzles.values() for pair in entry["test"])
    voter = ArcVoter(test_puzzles, pooled=pooled, identifiers=identifiers, pass_ks=pass_ks)
    run_on = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    names = _names(paths)
    votes = 0
    used_segments = None
    per_checkpoint: dict[str, Any] = {}
    for path, name in zip(paths, names):
        added, used_segments = _vote_checkpoint(voter, dm, path, name, str(data_dir), segments, run_on, quiet)
        votes += added
        per_checkpoint[name] = _scores(voter, name) if scored else None

    final = names[-1]
    result: dict[str, Any] = {
        "pass_at_k": per_checkpoint[final],
        "per_checkpoint": per_checkpoint,
        "checkpoints": paths,
        "data_dir": str(data_dir),
        "pooled": pooled,
        "segments": used_segments,
        "num_votes": votes,
        "num_tasks": len(test_puzzles),
        "num_test_inputs": sum(len(entry["test"]) for entry in test_puzzles.values()),
        "submission": None,
    }
    if out_dir is not None:
        result["submission"] = str(voter.write_submission(Path(out_dir) / SUBMISSION_FILE, final))
        write_json_atomic(_finite(result), Path(out_dir) / METRICS_FILE)
    if not quiet:
        _report(result, scored, str(data_dir))
    return result


def _arc_test_split(data_dir: str, batch_size: int, num_workers: int) -> tuple[Any, dict[str, Any], Any]:
    """The test split's data module (set up), its ``test_puzzles.json`` and identifiers; refuses non-ARC data."""
    from hrmkit.data.modules import PuzzleDataModule
    from hrmkit.data.puzzles.arc import read_identifiers, read_test_puzzles

    dm = PuzzleDataModule(data_dir, batch_size=batch_size, eval_batch_size=batch_size, num_workers=num_workers)
    if dm.metadata.task != "arc":
        raise ValueError(f"{Path(data_dir) / 'metadata.json'}: field 'task' is {dm.metadata.task!r}; evaluate_arc "
                         "needs an ARC dataset (hrmkit data arc)")
    dm.setup("test")
    test_puzzles = read_test_puzzles(data_dir)
    if not test_puzzles:
        raise ValueError(f"{Path(data_dir) / 'test_puzzles.json'} lists no evaluation tasks: nothing to score")
    return dm, test_puzzles, read_identifiers(data_dir)


def _vote_checkpoint(voter: ArcVoter, dm: Any, path: str, name: str, data_dir: str, segments: int | None,
                     run_on: torch.device, quiet: bool) -> tuple[int, int]:
    """Add one checkpoint's votes on every stored test example; returns (votes added, segments used)."""
    meta = dm.metadata
    task = _load_task(path, run_on)
    _check_sizes(task, path, meta, data_dir)
    predict = model_predict(task, segments)
    loader = dm.test_dataloader()
    batches: Iterable[dict[str, Tensor]] = loader
    if not quiet:
        from rich.progress import track

        batches = track(loader, total=len(loader), description=f"ARC eval {name}", transient=True)
    added = collect_votes(voter, batches, predict, checkpoint=name, device=run_on)
    if added != meta.split("test").total_examples:
        raise RuntimeError(f"{data_dir}: voted on {added} test examples but metadata.json lists "
                           f"{meta.split('test').total_examples}; the test split and its metadata disagree")
    return added, int(segments or task.eval_segments)


def _report(result: dict[str, Any], scored: bool, data_dir: str) -> None:
    if scored:
        _print_table(result)
    else:
        print(f"{Path(data_dir) / 'test_puzzles.json'} has no ground-truth outputs: nothing scored"
              + (f"; submission written to {result['submission']}" if result["submission"] else ""))


def _finite(obj: Any) -> Any:
    """JSON has no NaN or infinity: such floats (never expected in scores) are written as null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj

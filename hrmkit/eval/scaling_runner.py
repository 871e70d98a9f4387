"""``hrmkit eval scaling``: test-time compute curves of one or several checkpoints, written as JSON, table and PNGs.

Puzzle models (Sudoku, Maze, ARC) run :class:`hrmkit.eval.scaling.PuzzleScaling` over the dataset's test split;
text models run :func:`hrmkit.eval.scaling_text.text_depth_curve` over a JSONL benchmark. The report
(:mod:`hrmkit.eval.scaling_report`) is the same for both.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from hrmkit.eval.scaling import DEFAULT_SAMPLES, DEFAULT_SEGMENTS, Judge, PuzzleScaling, dataset_judge, parse_ints
from hrmkit.tasks.puzzle import PuzzleTask

JudgeChoice = Literal["auto", "exact"]


def puzzle_scaling(task: PuzzleTask, data_dir: str, segments: Sequence[int] | None = None,
                   samples: Sequence[int] | None = None, batch_size: int = 64, vote: str | None = None,
                   judge: JudgeChoice | Judge = "auto", pass_ks: Sequence[int] = (1, 2),
                   limit_per_tag: int | None = None, device: str | torch.device | None = None, seed: int = 0,
                   progress: str | None = None, where: str = "the model") -> dict[str, Any]:
    """Every (segments, samples) setting of a puzzle model on a dataset's test split, in one pass per batch.

    Args:
        task: the model (evaluated in eval mode on ``device``; put back afterwards).
        data_dir: the dataset it was trained on (``hrmkit data sudoku|maze|arc``).
        segments: depths to report (default 1, 2, 4, …, 32); the model's own ``eval_segments`` is added when it
            lies within them, so validation's numbers always appear.
        samples: widths to report (default 1, 2, 4, 8, 16 for a stochastic core, else 1).
        batch_size: puzzles per forward pass (each runs ``max(samples)`` trajectories).
        vote: width voting rule, ``answer`` or ``position`` (default: the model's).
        judge: ``auto`` (the dataset's answer judge where one exists, e.g. any shortest maze path), ``exact``
            (label match only), or a judge function.
        pass_ks: ARC only: the K of the voted pass@K reported at every depth.
        limit_per_tag: evaluate only the first N test examples of each tag (quick looks and CPU runs; the default is
            the whole split; the split is stored tag by tag, so a plain cut would drop whole tags).
        device: torch device (default: the model's).
        seed: seeds the sampled trajectories of stochastic cores.
        progress: a description to show a progress bar with (None: quiet).
        where: the model's file, for messages.
    """
    from hrmkit.data.modules import PuzzleDataModule
    from hrmkit.eval.arc_runner import _check_sizes

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if limit_per_tag is not None and limit_per_tag < 1:
        raise ValueError(f"limit_per_tag must be >= 1, got {limit_per_tag}")
    dm = PuzzleDataModule(str(data_dir), batch_size=batch_size, eval_batch_size=batch_size)
    meta = dm.metadata
    _check_sizes(task, where, meta, str(data_dir))
    dm.setup("test")
    depth = parse_ints(segments, "segments") or list(DEFAULT_SEGMENTS)
    if task.eval_segments <= depth[-1]:
        depth = sorted({*depth, task.eval_segments})
    width = parse_ints(samples, "samples") or (list(DEFAULT_SAMPLES) if task.core.stochastic else [1])
    judge_fn = dataset_judge(meta.task) if judge == "auto" else None if judge == "exact" else judge
    if isinstance(judge_fn, str):
        raise ValueError(f"judge must be 'auto', 'exact' or a function, got {judge!r}")
    arc = _arc_voter(meta.task, str(data_dir), pass_ks)
    tags = list(meta.tag_names) or ["all"]
    run = PuzzleScaling(task, depth, width, num_tags=max(len(tags), 1), vote_rule=vote, judge=judge_fn,
                        arc_voter=arc)
    run_on = torch.device(device) if device is not None else task.device
    _run_test_split(run, task, dm, run_on, seed, progress, limit_per_tag)
    if run.examples == 0:
        raise ValueError(f"{data_dir}: the test split has no examples to evaluate")
    return {"kind": "puzzle", "dataset": meta.task, "data_dir": str(data_dir), "eval_segments": task.eval_segments,
            "segments": depth, "samples": width, "vote": run.vote_rule, "tags": tags,
            "judge": None if judge_fn is None else getattr(judge_fn, "__name__", "judge"), "examples": run.examples,
            "tokens_per_example": run.tokens_per_example, "flops_per_token_pass": run.flops_per_token,
            "calls_per_pass": run.calls_per_pass, "pass_ks": list(arc.pass_ks) if arc is not None else None,
            "rows": run.results(tags)}


def _arc_voter(dataset: str, data_dir: str, pass_ks: Sequence[int]) -> Any:
    """An ARC voter for the voted pass@K at every depth, when the dataset is ARC with ground-truth outputs."""
    from hrmkit.data.puzzles.arc import read_identifiers, read_test_puzzles
    from hrmkit.eval.arc import ArcVoter

    if dataset != "arc":
        return None
    puzzles = read_test_puzzles(data_dir)
    if puzzles and all(p.get("output") is not None for entry in puzzles.values() for p in entry["test"]):
        return ArcVoter(puzzles, pooled=False, identifiers=read_identifiers(data_dir), pass_ks=pass_ks)
    return None


def _run_test_split(run: PuzzleScaling, task: PuzzleTask, dm: Any, run_on: torch.device, seed: int,
                    progress: str | None, limit_per_tag: int | None) -> None:
    """Feed every test batch of ``dm`` to ``run`` with the model in eval mode on ``run_on`` (mode and device are
    restored afterwards)."""
    was_training, previous = task.training, task.device
    task.to(run_on).eval()
    torch.manual_seed(seed)
    loader = dm.test_dataloader()
    batches: Any = loader
    if progress:
        from rich.progress import track

        batches = track(loader, total=len(loader), description=progress, transient=True)
    taken = np.zeros(run.num_tags, dtype=np.int64)
    try:
        for batch in batches:
            if limit_per_tag is not None:
                batch = _first_per_tag(batch, taken, limit_per_tag)
                if batch is None:
                    continue
            run.update({k: v.to(run_on) for k, v in batch.items()})
    finally:
        task.to(previous).train(was_training)


def _first_per_tag(batch: dict[str, torch.Tensor], taken: np.ndarray, limit: int) -> dict[str, torch.Tensor] | None:
    """The valid rows of ``batch`` whose tag has had fewer than ``limit`` rows so far (``taken`` is updated), or None
    when no row is left."""
    b = batch["inputs"].shape[0]
    valid = batch["valid"].bool().numpy() if "valid" in batch else np.ones(b, dtype=bool)
    tags = batch["tag"].long().clamp(0, len(taken) - 1).numpy() if "tag" in batch else np.zeros(b, dtype=np.int64)
    keep = np.zeros(b, dtype=bool)
    for row in np.flatnonzero(valid):
        if taken[tags[row]] < limit:
            taken[tags[row]] += 1
            keep[row] = True
    if not keep.any():
        return None
    index = torch.from_numpy(np.flatnonzero(keep))
    return {k: v[index] if torch.is_tensor(v) and v.dim() and v.shape[0] == b else v for k, v in batch.items()}


def depth_line(result: dict[str, Any], segments: Sequence[int] | None = None, metric: str = "exact_acc") -> str:
    """``exact at 1 / 2 / 4 segments: 10.0% / 20.0% / 30.0%`` (width 1) from a :func:`puzzle_scaling` result."""
    rows = {r["segments"]: r for r in result["rows"] if r["samples"] == 1}
    depths = [s for s in (segments or sorted(rows)) if s in rows]
    label = "exact" if metric == "exact_acc" else metric
    return (f"{label} at {' / '.join(str(s) for s in depths)} segments: "
            + " / ".join(f"{rows[s][metric]:.1%}" for s in depths))


def evaluate_scaling(checkpoint: str | Sequence[str], data_dir: str, out_dir: str | None = None,
                     segments: str | Sequence[int] | None = None, samples: str | Sequence[int] | None = None,
                     batch_size: int = 64, vote: str | None = None, judge: JudgeChoice = "auto",
                     pass_ks: Sequence[int] = (1, 2), limit_per_tag: int | None = None, device: str | None = None,
                     seed: int = 0, cycles: str | Sequence[int] | None = None, depth_attr: str | None = None,
                     kind: Literal["math", "mc", "puzzle"] = "math", tokenizer: str | None = None,
                     max_new_tokens: int = 256, limit: int | None = None, quiet: bool = False) -> dict[str, Any]:
    """Accuracy against test-time compute: reasoning depth (segments) and width (samples), with plots.

    Puzzle models (Sudoku, Maze, ARC): the test split of ``data_dir`` is run once per batch for the deepest and
    widest setting; every smaller setting is read on the way. Per setting and per tag (difficulty level): exact and
    token accuracy, the halting head's early-exit accuracy and mean segments at halt, the dataset judge's accuracy
    (maze: any shortest path) where one exists, ARC's voted pass@K, and compute (core passes, module calls, App. A
    FLOPs, seconds). Text models: answer accuracy against the core's inference depth (``cycles``), judged by
    ``hrmkit eval text``'s scorer.

    Writes ``scaling.json``, ``scaling.md`` (the table) and PNGs: accuracy vs depth (one line per tag), vs width
    (any-of-N and voted; stochastic cores), vs compute (one FLOP axis), and ARC pass@K vs depth.

    Args:
        checkpoint: one or several checkpoints (``.ckpt``) or HF ``hrm_text`` directories.
        data_dir: puzzle models: the dataset they were trained on. Text models: a JSONL benchmark (as
            ``hrmkit eval text --data``).
        out_dir: where the report goes (default: ``scaling`` next to the first checkpoint).
        segments: puzzle depths, e.g. ``1,2,4,8,16,32`` (the default); the model's ``eval_segments`` is added.
        samples: puzzle widths, e.g. ``1,2,4,8,16`` (the default for stochastic cores; deterministic: 1).
        batch_size: puzzles (or prompts) per forward pass.
        vote: width voting rule ``answer`` or ``position`` (default: the model's).
        judge: ``auto`` (the dataset's judge where one exists) or ``exact`` (label match only).
        pass_ks: ARC: the K of pass@K.
        limit_per_tag: puzzle models: evaluate only the first N test examples of each tag.
        device: torch device (default ``cuda`` when available, else ``cpu``).
        seed: seeds sampled trajectories.
        cycles: text models: inference depths (values of the core's recurrence count, HRM's ``H_cycles``; default
            1 … twice the trained value).
        depth_attr: text models: the core attribute ``cycles`` sets (default: ``H_cycles``, else ``cycles``, else
            ``L_cycles``).
        kind: text models: the scorer (``math``, ``mc`` or ``puzzle``, as ``hrmkit eval text``).
        tokenizer: text models: ``gpt2``, a tokenizer.json, or a folder holding one.
        max_new_tokens: text models: generation budget per question.
        limit: text models: score only the first records.
        quiet: do not print the table.
    """
    from hrmkit.eval.scaling_report import print_table, write_report
    from hrmkit.loading import load
    from hrmkit.tasks.text import TextTask

    paths = [str(checkpoint)] if isinstance(checkpoint, (str, os.PathLike)) else [str(c) for c in checkpoint]
    if not paths:
        raise ValueError("eval scaling needs at least one checkpoint")
    names = _names(paths)
    run_on = device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    for path, name in zip(paths, names):
        task = load(path)
        if isinstance(task, PuzzleTask):
            result = puzzle_scaling(task, data_dir, segments, samples, batch_size, vote, judge, pass_ks,
                                    limit_per_tag, run_on, seed, progress=None if quiet else f"scaling {name}",
                                    where=path)
        elif isinstance(task, TextTask):
            from hrmkit.eval.scaling_text import text_depth_curve

            if tokenizer is None:
                raise ValueError("eval scaling on a text model needs --tokenizer (gpt2, a tokenizer.json, or the "
                                 "built text dataset's folder)")
            result = text_depth_curve(task.to(run_on), data_dir, kind, tokenizer, parse_ints(cycles, "cycles"),
                                      depth_attr, max_new_tokens=max_new_tokens, limit=limit, batch_size=batch_size)
        else:
            raise ValueError(f"{path}: holds a {type(task).__name__}; eval scaling evaluates PuzzleTask and TextTask "
                             "models")
        results.append({"checkpoint": path, "name": name, **result})
        del task
    report = {"checkpoints": results}
    out = Path(out_dir) if out_dir is not None else Path(paths[0]).resolve().parent / "scaling"
    report["files"] = write_report(report, out)
    if not quiet:
        print_table(report)
        print(f"wrote {', '.join(report['files'])}")
    return report


def _names(paths: Sequence[str]) -> list[str]:
    """Short unique labels: file names (the parent folder too when names repeat), else full paths."""
    for make in (lambda p: Path(p).name, lambda p: "/".join(Path(p).parts[-2:]), str):
        names = [make(p) for p in paths]
        if len(set(names)) == len(names):
            return names
    raise ValueError(f"the same checkpoint is listed twice: {list(paths)}")

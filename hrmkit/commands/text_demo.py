"""``hrmkit demo --task text``: train a small HRM-Text model on a reasoning-gym task on the CPU and judge held-out
answers with the task's own scorer.

The real stack end to end: reasoning-gym generates train and held-out problems (disjoint by seed and question,
:mod:`hrmkit.data.text.reasoning_gym_tasks`), a character-level tokenizer built with ``tokenizers`` encodes them,
:class:`~hrmkit.data.text.TextDataModule` packs them, and :class:`~hrmkit.tasks.TextTask` trains the HRM core with
PrefixLM attention, the response-only loss, MagicNorm, the deep-credit warmup (:class:`DeepCreditWarmup`) and the
MagicNorm health monitor (:class:`MagicNormHealth`). Held-out answers come from greedy :func:`hrmkit.generate`;
reasoning-gym's ``score_answer`` judges them. ``benchmarks/experiments/text_cpu.py`` runs the same function over
seeds and writes the report (docs/experiments/text-cpu.md).
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from hrmkit.callbacks import DeepCreditWarmup, MagicNormHealth
from hrmkit.commands.symbolic_source import CellRows, build_source_data, cells, train_source
from hrmkit.cores import RecursiveCore, build_core
from hrmkit.data.text.module import TextDataModule
from hrmkit.data.text.reasoning_gym_tasks import build_gym_text, preset_tag, resolve, scorer, task_records
from hrmkit.data.text.tokenizer import load_tokenizer
from hrmkit.generate import generate
from hrmkit.tasks.text import TextTask


@dataclass
class TextCpuConfig:
    """Everything that defines one text-cpu run (the report records it)."""

    # a reasoning-gym preset (hrmkit.data.text.reasoning_gym_tasks.PRESETS); the default trains on worked solutions
    # (the board after each wave of naked singles): 96.4 % held-out exact where the answer alone reached 82.7 %
    task: str = "mini_sudoku_waves"
    steps: int = 4200
    minutes: float = 15.0  # wall-clock cap on training (the step count is the intended bound)
    n_train: int = 20000
    n_test: int = 1200  # held-out seeds; mini_sudoku keeps the ~40 % with one solution
    data_seed: int = 0
    hidden_size: int = 128
    num_heads: int = 2
    H_cycles: int = 2
    L_cycles: int = 3
    lr: float = 2e-3
    # 400, not 50: with 50, one seed of three sat near 0 % for 1,500 steps and ended at 69 %
    # (docs/experiments/text-cpu.md)
    warmup_steps: int = 400
    # short packed rows: attention cost grows with the row length, so 512-token steps train faster per second on a
    # CPU than 1,024 or 2,048 (pilots in docs/experiments/text-cpu.md)
    tokens_per_batch: int = 512
    eval_every: int = 500
    curve_n: int = 200
    # generation budget per answer; None: the task preset's (64; its worked presets 160-200)
    max_new_tokens: int | None = None
    # the core, for comparisons (benchmarks/experiments/core_ablation.py): a registered name (hrmkit.cores.CORES) and
    # constructor arguments over the shared block options of :func:`text_core`; the default is text-cpu's HRM
    core: str = "hrm"
    core_kwargs: dict[str, Any] = field(default_factory=dict)
    # gradient horizon: None = DeepCreditWarmup ``credit[0]``→``credit[1]`` calls over the first 20 % of the steps
    # (HRM-Text's 2→5); an int = that many calls with gradient for the whole run (no warm-up)
    bp_steps: int | None = None
    credit: tuple[int, int] = (2, 5)
    judge_n: int | None = None  # judge only the first held-out problems (None: every one)
    val_loss: bool = False  # also measure the response-only loss over every held-out problem after training
    log_name: str | None = None  # CSV log folder under ``<work_dir>/logs`` (None: ``seed<seed>``)
    # transfer (benchmarks/experiments/transfer.py): a trained task checkpoint whose core starts this run (copied
    # exactly by :mod:`hrmkit.transfer`, so ``core``/``core_kwargs`` must build the same core), and parts kept fixed
    init_from: str | None = None
    freeze: list[str] = field(default_factory=list)
    # symbolic pretraining (mini_sudoku only; :mod:`hrmkit.commands.symbolic_source`): train the run's core on
    # symbolic 4x4 Sudoku for this many steps first, then start the text model from it (core by ``init_from``, cell
    # characters' embedding and LM-head rows from the source's); its minutes count in the run's budget. 0 = none
    source_steps: int = 0
    source_batch: int = 64
    source_lr: float = 1e-3
    source_train: int = 20000
    source_test: int = 1000

    def __post_init__(self) -> None:
        if self.max_new_tokens is None:
            self.max_new_tokens = resolve(self.task).max_new_tokens


@dataclass
class TaskData:
    """A built text dataset with its held-out records and their scorer, for runs on data that is not a
    reasoning-gym preset (``score(answer, record) -> 1.0`` when right)."""

    data_dir: Path
    held_out: list[dict]
    score: Callable[[str, dict], float]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Lightning's info lines and warnings off for the run, restored after (a caller's logging stays as it was)."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="lightning")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def answer(model: TextTask, tok: Any, records: Sequence[dict], max_new_tokens: int,
           batch_size: int = 256) -> list[str]:
    """Greedy answers (decoded, stop token removed) to the records' instructions."""
    prompts = [tok.encode_prompt(r["instruction"], r["condition"]) for r in records]
    outs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        for ids in generate(model, prompts[start:start + batch_size], max_new_tokens, stop_ids=(tok.eoa_id,),
                            compile=False):
            outs.append(tok.decode(ids[:-1] if ids and ids[-1] == tok.eoa_id else ids))
    return outs


def judge(model: TextTask, tok: Any, records: Sequence[dict], score: Callable[[str, dict], float],
          max_new_tokens: int) -> tuple[float, list[dict[str, Any]]]:
    """Exact score (share of answers the task's scorer gives full credit: reasoning-gym's default scorer gives 0.01
    to a wrong answer and 0.5 to one that contains the right one) and one row per record."""
    outs = answer(model, tok, records, max_new_tokens)
    rows = [{"question": r["instruction"], "gold": r["response"], "output": o, "score": score(o, r)}
            for r, o in zip(records, outs)]
    return (sum(r["score"] >= 1.0 for r in rows) / len(rows) if rows else float("nan")), rows


class HeldOutCurve(Callback):
    """Every ``every`` steps (and at the end): exact score on the first ``n`` held-out problems, with the training
    wall time spent so far (the judging time is measured and kept apart)."""

    def __init__(self, tok: Any, records: Sequence[dict], score: Callable[[str, dict], float], every: int,
                 max_new_tokens: int, log: Callable[[str], None] = print) -> None:
        self.tok, self.records, self.score, self.every = tok, list(records), score, every
        self.max_new_tokens, self.emit = max_new_tokens, log
        self.curve: list[dict[str, float]] = []
        self.judge_s = 0.0
        self._start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: TextTask) -> None:
        self._start = time.perf_counter()

    def measure(self, trainer: L.Trainer, pl_module: TextTask) -> None:
        if self.curve and self.curve[-1]["step"] == trainer.global_step:
            return
        t = time.perf_counter()
        exact, _ = judge(pl_module, self.tok, self.records, self.score, self.max_new_tokens)
        self.judge_s += time.perf_counter() - t
        loss = trainer.callback_metrics.get("train/loss")
        point = {"step": trainer.global_step, "exact": round(exact, 4),
                 "train_minutes": round((time.perf_counter() - self._start - self.judge_s) / 60, 2),
                 "train_loss": round(float(loss), 4) if loss is not None else None}
        self.curve.append(point)
        self.emit(f"step {point['step']:5d}  {point['train_minutes']:5.1f} min  loss {point['train_loss']}  "
                 f"held-out exact ({len(self.records)}) {exact:.1%}")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: TextTask, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step % self.every == 0:
            self.measure(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: TextTask) -> None:
        self.measure(trainer, pl_module)


def text_core(cfg: TextCpuConfig) -> RecursiveCore:
    """The run's core from the registry: HRM-Text's block options (MagicNorm, gated attention, ``fmod3`` init) for
    every core, text-cpu's HRM schedule (H_cycles × L_cycles, one layer per stack, ``hrm_text`` injection) for
    ``hrm``, then ``cfg.core_kwargs`` and a fixed ``cfg.bp_steps`` over both."""
    kwargs: dict[str, Any] = dict(hidden_size=cfg.hidden_size, num_heads=cfg.num_heads, expansion=4.0, norm="magic",
                                  norm_eps=1e-6, init="fmod3", gated_attn=True, max_seq_len=512)
    if cfg.core == "hrm":
        kwargs.update(H_cycles=cfg.H_cycles, L_cycles=cfg.L_cycles, H_layers=1, L_layers=1, injection="hrm_text",
                      bp_steps=5)
    kwargs.update(cfg.core_kwargs)
    if cfg.bp_steps is not None:
        kwargs["bp_steps"] = cfg.bp_steps
    return build_core(cfg.core, **kwargs)


def symbolic_source(cfg: TextCpuConfig, seed: int, work_dir: str, held_out: Sequence[dict],
                    log: Callable[[str], None]) -> dict[str, Any]:
    """Train (or reuse) the run's symbolic 4x4 Sudoku source: text-cpu's core on puzzles that exclude every
    held-out one. Returns its figures with the checkpoint path."""
    if resolve(cfg.task).dataset != "mini_sudoku":
        raise ValueError(f"source_steps: symbolic pretraining is for mini_sudoku, not {cfg.task!r}")
    exclude = {cells(r["entry"]["metadata"]["puzzle"]) for r in held_out}
    data_dir = build_source_data(Path(work_dir) / f"source-train{cfg.source_train}-test{cfg.source_test}",
                                 cfg.source_train, cfg.source_test, exclude)
    out = Path(work_dir) / (f"source-d{cfg.hidden_size}-H{cfg.H_cycles}L{cfg.L_cycles}-{cfg.source_steps}x"
                            f"{cfg.source_batch}-lr{cfg.source_lr:g}-seed{seed}")
    res = train_source(lambda: text_core(cfg), data_dir, out, cfg.source_steps, cfg.source_batch, cfg.source_lr,
                       seed)
    log(f"symbolic source: {res['steps']} steps in {res['minutes']:.1f} min, held-out symbolic exact "
        f"{res['exact']:.1%} ({', '.join(f'{t} {v:.0%}' for t, v in res['exact_by_tag'].items())})")
    return res


def held_out_loss(model: TextTask, data: TextDataModule) -> float:
    """Response-only cross-entropy per response token over the whole held-out (val) split, in stored order."""
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    return float(trainer.validate(model, datamodule=data, verbose=False)[0]["val/loss"])


def run_text_cpu(cfg: TextCpuConfig, seed: int = 0, work_dir: str = "runs/text-cpu",
                 log: Callable[[str], None] = print, data: TaskData | None = None,
                 callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Build the task's data (reused when present; ``data`` replaces it), train for ``cfg.steps`` (capped at
    ``cfg.minutes``), judge every held-out problem, and return the figures with every judged row (in held-out
    order). ``callbacks`` join the run's own."""
    with _quiet():
        return _run_text_cpu(cfg, seed, work_dir, log, data, callbacks)


def text_data(cfg: TextCpuConfig, work_dir: str) -> tuple[Path, list[dict], list[dict]]:
    """The task's built dataset (built once per ``work_dir``, then reused) with its train and held-out records."""
    spec = resolve(cfg.task)
    data_dir = Path(work_dir) / f"{cfg.task}-{preset_tag(spec)}-train{cfg.n_train}-test{cfg.n_test}-seed{cfg.data_seed}"
    train, held_out = task_records(spec, cfg.n_train, cfg.n_test, cfg.data_seed)
    if not (data_dir / "metadata.json").is_file():
        build_gym_text(str(data_dir), spec, train, held_out, overwrite=True)
    return data_dir, train, held_out


def _run_text_cpu(cfg: TextCpuConfig, seed: int, work_dir: str, log: Callable[[str], None],
                  task_data: TaskData | None, callbacks: Sequence[Callback]) -> dict[str, Any]:
    if task_data is None:
        data_dir, _, held_out = text_data(cfg, work_dir)
        score = scorer(resolve(cfg.task))
    else:
        data_dir, held_out, score = task_data.data_dir, task_data.held_out, task_data.score
    tok = load_tokenizer(data_dir)
    init_from, source, callbacks = cfg.init_from, None, list(callbacks)
    if cfg.source_steps > 0:
        source = symbolic_source(cfg, seed, work_dir, held_out, log)
        init_from = source["checkpoint"]
        callbacks.append(CellRows(init_from, data_dir))
    source_minutes = source["minutes"] if source else 0.0

    L.seed_everything(seed, verbose=False)
    core = text_core(cfg)
    model = TextTask(core, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1, warmup_steps=cfg.warmup_steps,
                     schedule="cosine", pad_id=tok.pad_id, init_from=init_from, freeze=list(cfg.freeze) or None)
    data = TextDataModule(str(data_dir), tokens_per_batch=cfg.tokens_per_batch, seed=seed)
    curve = HeldOutCurve(tok, held_out[:cfg.curve_n], score, cfg.eval_every, cfg.max_new_tokens, log)
    health = MagicNormHealth(every_n_steps=50)
    credit = ([DeepCreditWarmup(*cfg.credit, warmup_ratio=0.2, total_steps=cfg.steps)] if cfg.bp_steps is None
              else [])
    logger = L.pytorch.loggers.CSVLogger(Path(work_dir) / "logs", name=cfg.log_name or f"seed{seed}")
    budget_s = max(1, int((cfg.minutes - source_minutes) * 60))
    trainer = L.Trainer(max_steps=cfg.steps, max_time={"seconds": budget_s}, accelerator="cpu",
                        devices=1, logger=logger,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=10,
                        callbacks=[*credit, health, curve, *callbacks])
    start = time.perf_counter()
    trainer.fit(model, data)
    train_s = time.perf_counter() - start - curve.judge_s
    train_minutes = train_s / 60 + source_minutes
    judged = held_out[:cfg.judge_n] if cfg.judge_n is not None else held_out
    exact, rows = judge(model, tok, judged, score, cfg.max_new_tokens)
    mean_score = sum(r["score"] for r in rows) / len(rows)
    extra = {"val_loss": round(held_out_loss(model, data), 4)} if cfg.val_loss else {}
    return {"task": cfg.task, "seed": seed, "exact": round(exact, 4), "mean_score": round(mean_score, 4),
            "held_out": len(judged), **extra,
            "minutes": round(train_minutes, 2), "steps": trainer.global_step, "threads": torch.get_num_threads(),
            "tokens_per_s": round(trainer.global_step * cfg.tokens_per_batch / train_s, 1),  # packed step budget
            "params": sum(p.numel() for p in model.parameters()), "vocab": tok.vocab_size,
            "curve": curve.curve, "magicnorm_problems": len(health.problems),
            "magicnorm_last": {k: round(v, 4) for k, v in health.last_metrics.items() if "rms" in k},
            "config": asdict(cfg), "rows": rows,
            **({"source": {k: v for k, v in source.items() if k != "checkpoint"},
                "text_minutes": round(train_s / 60, 2)} if source else {})}


def run_text_demo(task: str | None = None, steps: int | None = None, minutes: float | None = None,
                  seed: int = 0, out_dir: str | None = None, n_train: int | None = None, n_test: int | None = None,
                  show: int = 8, threads: int | None = 1, source_steps: int = 0) -> dict[str, Any]:
    """Run the text-cpu experiment once and print held-out problems with the model's answers and the exact score.
    ``None`` keeps the experiment's value (:class:`TextCpuConfig`; data and logs in ``runs/text-cpu``)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if threads:
        torch.set_num_threads(threads)
    cfg = TextCpuConfig() if task is None else TextCpuConfig(task=task)
    cfg.source_steps = source_steps
    for name, value in (("steps", steps), ("minutes", minutes), ("n_train", n_train), ("n_test", n_test)):
        if value is not None:
            setattr(cfg, name, value)
    console.print(f"[bold]hrmkit demo --task text[/]: HRM-Text (d={cfg.hidden_size}, H{cfg.H_cycles}L{cfg.L_cycles}) "
                  f"on reasoning-gym {cfg.task} ({resolve(cfg.task).note}), "
                  + (f"{cfg.source_steps} symbolic Sudoku steps, then " if cfg.source_steps else "")
                  + f"{cfg.steps} steps (cap {cfg.minutes:g} min) on "
                  f"{torch.get_num_threads()} CPU thread(s)")
    res = run_text_cpu(cfg, seed=seed, work_dir=out_dir or "runs/text-cpu", log=console.print)
    table = Table(title=f"held-out {cfg.task}: {res['exact']:.1%} exact over {res['held_out']} unseen problems "
                        f"({res['steps']} steps, {res['minutes']:.1f} min)")
    for col in ("question", "model's answer", "right answer", "score"):
        table.add_column(col)
    for row in res["rows"][:show]:
        table.add_row(row["question"], row["output"], row["gold"], f"{row['score']:g}")
    console.print(table)
    return res

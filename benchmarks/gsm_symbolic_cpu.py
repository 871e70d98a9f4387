"""Measured CPU run: GSM-Symbolic with a small HRM-Text model, exact-answer accuracy before and after training.

Builds ``gsm_symbolic`` (reasoning-gym templates, GPT-2 tokenizer) unless it exists, trains the model of
``recipes/text-gsm-symbolic-cpu.yaml`` for a fixed wall-clock budget, and measures the test split before and after:
validation loss / token accuracy / exact (every response token right) from ``Trainer.validate``, and exact-answer
accuracy of greedy generations (last ``\\boxed{}``) from :func:`hrmkit.eval.text.evaluate_text`.

    .venv/bin/python benchmarks/gsm_symbolic_cpu.py --minutes 7
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _validate(trainer: Any, model: Any, dm: Any) -> dict[str, float]:
    """``val/loss``, ``val/token_acc`` and ``val/exact_acc`` on the whole val split."""
    out = trainer.validate(model, datamodule=dm, verbose=False)[0]
    return {k: round(float(v), 4) for k, v in out.items()}


def main() -> None:
    """Build, measure, train for the budget, measure again, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="runs/gsm-symbolic-cpu/data")
    parser.add_argument("--train_size", type=int, default=3000)
    parser.add_argument("--test_size", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=7.0, help="training wall-clock budget")
    parser.add_argument("--max_new_tokens", type=int, default=160)
    parser.add_argument("--limit", type=int, default=None, help="score only the first N test questions")
    parser.add_argument("--out_dir", default="runs/gsm-symbolic-cpu")
    args = parser.parse_args()

    import torch
    from lightning.pytorch.cli import LightningCLI

    from hrmkit.data.text import build_gsm_symbolic
    from hrmkit.eval.text import evaluate_text

    torch.set_num_threads(max(1, torch.get_num_threads()))
    data_dir = Path(args.data_dir)
    t0 = time.perf_counter()
    if not (data_dir / "metadata.json").exists():
        build_gsm_symbolic(str(data_dir), train_size=args.train_size, test_size=args.test_size, seed=0,
                           tokenizer="gpt2", max_len=512)
    build_s = time.perf_counter() - t0
    test_jsonl = data_dir / "jsonl" / "test.jsonl"
    seconds = int(args.minutes * 60)
    budget = f"00:00:{seconds // 60:02d}:{seconds % 60:02d}"
    out = Path(args.out_dir)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = LightningCLI(args=["-c", str(ROOT / "recipes/text-gsm-symbolic-cpu.yaml"),
                                 "--data.init_args.data_dir", str(data_dir), "--trainer.max_time", budget,
                                 "--trainer.limit_val_batches", "1.0", "--trainer.default_root_dir", str(out),
                                 # validate() before fit(): metric states reset under inference mode would be
                                 # inference tensors that fit's no-grad validation cannot update in place
                                 "--trainer.inference_mode", "false", "--trainer.num_sanity_val_steps", "0"],
                           run=False, save_config_kwargs={"overwrite": True})
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule

    def measure(tag: str) -> dict[str, Any]:
        t = time.perf_counter()
        val = _validate(trainer, model, dm)
        ev = evaluate_text(model, str(test_jsonl), "math", tokenizer=str(data_dir),
                           max_new_tokens=args.max_new_tokens, limit=args.limit, out_dir=str(out / f"eval-{tag}"))
        res = {**val, **{f"gen/{k}": v for k, v in ev.items()}, "measure_s": round(time.perf_counter() - t, 1)}
        print(f"[{tag}] {json.dumps(res)}", flush=True)
        return res

    before = measure("before")
    t = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    train_s = time.perf_counter() - t
    after = measure("after")
    result = {"build_s": round(build_s, 1), "train_s": round(train_s, 1), "steps": trainer.global_step,
              "tokens_per_step": dm.tokens_per_batch, "threads": torch.get_num_threads(),
              "params": sum(p.numel() for p in model.parameters()), "before": before, "after": after}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

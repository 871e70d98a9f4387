"""Where a batched decode step spends its time: hrmkit's compiled static-cache step against transformers' decode.

    .venv/bin/python benchmarks/decode_profile.py                 # batch 8, 64 new tokens, fp32, 1 thread
    .venv/bin/python benchmarks/decode_profile.py --attention both --rounds 2

Builds the model of ``generate_speed.py`` (HRM-Text hidden 256, H2/L3, vocabulary 4096), exports it, and loads it on
both sides. Prints the top operators of one profiled ``generate`` call per side, then tokens/s of alternating runs
(median of ``--repeats``). ``--attention sdpa`` runs hrmkit's CPU decode with SDPA instead of
:func:`hrmkit.nn.cache.decode_attention` (the form before it), ``both`` alternates the two in fresh processes, so
each compiles its own graph. ``--inductor cpp_wrapper=True`` (repeatable) sets inductor options before the
compile; ``--inductor_pair`` alternates runs without and with them, in fresh processes.

    .venv/bin/python benchmarks/decode_profile.py --inductor cpp_wrapper=True --inductor_pair --rounds 2

``--freeze`` decodes with ``generate(freeze=True)`` (the weights compiled in as constants, as ``hrmkit generate
--freeze true`` and ``hrmkit eval text --freeze true`` do).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def use_sdpa_for_decode() -> None:
    """hrmkit's CPU decode attention as it was: SDPA over the whole masked cache."""
    import torch.nn.functional as F

    from hrmkit.nn import cache

    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)

    cache.decode_attention = sdpa


def run(args: argparse.Namespace) -> None:
    import transformers
    from generate_speed import build_model
    from torch.profiler import ProfilerActivity, profile

    from hrmkit.generate import generate
    from hrmkit.loading import load_hf

    torch.set_num_threads(args.threads)
    for option in args.inductor:
        name, _, value = option.partition("=")
        setattr(torch._inductor.config, name, {"True": True, "False": False}.get(value, value))
    if args.attention == "sdpa":
        use_sdpa_for_decode()
    directory = Path(tempfile.mkdtemp()) / "model"
    build_model(directory, 256, 1, 4096, 32 + args.new + 64)
    ours = load_hf(directory).float().eval()
    theirs = transformers.HrmTextForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    prompts = torch.randint(1, 4096, (args.batch, 32), generator=torch.Generator().manual_seed(args.batch * 1000))
    ones = torch.ones_like(prompts)

    def hrmkit_run() -> list[list[int]]:
        return generate(ours, prompts.tolist(), args.new, compile=True, freeze=args.freeze)

    def hf_run() -> list[list[int]]:
        out = theirs.generate(input_ids=prompts, attention_mask=ones, token_type_ids=ones, max_new_tokens=args.new,
                              min_new_tokens=args.new, do_sample=False, eos_token_id=None, pad_token_id=0)
        return out[:, prompts.shape[1]:].tolist()

    with torch.no_grad():
        t = time.perf_counter()
        hrmkit_run()  # warm-up: hrmkit compiles here
        print(f"hrmkit first call (compile included): {time.perf_counter() - t:.1f} s", flush=True)
        hf_run()
        if args.profile:
            for name, fn in (("hrmkit (compiled)", hrmkit_run), ("transformers", hf_run)):
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    fn()
                print(f"--- {name}\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
        ours_t, theirs_t = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            a = hrmkit_run()
            ours_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            b = hf_run()
            theirs_t.append(time.perf_counter() - t)
    o, h = statistics.median(ours_t), statistics.median(theirs_t)
    print(f"attention {args.attention}, {'frozen' if args.freeze else 'unfrozen'}, inductor "
          f"{' '.join(args.inductor) or 'default'}: batch {args.batch}, "
          f"{args.new} new tokens: hrmkit {o:.3f} s, transformers "
          f"{h:.3f} s, ratio {h / o:.2f}x, same tokens {a == b}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--attention", choices=("decode", "sdpa", "both"), default="decode")
    p.add_argument("--rounds", type=int, default=1, help="with --attention both: alternations of the two")
    p.add_argument("--profile", action="store_true", help="print the top operators of one call per side")
    p.add_argument("--freeze", action="store_true", help="hrmkit decodes with generate(freeze=True)")
    p.add_argument("--inductor", action="append", default=[], metavar="NAME=VALUE",
                   help="a torch._inductor.config option for hrmkit's compiled step (repeatable)")
    p.add_argument("--inductor_pair", action="store_true",
                   help="alternate runs with inductor's defaults and with --inductor's options (fresh processes)")
    args = p.parse_args()
    if args.attention != "both" and not args.inductor_pair:
        run(args)
        return
    base = [sys.executable, __file__, "--batch", str(args.batch), "--new", str(args.new), "--repeats",
            str(args.repeats), "--threads", str(args.threads), *(["--freeze"] if args.freeze else [])]
    options = [a for o in args.inductor for a in ("--inductor", o)]
    variants = ([["--attention", "sdpa", *options], ["--attention", "decode", *options]] if args.attention == "both"
                else [["--attention", args.attention], ["--attention", args.attention, *options]])
    for _ in range(args.rounds):
        for variant in variants:
            subprocess.run([*base, *variant], check=True)


if __name__ == "__main__":
    main()

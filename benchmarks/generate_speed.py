"""Generation speed: hrmkit's static-cache (compiled) decoding vs transformers' ``HrmTextForCausalLM.generate``.

    .venv/bin/python benchmarks/generate_speed.py                     # full grid, writes docs/benchmarks.md table
    .venv/bin/python benchmarks/generate_speed.py --batch 1 --new 64 --dtypes float32 --no-write

Both sides run the same weights: an HRM-Text model (hrm core, ``hrm_text`` injection, H2/L3, MagicNorm, gated
attention) is exported with :func:`hrmkit.interop.hf_hrm_text.export_hf`, and each side loads that directory
(hrmkit with ``load_hf``, transformers with ``from_pretrained``). Greedy decoding, prompts of --prompt-len tokens
(equal lengths, so transformers needs no padding), no stop token (every row decodes all new tokens). Each config is
warmed up on both sides (hrmkit's compile happens there), then --repeats rounds alternate hrmkit / transformers and
the median time of each counts; tokens/s = batch × new tokens / wall time of the whole ``generate`` call (prefill
included). fp32 rows also check that both sides produced identical tokens. ``--freeze`` measures
``generate(freeze=True)`` (the weights compiled in as constants, for batches of 8 or more).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from hrmkit.cores import build_core
from hrmkit.generate import generate
from hrmkit.interop.hf_hrm_text import export_hf
from hrmkit.loading import load_hf
from hrmkit.tasks import TextTask

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
BEGIN, END = "<!-- generate_speed:begin -->", "<!-- generate_speed:end -->"
TABLE_HEAD = ["| dtype | batch | new tokens | hrmkit tokens/s | transformers tokens/s | ratio | same tokens |",
              "|---|---|---|---|---|---|---|"]


def build_model(directory: Path, hidden: int, layers: int, vocab: int, max_len: int) -> None:
    torch.manual_seed(0)
    core = build_core("hrm", "text-tiny", hidden_size=hidden, num_heads=hidden // 64, H_layers=layers,
                      L_layers=layers, max_seq_len=max_len)
    task = TextTask(core, vocab_size=vocab, pad_id=0)
    export_hf(task, directory, dtype="float32")


def timed(fn) -> tuple[float, list[list[int]]]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run_config(ours: TextTask, theirs, batch: int, new: int, prompt_len: int, vocab: int,
               repeats: int, freeze: bool = False) -> dict[str, float | bool]:
    gen = torch.Generator().manual_seed(batch * 1000 + new)
    prompts = torch.randint(1, vocab, (batch, prompt_len), generator=gen)
    ones = torch.ones_like(prompts)

    def hrmkit_run() -> list[list[int]]:
        return generate(ours, prompts.tolist(), new, compile=True, freeze=freeze)

    def hf_run() -> list[list[int]]:
        with torch.no_grad():
            out = theirs.generate(input_ids=prompts, attention_mask=ones, token_type_ids=ones, max_new_tokens=new,
                                  min_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0)
        return out[:, prompt_len:].tolist()

    hrmkit_run(), hf_run()  # warm-up (hrmkit compiles its decode step here)
    ours_t, theirs_t = [], []
    for _ in range(repeats):
        t, a = timed(hrmkit_run)
        ours_t.append(t)
        t, b = timed(hf_run)
        theirs_t.append(t)
    tokens = batch * new
    return {"hrmkit": tokens / statistics.median(ours_t), "transformers": tokens / statistics.median(theirs_t),
            "identical": a == b}


def write_table(lines: list[str]) -> None:
    text = DOC.read_text()
    block = "\n".join([BEGIN, *lines, END])
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=1, help="blocks per stack (H and L)")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--batch", type=int, nargs="*", default=[1, 8])
    p.add_argument("--new", type=int, nargs="*", default=[64, 256])
    p.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    p.add_argument("--freeze", action="store_true", help="hrmkit decodes with generate(freeze=True)")
    args = p.parse_args()
    import transformers

    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "model"
        build_model(directory, args.hidden, args.layers, args.vocab, args.prompt_len + max(args.new) + 64)
        models = {}
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            models[dtype_name] = (load_hf(directory).to(dtype).eval(),
                                  transformers.HrmTextForCausalLM.from_pretrained(directory, dtype=dtype).eval())
        params = sum(t.numel() for t in models[args.dtypes[0]][0].parameters())
        for new in args.new:  # cheapest configs first; the table is rewritten after every row
            for dtype_name in args.dtypes:
                for batch in args.batch:
                    ours, theirs = models[dtype_name]
                    r = run_config(ours, theirs, batch, new, args.prompt_len, args.vocab, args.repeats,
                                   args.freeze)
                    same = ("yes" if r["identical"] else "NO") if dtype_name == "float32" else "—"
                    row = (f"| {dtype_name} | {batch} | {new} | {r['hrmkit']:,.1f} | {r['transformers']:,.1f} | "
                           f"{r['hrmkit'] / r['transformers']:.2f}× | {same} |")
                    print(row, flush=True)
                    rows.append(row)
                    header = [
                        f"Command: `.venv/bin/python benchmarks/generate_speed.py` (this {os.cpu_count()}-core CPU, "
                        f"{args.threads} thread(s), torch {torch.__version__}, "
                        f"transformers {transformers.__version__}; "
                        f"load average {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} after the last row). "
                        f"Model: HRM-Text hidden {args.hidden}, {args.layers}+{args.layers} layers, H2/L3, vocabulary "
                        f"{args.vocab} ({params / 1e6:.1f} M parameters); greedy, {args.prompt_len}-token prompts, no "
                        f"stop token; median of {args.repeats} alternating runs; hrmkit compiled "
                        f"({'weights frozen in' if args.freeze else 'unfrozen'}; warm-up excluded).",
                        "",
                        *TABLE_HEAD,
                        *rows,
                    ]
                    if not args.no_write:
                        write_table(header)
    print("\n".join(header))


if __name__ == "__main__":
    sys.exit(main())

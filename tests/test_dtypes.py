"""One dtype-name table: each field accepts exactly the names it did and names itself when it refuses one."""

from types import SimpleNamespace

import pytest
import torch

from hrmkit.cores import build_core
from hrmkit.dtypes import DTYPES, dtype_table
from hrmkit.parallel.plan import parse_dtype
from hrmkit.tasks.puzzle import PuzzleTask


def test_table_subsets_and_short_names():
    assert dtype_table("float32", "bfloat16") == {"float32": torch.float32, "bfloat16": torch.bfloat16}
    assert dtype_table("bfloat16", short=True) == {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    assert set(DTYPES) == {"float64", "float32", "bfloat16", "float16"}
    with pytest.raises(KeyError, match="int8"):
        dtype_table("int8")


def test_parallel_plan_names():
    for name, want in [("bf16", torch.bfloat16), ("BFloat16", torch.bfloat16), ("fp16", torch.float16),
                       ("float32", torch.float32)]:
        assert parse_dtype(name, "FSDP2.param_dtype") is want
    assert parse_dtype(None, "x") is None
    with pytest.raises(ValueError, match=r"FSDP2.reduce_dtype='float64' is not a dtype name"):
        parse_dtype("float64", "FSDP2.reduce_dtype")


def test_core_compute_dtype_names():
    assert build_core("hrm", "tiny", compute_dtype="float64").compute_dtype is torch.float64
    with pytest.raises(ValueError, match=r"compute_dtype must be one of \['bfloat16', 'float16', 'float32', "
                                         r"'float64'\] or None, got 'bf16'"):
        build_core("hrm", "tiny", compute_dtype="bf16")


def test_puzzle_loss_dtype_names():
    core = build_core("hrm", "tiny", max_seq_len=128)
    assert PuzzleTask(core, vocab_size=11, seq_len=81, loss_dtype="float32").loss_dtype is torch.float32
    with pytest.raises(ValueError, match=r"loss_dtype must be 'float64' or 'float32', got 'bfloat16'"):
        PuzzleTask(build_core("hrm", "tiny", max_seq_len=128), vocab_size=11, seq_len=81, loss_dtype="bfloat16")


@pytest.mark.parametrize(("f32_s", "bf16_s", "expected"), [(1.0, 0.5, "bfloat16"), (1.0, 0.8, "float32"),
                                                          (0.3, 7.1, "float32")])
def test_demo_picks_bf16_only_where_it_multiplies_clearly_faster(monkeypatch, f32_s, bf16_s, expected):
    from hrmkit.commands import demo

    clock = iter(t for _ in range(3) for d in (f32_s, bf16_s) for t in (0.0, d))  # (start, end) per dtype and trial
    monkeypatch.setattr(demo, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    assert demo.fastest_cpu_dtype(size=8, trials=3) == expected

"""``load_hf`` says which weight layout and dtype it found, and records both on the task."""

from __future__ import annotations

import logging

import pytest
import torch

from hrmkit.cores import build_core
from hrmkit.interop.hf_hrm_text import export_hf
from hrmkit.loading import load_hf
from hrmkit.tasks.text import TextTask


@pytest.mark.parametrize(("layout", "dtype"), [("published", "bfloat16"), ("transformers", "float32")])
def test_load_hf_logs_and_records_layout_and_dtype(tmp_path, caplog, layout, dtype):
    torch.manual_seed(0)
    task = TextTask(build_core("hrm", "text-tiny"), vocab_size=48, pad_id=5)
    out = export_hf(task, tmp_path / "hf", layout=layout, dtype=dtype)
    with caplog.at_level(logging.INFO):
        loaded = load_hf(out)
    assert (loaded.hf_layout, loaded.hf_dtype) == (layout, dtype)
    assert f"{layout} layout, {dtype} weights" in caplog.text
    assert loaded.embed_tokens.weight.dtype == torch.float32

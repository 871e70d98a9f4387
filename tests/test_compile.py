"""torch.compile of the core through hrmkit.parallel: exact against eager, one graph per bp_steps (no graph breaks),
and the strategy presets that switch it on from a recipe."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.strategies import ModelParallelStrategy, StrategyRegistry

from hrmkit.cores import build_core
from hrmkit.data.text.packing import pack_batch
from hrmkit.parallel import DDP, FSDP2, PRESETS, ParallelPlan, compile_core, plan_for
from hrmkit.parallel.apply import DEFAULT_FSDP2_PLAN
from hrmkit.tasks import TextTask
from hrmkit.testing.graph_breaks import GraphCounter


def _batch(rng: np.random.Generator, docs: int) -> dict:
    return pack_batch([(rng.integers(3, 40, 10).astype(np.int64), 4) for _ in range(docs)], 64, pad_id=0)


def _task() -> TextTask:
    torch.manual_seed(0)
    return TextTask(build_core("hrm", "text-tiny"), vocab_size=40)


def test_compiled_core_recompiles_once_per_bp_steps_and_matches_eager():
    torch._dynamo.reset()
    eager, compiled = _task(), _task()
    counter = GraphCounter()
    compile_core(compiled.core, backend=counter)
    rng = np.random.default_rng(0)
    seen = []
    for bp, docs in [(5, 2), (5, 3), (3, 4), (5, 4)]:
        batch = _batch(rng, docs)
        for task in (eager, compiled):
            task.zero_grad()
            task.core.bp_steps = bp
            task._step(batch)["ce_sum"].backward()
        seen.append(counter.graphs)
        for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
            torch.testing.assert_close(q.grad, p.grad, msg=lambda m, n=name, b=bp: f"{n} at bp_steps={b}: {m}")
    # one graph for the whole schedule (no graph break); one more when the packed document count first changes
    # (cu_seqlens becomes dynamic); then one per new bp_steps, and none when a bp_steps value comes back
    assert seen == [1, 2, 3, 3]


def test_presets_are_registered_and_selectable_by_name():
    for name, (cls, kwargs, _) in PRESETS.items():
        assert name in StrategyRegistry
        if name == "hrmkit_fsdp2_compiled":  # refused with the alternatives named (tests/test_distributed.py)
            continue
        strategy = StrategyRegistry.get(name)
        assert isinstance(strategy, cls)
        assert strategy.plan.compile == kwargs.get("compile", False)
    fsdp = StrategyRegistry.get("hrmkit_fsdp2")
    assert fsdp.plan.shard and fsdp.plan.param_dtype == torch.bfloat16 and fsdp.plan.reduce_dtype == torch.float32
    assert not fsdp.plan.reshard_after_forward
    assert StrategyRegistry.get("hrmkit_fsdp2_fp32").plan.param_dtype is None
    trainer = L.Trainer(accelerator="cpu", devices=1, strategy="hrmkit_ddp", logger=False)
    assert isinstance(trainer.strategy, DDP) and trainer.strategy._ddp_kwargs["broadcast_buffers"] is False


def test_plain_model_parallel_strategy_still_gets_sharded_and_bad_dtypes_are_named():
    assert plan_for(ModelParallelStrategy()) == DEFAULT_FSDP2_PLAN
    assert plan_for(DDP(compile=True)).compile
    assert plan_for(object()) is None
    with pytest.raises(ValueError, match=r"FSDP2.param_dtype='bf61'.*expected one of"):
        FSDP2(param_dtype="bf61")


def test_configure_model_compiles_once_from_the_strategy_plan():
    task = _task()
    counter = GraphCounter()
    task.trainer = L.Trainer(accelerator="cpu", devices=1, logger=False,
                             strategy=DDP(compile=True, compile_kwargs={"backend": counter}))
    task.configure_model()
    first = task.core._compiled_call_impl
    assert first is not None
    task.configure_model()  # Lightning calls the hook once per stage: the second call must change nothing
    assert task.core._compiled_call_impl is first
    rng = np.random.default_rng(1)
    task._step(_batch(rng, 2))["ce_sum"].backward()
    assert counter.graphs == 1


def test_compile_per_block_needs_transformer_blocks():
    with pytest.raises(ValueError, match="no TransformerBlock"):
        compile_core(torch.nn.Linear(2, 2), per_block=True)
    assert ParallelPlan().compile is False

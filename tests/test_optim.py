"""AdamATan2 against the kernel equations, sparse SignSGD (single process and 2-rank gloo), lr schedules."""

from __future__ import annotations

import copy
import io
import math
import os
import socket
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hrmkit.nn.puzzle_embedding import PuzzleEmbedding
from hrmkit.optim import (
    AdamATan2,
    SparseSignSGD,
    warmup_constant,
    warmup_cosine,
    warmup_cosine_scheduler,
)

# ------------------------------------------------------------------------------------------------------- AdamATan2


def _reference_adam_atan2(p0, grads, lrs, betas, wd):
    """The four equations element by element in float64 Python, one parameter."""
    b1, b2 = betas
    p, m, v = [float(x) for x in p0.flatten()], [0.0] * p0.numel(), [0.0] * p0.numel()
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        g = [float(x) for x in g.flatten()]
        for i in range(len(p)):
            p[i] = p[i] * (1 - lr * wd)
            m[i] = m[i] + (1 - b1) * (g[i] - m[i])
            v[i] = v[i] + (1 - b2) * (g[i] * g[i] - v[i])
            p[i] = p[i] - (lr / (1 - b1**t)) * math.atan2(m[i], math.sqrt(v[i]) / math.sqrt(1 - b2**t))
    return torch.tensor(p, dtype=torch.float64).view(p0.shape)


def _run_adam(params0, grads, lrs, foreach, **kw):
    params = [p.clone().requires_grad_(True) for p in params0]
    opt = AdamATan2(params, lr=lrs[0], foreach=foreach, **kw)
    for step_grads, lr in zip(grads, lrs):
        opt.param_groups[0]["lr"] = lr
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else g.clone()
        opt.step()
    return params, opt


@pytest.mark.parametrize("foreach", [False, True])
def test_adam_atan2_matches_kernel_equations(foreach):
    betas, wd = (0.9, 0.95), 0.1
    params0 = [torch.randn(3, 4), torch.randn(7)]
    lrs = [1e-2, 5e-3, 0.0, 2e-2, 1e-3, 3e-2]  # a schedule change every step, including lr = 0
    grads = [[torch.randn_like(p) * 10 ** torch.randint(-3, 2, ()).item() for p in params0] for _ in lrs]
    params, _ = _run_adam(params0, grads, lrs, foreach, betas=betas, weight_decay=wd)
    for i, p in enumerate(params):
        ref = _reference_adam_atan2(params0[i], [g[i] for g in grads], lrs, betas, wd)
        torch.testing.assert_close(p.detach().double(), ref, rtol=1e-5, atol=1e-6)


def test_adam_atan2_foreach_equals_single_tensor_bitwise():
    params0 = [torch.randn(5, 3), torch.randn(2), torch.randn(4, 4, dtype=torch.bfloat16).float()]
    lrs = [1e-2, 2e-2, 0.0, 5e-3, 1e-2]
    grads = [[torch.randn_like(p) for p in params0] for _ in lrs]
    grads[1][1] = None  # a parameter without gradient in one step gets a different step count afterwards
    a, opt_a = _run_adam(params0, grads, lrs, False, weight_decay=0.3)
    b, opt_b = _run_adam(params0, grads, lrs, True, weight_decay=0.3)
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_a.state[pa][key], opt_b.state[pb][key])
    assert int(opt_a.state[a[1]]["step"]) == len(lrs) - 1


def test_adam_atan2_lr_zero_changes_nothing_and_is_allowed_at_construction():
    p = torch.randn(4, 4, requires_grad=True)
    before = p.detach().clone()
    opt = AdamATan2([p], lr=0.0, weight_decay=1.0)
    for _ in range(3):
        p.grad = torch.randn_like(p)
        opt.step()
    assert torch.equal(p.detach(), before)
    assert int(opt.state[p]["step"]) == 3  # moments still advance, as in the reference
    with pytest.raises(ValueError):
        AdamATan2([p], lr=-1.0)


@pytest.mark.parametrize("foreach", [False, True])
def test_adam_atan2_skips_params_without_grad(foreach):
    a, b = torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)
    b_before = b.detach().clone()
    opt = AdamATan2([a, b], lr=1e-1, weight_decay=0.5, foreach=foreach)
    a.grad = torch.randn(3)
    opt.step()
    assert torch.equal(b.detach(), b_before)  # no decay either
    assert b not in opt.state


def test_adam_atan2_rejects_sparse_grads():
    emb = torch.nn.Embedding(10, 4, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        AdamATan2(emb.parameters(), lr=1e-3).step()


def test_adam_atan2_state_dict_resume_is_bit_identical():
    torch.manual_seed(1)
    params0 = [torch.randn(6, 2), torch.randn(3)]
    grads = [[torch.randn_like(p) for p in params0] for _ in range(6)]
    lrs = [1e-2] * 6
    full, _ = _run_adam(params0, grads, lrs, False, weight_decay=0.1)

    half, opt = _run_adam(params0, grads[:3], lrs[:3], False, weight_decay=0.1)
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in half], "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed = [p.clone().requires_grad_(True) for p in ckpt["params"]]
    opt2 = AdamATan2(resumed, lr=0.0, weight_decay=0.1)
    opt2.load_state_dict(ckpt["opt"])
    for step_grads in grads[3:]:
        for p, g in zip(resumed, step_grads):
            p.grad = g.clone()
        opt2.step()
    for pf, pr in zip(full, resumed):
        assert torch.equal(pf, pr)


def test_adam_atan2_low_precision_params_keep_fp32_moments_across_load():
    p = torch.randn(8, dtype=torch.bfloat16, requires_grad=True)
    opt = AdamATan2([p], lr=1e-2)
    p.grad = torch.randn(8, dtype=torch.bfloat16)
    opt.step()
    state = copy.deepcopy(opt.state_dict())
    opt2 = AdamATan2([p], lr=1e-2)
    opt2.load_state_dict(state)
    assert opt2.state[p]["exp_avg"].dtype == torch.float32
    assert torch.equal(opt2.state[p]["exp_avg_sq"], state["state"][0]["exp_avg_sq"])


def test_adam_atan2_step_is_bounded():
    lr, wd, b1 = 1e-2, 0.1, 0.9
    p = torch.randn(1000, requires_grad=True)
    opt = AdamATan2([p], lr=lr, betas=(b1, 0.95), weight_decay=wd)
    for t in range(1, 6):
        before = p.detach().clone()
        p.grad = torch.randn(1000) * 1e6
        opt.step()
        bound = (math.pi / 2) * lr / (1 - b1**t) + before.abs() * lr * wd
        assert ((p.detach() - before).abs() <= bound * (1 + 1e-6)).all()


# ----------------------------------------------------------------------------------------- PuzzleEmbedding / SignSGD


def test_puzzle_embedding_is_a_persistent_fp32_buffer():
    emb = PuzzleEmbedding(10, 4)
    assert list(emb.parameters()) == []
    assert "weight" in emb.state_dict() and emb.weight.dtype == torch.float32
    assert torch.equal(emb.weight, torch.zeros(10, 4))
    assert PuzzleEmbedding(10, 4, init_std=0.5).weight.std() > 0


def test_puzzle_embedding_training_copy_receives_per_example_grad():
    emb = PuzzleEmbedding(10, 3, init_std=1.0)
    ids = torch.tensor([4, 1, 4])
    out = emb(ids)
    assert out is emb.local_weights and out.is_leaf and out.requires_grad and emb.local_ids is ids
    (out * torch.arange(9.0).view(3, 3)).sum().backward()
    assert torch.equal(emb.local_weights.grad, torch.arange(9.0).view(3, 3))
    assert emb.weight.grad is None
    emb.eval()
    out = emb(ids)
    assert not out.requires_grad and torch.equal(out, emb.weight[ids])
    emb.train()
    with torch.no_grad():
        assert not emb(ids).requires_grad


def test_sign_sgd_updates_only_touched_rows_with_summed_duplicates_and_lazy_decay():
    emb = PuzzleEmbedding(6, 2, init_std=1.0)
    w0 = emb.weight.clone()
    lr, wd = 0.1, 0.5
    opt = SparseSignSGD(emb, lr=lr, weight_decay=wd)
    out = emb(torch.tensor([2, 4, 2]))
    # row 2: +3 and -1 -> sum +2 (sign +1; sign-then-sum would give 0); row 4: -0.5 / 0 -> sign -1 / 0.
    grad = torch.tensor([[3.0, -1.0], [-0.5, 0.0], [-1.0, 0.5]])
    (out * grad).sum().backward()
    opt.step()
    expected = w0.clone()
    expected[2] = w0[2] * (1 - lr * wd) - lr * torch.tensor([1.0, -1.0])
    expected[4] = w0[4] * (1 - lr * wd) - lr * torch.tensor([-1.0, 0.0])
    assert torch.equal(emb.weight, expected)
    assert emb.local_weights is None  # local grads cleared
    opt.step()  # nothing pending: no change, no decay
    assert torch.equal(emb.weight, expected)


def test_sign_sgd_zero_grad_between_forward_and_backward_keeps_the_step():
    emb = PuzzleEmbedding(3, 2)
    opt = SparseSignSGD(emb, lr=1.0)
    out = emb(torch.tensor([1]))
    opt.zero_grad()  # Lightning-style: forward, zero_grad, backward, step
    out.sum().backward()
    opt.step()
    assert torch.equal(emb.weight[1], torch.tensor([-1.0, -1.0]))


def test_sign_sgd_accumulates_several_forwards_and_multiple_tables():
    a, b = PuzzleEmbedding(5, 2), PuzzleEmbedding(3, 1)
    opt = SparseSignSGD([a, b], lr=1.0)
    (a(torch.tensor([1])) * 2.0).sum().backward()
    (a(torch.tensor([1])) * -1.0).sum().backward()  # summed with the first: +1 -> sign +1
    (b(torch.tensor([0, 2])) * -1.0).sum().backward()
    opt.step()
    assert torch.equal(a.weight[1], torch.tensor([-1.0, -1.0]))
    assert torch.equal(a.weight[[0, 2, 3, 4]], torch.zeros(4, 2))
    assert torch.equal(b.weight.flatten(), torch.tensor([1.0, 0.0, 1.0]))


def test_sign_sgd_state_dict_scheduler_and_zero_grad():
    emb = PuzzleEmbedding(4, 2)
    opt = SparseSignSGD(emb, lr=0.2, weight_decay=0.1)
    sched = warmup_cosine_scheduler(opt, warmup_steps=4, total_steps=10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)  # no module inside
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2 = SparseSignSGD(emb, lr=1.0)
    opt2.load_state_dict(state)
    assert opt2.param_groups[0]["module"] is emb and opt2.param_groups[0]["lr"] == pytest.approx(0.05)
    opt.step()
    sched.step()
    emb(torch.tensor([0])).sum().backward()
    opt.zero_grad()
    opt.step()
    assert torch.equal(emb.weight, torch.zeros(4, 2))
    with pytest.raises(TypeError):
        SparseSignSGD([torch.zeros(2, 2)])


def test_puzzle_embedding_under_torch_compile_graph_breaks_cleanly():
    emb = PuzzleEmbedding(5, 2)
    lin = torch.nn.Linear(2, 1)

    def f(ids):
        return lin(emb(ids) * 2.0).sum()

    loss = torch.compile(f, backend="eager")(torch.tensor([1, 3]))
    loss.backward()
    assert emb.local_weights is not None and emb.local_weights.grad.shape == (2, 2)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-step (ids, grad) for a rank: different local sizes, overlapping ids, and an empty batch on rank 1."""
    g = torch.Generator().manual_seed(100 + rank)
    sizes = [[3, 2, 4], [5, 0, 1]][rank]
    return [(torch.randint(0, 8, (n,), generator=g), torch.randn(n, 3, generator=g)) for n in sizes]


def _apply(emb: PuzzleEmbedding, opt: SparseSignSGD, ids: torch.Tensor, grad: torch.Tensor) -> None:
    if ids.numel():
        (emb(ids) * grad).sum().backward()
    opt.step()


def _gloo_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=30))
    try:
        torch.manual_seed(0)
        emb = PuzzleEmbedding(8, 3, init_std=1.0)
        opt = SparseSignSGD(emb, lr=0.1, weight_decay=0.2)
        for ids, grad in _batches(rank):
            _apply(emb, opt, ids, grad)
        torch.save(emb.weight, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_sign_sgd_two_rank_gloo_all_gather_matches_single_process(tmp_path):
    port = _free_port()
    ctx = mp.start_processes(_gloo_worker, args=(2, port, str(tmp_path)), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("gloo workers timed out")
    tables = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert torch.equal(tables[0], tables[1])

    torch.manual_seed(0)
    emb = PuzzleEmbedding(8, 3, init_std=1.0)
    opt = SparseSignSGD(emb, lr=0.1, weight_decay=0.2)
    for (ids0, g0), (ids1, g1) in zip(_batches(0), _batches(1)):
        _apply(emb, opt, torch.cat([ids0, ids1]), torch.cat([g0, g1]))
    assert torch.equal(tables[0], emb.weight)
    assert not torch.equal(emb.weight, PuzzleEmbedding(8, 3).weight)


# -------------------------------------------------------------------------------------------------------- schedules


def test_warmup_cosine_uses_t_equals_step_plus_one():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)  # first step: base / W, never 0
    assert [warmup_cosine(s, 4, 100) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(warmup_cosine(s, 10, 100, min_ratio=1.0) == 1.0 for s in range(9, 300))


def test_warmup_cosine_decay_to_min_ratio():
    w, total, r = 10, 110, 0.1
    assert warmup_cosine(w - 1, w, total, r) == pytest.approx(1.0)
    assert warmup_cosine(w - 1 + 50, w, total, r) == pytest.approx(r + (1 - r) * 0.5)
    assert warmup_cosine(total - 1, w, total, r) == pytest.approx(r)
    assert warmup_cosine(total + 50, w, total, r) == pytest.approx(r)  # clamped past the end
    assert warmup_cosine(0, 0, 10, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))


def test_warmup_constant_and_scheduler_share_one_schedule_across_optimizers():
    assert [warmup_constant(s, 3) for s in range(5)] == pytest.approx([1 / 3, 2 / 3, 1, 1, 1])
    p = torch.zeros(2, requires_grad=True)
    adam = AdamATan2([p], lr=1e-3)
    sign = SparseSignSGD(PuzzleEmbedding(2, 2), lr=1e-1)
    scheds = [warmup_cosine_scheduler(o, warmup_steps=4, total_steps=20, min_ratio=0.1) for o in (adam, sign)]
    seen = []
    for _ in range(6):
        seen.append((adam.param_groups[0]["lr"], sign.param_groups[0]["lr"]))
        for o, s in zip((adam, sign), scheds):
            o.step()
            s.step()
    assert [a for a, _ in seen] == pytest.approx([1e-3 * warmup_cosine(s, 4, 20, 0.1) for s in range(6)])
    assert [b for _, b in seen] == pytest.approx([1e-1 * warmup_cosine(s, 4, 20, 0.1) for s in range(6)])
    state = scheds[0].state_dict()
    fresh = warmup_cosine_scheduler(AdamATan2([p], lr=1e-3), warmup_steps=4, total_steps=20, min_ratio=0.1)
    fresh.load_state_dict(state)
    assert fresh.last_epoch == 6

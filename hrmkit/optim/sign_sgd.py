"""Sparse SignSGD with lazy decoupled weight decay for :class:`~hrmkit.nn.puzzle_embedding.PuzzleEmbedding` tables.

HRM/TRM (hrm-symbolic.md §2.2) train the puzzle embedding with this rule because a row is seen rarely ("Adam ≈
SignSGD if the gradient is very sparse"). Each step, per table:

1. if torch.distributed runs with several ranks, all-gather every rank's ``(ids, per-example grads)`` (local batch
   sizes may differ, or be 0), so all ranks apply the same update and their tables stay identical;
2. sum the gradients of duplicate ids, *then* take the sign;
3. for each touched row i: ``w_i ← w_i·(1 − lr·wd) − lr·sign(Σg_i)``. Untouched rows do not change, decay
   included ("lazy" decay).

It subclasses ``torch.optim.Optimizer`` so Lightning can wrap it, ``LambdaLR`` can schedule its ``lr`` and its
``state_dict`` is checkpointed (it is stateless apart from the param groups). Each param group holds one table's
``weight`` and its module under ``"module"``: the module is the source of truth because ``Module.to()`` replaces
buffers with new tensors, and it is left out of ``state_dict()``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer

from hrmkit.nn.puzzle_embedding import PuzzleEmbedding


class SparseSignSGD(Optimizer):
    """SignSGD over the rows of one or more puzzle-embedding tables touched by the (global) batch.

    Args:
        embeddings: a :class:`PuzzleEmbedding` or several (one param group each).
        lr: learning rate (``puzzle_emb_lr``; 0 allowed, the schedule sets it).
        weight_decay: decoupled decay (``puzzle_emb_weight_decay``), applied to touched rows only.
        process_group: the data-parallel group to all-gather over (default: the whole world).

    On CUDA, summing duplicates uses ``index_add_``, whose atomics are order-dependent unless
    ``torch.use_deterministic_algorithms(True)``; a sum that is exactly 0 on one rank could then round to ±ε on
    another. Use deterministic mode when the tables must stay bit-identical across ranks.
    """

    def __init__(
        self,
        embeddings: PuzzleEmbedding | Iterable[PuzzleEmbedding],
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        modules = [embeddings] if isinstance(embeddings, PuzzleEmbedding) else list(embeddings)
        if not modules or not all(isinstance(m, PuzzleEmbedding) for m in modules):
            raise TypeError("SparseSignSGD takes PuzzleEmbedding modules (not tensors)")
        self.process_group = process_group
        groups = [{"params": [m.weight], "module": m} for m in modules]
        super().__init__(groups, {"lr": lr, "weight_decay": weight_decay})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Accept a group only with its owning module (``{"params": [m.weight], "module": m}``)."""
        if not isinstance(param_group.get("module"), PuzzleEmbedding):
            raise TypeError("each SparseSignSGD param group needs its PuzzleEmbedding under 'module'")
        super().add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        """Torch's state dict without the module references (they are not checkpoint data)."""
        state = super().state_dict()
        for group in state["param_groups"]:
            group.pop("module", None)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load lr/decay (and scheduler keys such as ``initial_lr``), keeping this optimizer's modules."""
        modules = [g["module"] for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, module in zip(self.param_groups, modules):
            group["module"] = module
            group["params"] = [module.weight]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients on the tables' per-step copies (the tables themselves never hold a ``.grad``).

        Like ``Optimizer.zero_grad`` it may run between forward and backward, so the current copy is kept.
        """
        for group in self.param_groups:
            group["module"].zero_local_grad()

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """Apply one sparse SignSGD update per table, then clear the local gradients."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            module: PuzzleEmbedding = group["module"]
            weight = module.weight
            group["params"] = [weight]
            local = module.pop_local_gradient()
            if local is None:
                ids = torch.empty(0, dtype=torch.long, device=weight.device)
                grad = weight.new_empty(0, module.embedding_dim)
            else:
                ids, grad = local[0].long(), local[1].to(weight.dtype)
            if self._world_size() > 1:
                ids, grad = _all_gather_rows(ids, grad, self.process_group)
            if ids.numel() == 0:
                continue
            _sign_update(weight, ids, grad, lr=group["lr"], weight_decay=group["weight_decay"])
        return loss

    def _world_size(self) -> int:
        if not (dist.is_available() and dist.is_initialized()):
            return 1
        return dist.get_world_size(self.process_group)


def _sign_update(weight: Tensor, ids: Tensor, grad: Tensor, *, lr: float, weight_decay: float) -> None:
    """Sum duplicate ids' gradients, then update only those rows: ``w ← w·(1 − lr·wd) − lr·sign(Σg)``."""
    unique_ids, inverse = torch.unique(ids, return_inverse=True)
    summed = torch.zeros(unique_ids.numel(), grad.shape[1], dtype=grad.dtype, device=grad.device)
    summed.index_add_(0, inverse, grad)
    rows = weight.index_select(0, unique_ids)
    rows.mul_(1.0 - lr * weight_decay).sub_(summed.sign_().mul_(lr))
    weight.index_copy_(0, unique_ids, rows)


def _all_gather_rows(ids: Tensor, grad: Tensor, group: dist.ProcessGroup | None) -> tuple[Tensor, Tensor]:
    """Concatenate every rank's ``(ids, grad)`` in rank order; ranks may contribute different row counts (or 0).

    Collectives need equal shapes, so counts are gathered first and every rank pads to the largest count.
    """
    world = dist.get_world_size(group)
    count = torch.tensor([ids.numel()], dtype=torch.long, device=ids.device)
    counts = [torch.empty_like(count) for _ in range(world)]
    dist.all_gather(counts, count, group=group)
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    if longest == 0:
        return ids, grad
    pad = longest - ids.numel()
    if pad:
        ids = torch.cat([ids, ids.new_zeros(pad)])
        grad = torch.cat([grad, grad.new_zeros(pad, grad.shape[1])])
    all_ids = [torch.empty_like(ids) for _ in range(world)]
    all_grads = [torch.empty_like(grad) for _ in range(world)]
    dist.all_gather(all_ids, ids.contiguous(), group=group)
    dist.all_gather(all_grads, grad.contiguous(), group=group)
    return (torch.cat([t[:n] for t, n in zip(all_ids, sizes)]),
            torch.cat([t[:n] for t, n in zip(all_grads, sizes)]))

"""Per-puzzle embedding table trained sparsely by :class:`hrmkit.optim.SparseSignSGD` (hrm-symbolic.md §2.2).

The table is an fp32 **persistent buffer**, not a Parameter: it is saved in checkpoints, but the main optimizer
(``model.parameters()``), DDP's gradient all-reduce and the parameter EMA never see it. A batch touches a handful of
its rows (ARC: ~1M ids × 512), so a dense optimizer or a dense gradient sync over it would be wasteful.

In training (module in train mode and grad enabled) ``forward`` copies the batch's rows into a fresh leaf tensor that
requires grad, keeps it as ``local_weights`` (ids as ``local_ids``) and returns it; autograd then leaves the
per-example gradient on ``local_weights.grad`` for the sparse optimizer. Otherwise it returns ``weight[ids]``.

Why no fixed batch-size buffer (the reference copies into a preallocated ``[local_batch, D]`` buffer): a fresh leaf
per call gives autograd exactly the same per-example gradient, accepts any batch size (last eval batch, ranks with
different local batches) and needs no resizing or reset. The reference needs the static buffer for
``torch.compile(dynamic=False)`` over the whole step; here ``forward`` is excluded from compilation instead
(``torch.compiler.disable``), so a compiled core just graph-breaks around the lookup.

Several training forwards before one optimizer step (gradient accumulation) are supported: a previous call's
gradient is kept until :meth:`pop_local_gradient` hands all of them to the optimizer, which sums duplicate ids anyway.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hrmkit.nn.init import trunc_normal_


class PuzzleEmbedding(nn.Module):
    """A ``[num_embeddings, embedding_dim]`` fp32 buffer looked up by puzzle id; see the module docstring."""

    weight: Tensor

    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float = 0.0) -> None:
        super().__init__()
        if num_embeddings <= 0 or embedding_dim <= 0:
            raise ValueError(f"num_embeddings and embedding_dim must be > 0, got {num_embeddings}, {embedding_dim}")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.init_std = init_std
        self.register_buffer("weight", torch.empty(num_embeddings, embedding_dim, dtype=torch.float32))
        self.local_weights: Tensor | None = None
        self.local_ids: Tensor | None = None
        self._earlier: list[tuple[Tensor, Tensor]] = []
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero (the reference default, ``init_std = 0``) or HRM's truncated normal with std ``init_std``."""
        trunc_normal_(self.weight, std=self.init_std)
        self.clear_local()

    @torch.compiler.disable
    def forward(self, ids: Tensor) -> Tensor:
        """Rows for ``ids`` (any shape) as ``[*ids.shape, D]`` fp32; a grad-carrying leaf copy in training."""
        if not (self.training and torch.is_grad_enabled()):
            return self.weight[ids]
        self._keep_pending_gradient()
        local = self.weight.detach()[ids].requires_grad_(True)
        self.local_weights, self.local_ids = local, ids
        return local

    def _keep_pending_gradient(self) -> None:
        """Keep the previous call's gradient (if backward reached it) so accumulation does not drop it."""
        if self.local_weights is not None and self.local_weights.grad is not None:
            self._earlier.append((self.local_ids.reshape(-1), self.local_weights.grad.reshape(-1, self.embedding_dim)))

    def pop_local_gradient(self) -> tuple[Tensor, Tensor] | None:
        """``(ids [N], grad [N, D])`` of every training forward since the last call, or None; then clears them."""
        self._keep_pending_gradient()
        parts, self._earlier = self._earlier, []
        self.local_weights = self.local_ids = None
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return torch.cat([i for i, _ in parts]), torch.cat([g for _, g in parts])

    def zero_local_grad(self) -> None:
        """Forget gradients received so far, keeping the current forward's copy (``zero_grad`` may come after it)."""
        if self.local_weights is not None:
            self.local_weights.grad = None
        self._earlier = []

    def clear_local(self) -> None:
        """Drop the per-step copies and their gradients."""
        self.local_weights = self.local_ids = None
        self._earlier = []

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, init_std={self.init_std}"

"""``flex``: FlexAttention with a block mask built from the shared :mod:`.masks` predicate.

On CUDA the fused Triton kernel needs ``torch.compile(flex_attention)``, created once on first use; fully masked
tiles are skipped, so document masks cost about the real work. On CPU eager mode runs forward only: torch raises
``NotImplementedError`` for any q/k/v that requires grad, which :meth:`FlexBackend.unavailable_reason` reports first.
Inside a compiled region (the core under ``torch.compile``) ``flex_attention`` is traced into the enclosing graph,
which compiles it: no nested compile, no warnings plumbing, nothing that would break the graph.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.backends import base
from hrmkit.nn.backends.base import ATTENTION, AttentionBackend, SpecCache
from hrmkit.nn.backends.masks import mask_predicate

_SUPPORTED_DEVICES = ("cuda", "cpu")


def _flex_module() -> Any | None:
    try:
        return importlib.import_module("torch.nn.attention.flex_attention")
    except ImportError:
        return None


@ATTENTION.register("flex")
class FlexBackend(AttentionBackend):
    """Block-sparse attention for packed documents and PrefixLM without a dense mask."""

    name = "flex"

    def __init__(self) -> None:
        # The block mask depends on the batch only: reuse it across layers and recursion steps of one forward.
        self._masks = SpecCache()
        self._module = _flex_module()  # probed once here, never per call (an import probe breaks a compiled graph)
        self.triton_missing = importlib.util.find_spec("triton") is None
        self._compiled: Callable[..., Tensor] | None = None

    def unavailable_reason(self, device_type: str, spec: AttnSpec, needs_grad: bool, q_len: int,
                           kv_len: int) -> str | None:
        if device_type not in _SUPPORTED_DEVICES:
            return f"FlexAttention runs on {' and '.join(_SUPPORTED_DEVICES)}, not {device_type!r}; use backend='sdpa'"
        if self._module is None:
            return f"torch {torch.__version__} has no torch.nn.attention.flex_attention; use backend='sdpa'"
        if device_type == "cpu" and needs_grad:
            return (f"FlexAttention has no backward on CPU in torch {torch.__version__} (q/k/v require grad); use "
                    "backend='sdpa' (or 'auto') for CPU training, or call flex under torch.no_grad()")
        if device_type == "cuda" and self.triton_missing:
            return "FlexAttention on CUDA compiles Triton kernels but triton is not installed; use backend='sdpa'"
        return None

    def block_mask(self, spec: AttnSpec, batch: int, q_len: int, kv_len: int, device: torch.device) -> Any:
        """``create_block_mask`` for ``spec``, cached while the same spec object comes back."""
        def build() -> Any:
            pred = mask_predicate(spec, batch, q_len, kv_len, device)
            rows = batch if pred.prefix_end is not None and pred.doc is None else 1  # only unpacked prefixes differ
            return self._module.create_block_mask(pred.mask_mod, rows, None, q_len, kv_len, device=device)

        return self._masks.get(spec, (batch, q_len, kv_len, device), build)

    def _kernel(self) -> Callable[..., Tensor]:
        """``torch.compile(flex_attention)``, created on the first eager CUDA call."""
        if self._compiled is None:
            self._compiled = torch.compile(self._module.flex_attention)
        return self._compiled

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, spec: AttnSpec, scale: float | None = None) -> Tensor:
        batch, q_len, kv_len = q.shape[0], q.shape[1], k.shape[1]
        needs_mask = spec.packed or spec.kind != "bidirectional"
        block_mask = self.block_mask(spec, batch, q_len, kv_len, q.device) if needs_mask else None
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
        cuda = base.device_type(q) == "cuda"
        if not cuda and not torch.is_grad_enabled():  # torch rejects requires_grad inputs on CPU even under no_grad
            qt, kt, vt = qt.detach(), kt.detach(), vt.detach()
        if torch.compiler.is_compiling():  # the enclosing graph compiles the kernel
            out = self._module.flex_attention(qt, kt, vt, block_mask=block_mask, scale=scale)
        elif cuda:
            out = self._kernel()(qt, kt, vt, block_mask=block_mask, scale=scale)
        else:
            with warnings.catch_warnings():  # eager is the only CPU path that needs no compiler: intended here
                warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
                out = self._module.flex_attention(qt, kt, vt, block_mask=block_mask, scale=scale)
        return out.transpose(1, 2)

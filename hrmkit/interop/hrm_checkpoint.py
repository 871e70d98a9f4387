"""Load state dicts published for sapientinc/HRM (``HierarchicalReasoningModel_ACTV1``) into a :class:`PuzzleTask`.

The reference saves ``model.state_dict()`` of its loss head around the ACT model, usually compiled, so keys look like
``[_orig_mod.][model.]inner.H_level.layers.0.self_attn.qkv_proj.weight``. Its block layout (fused qkv, fused
gate|up SwiGLU, post-norm, parameterless RMSNorm) is the one hrmkit's ``hrm`` core builds with ``norm="post"``, so the
mapping is a rename; the puzzle-embedding table (a buffer in both) comes along.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from hrmkit.errors import HrmkitInputError

_PREFIX = re.compile(r"^(?:_orig_mod\.)?(?:model\.)?inner\.")
_LAYER = re.compile(r"^(H|L)_level\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.weight$")
_FIXED = {
    "embed_tokens.embedding_weight": "embed_tokens.weight",
    "lm_head.weight": "lm_head.weight",
    "q_head.weight": "q_head.weight",
    "q_head.bias": "q_head.bias",
    "puzzle_emb.weights": "puzzle_emb.weight",
    "H_init": "core.z_H_init",
    "L_init": "core.z_L_init",
}
_SKIP = ("rotary_emb.", "puzzle_emb.local_weights", "puzzle_emb.local_ids")


def convert_hrm_state_dict(reference: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename reference keys to hrmkit's; unknown keys are an error (a wrong file must not half-load)."""
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in reference.items():
        m = _PREFIX.match(key)
        if m is None:
            unknown.append(key)
            continue
        name = key[m.end():]
        if name.startswith(_SKIP):
            continue
        if name in _FIXED:
            out[_FIXED[name]] = value
            continue
        layer = _LAYER.match(name)
        if layer is None:
            unknown.append(key)
            continue
        level, idx, block, proj = layer.groups()
        sub = "attn" if block == "self_attn" else "mlp"
        out[f"core.{level}.layers.{idx}.{sub}.{proj}.weight"] = value
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise HrmkitInputError(f"not an HRM ACT v1 state dict: {len(unknown)} unexpected keys ({shown})")
    return out


def load_hrm_checkpoint(task: torch.nn.Module, source: str | Path | dict[str, Tensor], strict: bool = True) -> None:
    """Copy a reference checkpoint (path or state dict) into ``task`` (a PuzzleTask with an ``hrm`` post-norm core).

    Tensors are cast to the receiving dtype (the reference keeps bf16 init buffers); shapes must match exactly, so a
    config mismatch (hidden size, layers, vocabulary, identifier count) fails with the offending key named.
    """
    if not isinstance(source, dict):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"HRM checkpoint {path} does not exist")
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise HrmkitInputError(f"{path}: not a readable PyTorch state dict ({type(exc).__name__}: {exc})") from exc
    converted = convert_hrm_state_dict(source)
    own = task.state_dict()
    for key, value in converted.items():
        if key not in own:
            raise HrmkitInputError(f"checkpoint key maps to {key!r}, which this model does not have (is its core `hrm` "
                                   "with separate H/L stacks and fused qkv, and does it have a puzzle embedding?)")
        if own[key].shape != value.shape:
            raise HrmkitInputError(f"shape mismatch for {key}: checkpoint {tuple(value.shape)}, "
                                   f"model {tuple(own[key].shape)}")
    missing = [k for k in own if k not in converted and not k.startswith("val_")]
    if strict and missing:
        raise HrmkitInputError(f"the checkpoint lacks {len(missing)} of this model's tensors: {', '.join(missing[:5])}")
    with torch.no_grad():
        for key, value in converted.items():
            own[key].copy_(value.to(own[key].dtype))

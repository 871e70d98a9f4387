"""Read and write Hugging Face ``hrm_text`` checkpoints (``config.json`` + ``model.safetensors``).

This module converts only: :func:`read_hf` turns a directory into an HRM core plus the TextTask state dict and
constructor arguments, :func:`export_hf` writes a TextTask back. It imports cores and nn, never the tasks, so tasks
(transfer from an HF directory) can use it; :func:`hrmkit.loading.load_hf` builds the TextTask itself.

Two weight layouts exist for the same model (spec §6.2–6.3):

* ``published`` — ``sapientinc/HRM-Text-1B`` and what ``transformers`` itself writes with ``save_pretrained``:
  ``model.{H,L}_module.layers.{i}.attn.gqkv_proj.weight`` (rows gate|q|k|v), ``…attn.o_proj.weight``,
  ``…mlp.gate_up_proj.weight`` (rows gate|up), ``…mlp.down_proj.weight``.
* ``transformers`` — the split parameters of ``transformers``' ``HrmTextForCausalLM`` in memory:
  ``…self_attn.{q,k,v,gate,o}_proj.weight`` and ``…mlp.{gate,up,down}_proj.weight``.

Both share ``model.embed_tokens.weight``, ``lm_head.weight`` (untied) and ``model.z_L_init``. Norms have no weights.

Config: the published file's ``num_hidden_layers`` counts layers *per stack*; transformers rewrites it to
``per_stack · H_cycles · (L_cycles + 1)`` (one KV slot per invocation) and keeps the real count in
``num_layers_per_stack``. The loader uses ``num_layers_per_stack`` when present, else ``num_hidden_layers``.
``embedding_scale`` multiplies the embedding output (√d for HRM-Text); RoPE theta is ``rope_theta`` or
``rope_parameters.rope_theta``. ``L_bp_cycles`` (gradients only) maps to the core's ``bp_steps`` where it can.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from hrmkit.cores import build_core
from hrmkit.cores.base import RecursiveCore
from hrmkit.cores.hrm import HRM
from hrmkit.data.fields import swap_into_place
from hrmkit.dtypes import dtype_table
from hrmkit.errors import HrmkitInputError
from hrmkit.nn.mlp import swiglu_intermediate

# A TextTask, duck-typed: this module must not import the tasks package (the tasks import it through transfer).
TextTask = torch.nn.Module

Layout = Literal["published", "transformers"]
LAYOUTS: tuple[str, ...] = ("published", "transformers")
_DTYPES = dtype_table("bfloat16", "float32", "float16")
_ATTN = ("gate", "q", "k", "v")


# -- reading ----------------------------------------------------------------------------------------------------------
def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no config.json (an HF hrm_text checkpoint needs config.json + "
                                "model.safetensors)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HrmkitInputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise HrmkitInputError(f"{path}: expected a JSON object, got {type(config).__name__}")
    if config.get("model_type", "hrm_text") != "hrm_text":
        raise HrmkitInputError(f"{path}: model_type is {config.get('model_type')!r}, expected 'hrm_text'")
    return config


def _read_tensors(directory: Path) -> dict[str, Tensor]:
    """All tensors of ``model.safetensors`` or of the shards listed in ``model.safetensors.index.json``."""
    from safetensors.torch import load_file

    def read(path: Path) -> dict[str, Tensor]:
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own SafetensorError for torn or foreign files
            raise HrmkitInputError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None

    single = directory / "model.safetensors"
    if single.is_file():
        return read(single)
    index = directory / "model.safetensors.index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{directory}: neither model.safetensors nor model.safetensors.index.json")
    try:
        weight_map = json.loads(index.read_text()).get("weight_map")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise HrmkitInputError(f"{index}: not a JSON object ({exc})") from None
    if not isinstance(weight_map, dict):
        raise HrmkitInputError(f"{index}: no 'weight_map' object")
    tensors: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        tensors.update(read(directory / str(shard)))
    return tensors


def _field(config: dict[str, Any], key: str, where: Path, default: Any = None) -> Any:
    if key in config and config[key] is not None:
        return config[key]
    if default is None:
        raise HrmkitInputError(f"{where / 'config.json'}: missing field {key!r}")
    return default


def detect_layout(keys: list[str] | set[str]) -> Layout:
    """``published`` (fused gqkv/gate_up) or ``transformers`` (split projections), from the tensor names."""
    fused = any(k.endswith(".attn.gqkv_proj.weight") for k in keys)
    split = any(k.endswith(".self_attn.q_proj.weight") for k in keys)
    if fused == split:
        sample = ", ".join(sorted(keys)[:6])
        raise HrmkitInputError(f"cannot tell the hrm_text weight layout ({'both' if fused else 'neither'} fused "
                               f"'attn.gqkv_proj' and split 'self_attn.q_proj' keys found; first keys: {sample})")
    return "published" if fused else "transformers"


def _bp_steps(config: dict[str, Any], h_cycles: int, l_cycles: int) -> int:
    """hrmkit's deep-credit horizon for HF ``L_bp_cycles`` (left-padded with 1s to H_cycles; H always has grads)."""
    raw = list(config.get("L_bp_cycles") or [2])
    padded = [1] * max(0, h_cycles - len(raw)) + raw
    l_bp = sum(min(max(int(n), 0), l_cycles) for n in padded[:h_cycles])
    return max(2, min(h_cycles + max(l_bp, 1), h_cycles * (l_cycles + 1)))


@dataclass
class HFModel:
    """An HF ``hrm_text`` directory read into hrmkit terms: the core (weights not yet loaded), the TextTask
    constructor arguments, and the TextTask state dict that fills it exactly."""

    path: Path
    core: RecursiveCore
    task_args: dict[str, Any]  # vocab_size, pad_id, embedding_scale, attention
    state: dict[str, Tensor]  # TextTask state-dict keys (core.*, embed_tokens.*, lm_head.*)
    layout: Layout
    dtype: str  # dtype of the tensors in the file
    token_ids: dict[str, Any] = field(default_factory=dict)  # pad/bos/eos token ids from config.json


def read_hf(path: str | os.PathLike, fused_qkv: bool = True) -> HFModel:
    """Read an HF ``hrm_text`` directory (or its ``config.json`` / ``model.safetensors``); the layout is detected.

    Args:
        path: the checkpoint directory.
        fused_qkv: build the core with the fused gate|q|k|v projection (default) or split ones.

    Every tensor in the file must be used and every model tensor filled (checked when it is loaded into a task);
    mismatches name the offending key.
    """
    directory = Path(path)
    if directory.is_file():
        directory = directory.parent
    config = _read_config(directory)
    tensors = _read_tensors(directory)
    layout = detect_layout(set(tensors))
    d = int(_field(config, "hidden_size", directory))
    heads = int(_field(config, "num_attention_heads", directory))
    head_dim = int(config.get("head_dim") or d // heads)
    if head_dim * heads != d:
        raise HrmkitInputError(f"{directory / 'config.json'}: head_dim {head_dim} × num_attention_heads {heads} != "
                               f"hidden_size {d}; hrmkit's attention needs head_dim = hidden_size / heads")
    kv_heads = config.get("num_key_value_heads")
    if kv_heads is not None and int(kv_heads) != heads:
        raise HrmkitInputError(f"{directory / 'config.json'}: num_key_value_heads {kv_heads} != num_attention_heads "
                               f"{heads}; HRM-Text is multi-head attention")
    inter = int(_field(config, "intermediate_size", directory))
    expansion = 4.0 if swiglu_intermediate(d, 4.0) == inter else inter * 3 / (2 * d)
    if swiglu_intermediate(d, expansion) != inter:
        raise HrmkitInputError(f"{directory / 'config.json'}: intermediate_size {inter} is not a multiple of 256; "
                               "hrmkit's SwiGLU sizes are round_up_256(expansion · d · 2/3)")
    per_stack = int(config.get("num_layers_per_stack") or _field(config, "num_hidden_layers", directory))
    h_cycles = int(config.get("H_cycles", 2))
    l_cycles = int(config.get("L_cycles", 3))
    rope = config.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", "default")
    if rope_type != "default":
        raise HrmkitInputError(f"{directory / 'config.json'}: rope_parameters.rope_type {rope_type!r} is not supported "
                               "(hrmkit implements plain RoPE)")
    theta = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    if config.get("hidden_act", "silu") != "silu":
        raise HrmkitInputError(f"{directory / 'config.json'}: hidden_act {config['hidden_act']!r}; HRM-Text uses silu")
    if config.get("tie_word_embeddings", False):
        raise HrmkitInputError(f"{directory / 'config.json'}: tie_word_embeddings=true; HRM-Text's LM head is untied")
    scale = config.get("embedding_scale")
    if scale is None:
        scale = 1.0 / float(config.get("initializer_range", 0.02))
    core = build_core("hrm", injection="hrm_text", norm="magic", init="fmod3", gated_attn=True, hidden_size=d,
                      num_heads=heads, expansion=expansion, norm_eps=float(config.get("rms_norm_eps", 1e-6)),
                      rope_theta=theta, max_seq_len=int(config.get("max_position_embeddings", 4096)),
                      H_cycles=h_cycles, L_cycles=l_cycles, H_layers=per_stack, L_layers=per_stack,
                      fused_qkv=fused_qkv, bp_steps=_bp_steps(config, h_cycles, l_cycles))
    vocab = int(_field(config, "vocab_size", directory))
    pad = config.get("pad_token_id")
    args = {"vocab_size": vocab, "pad_id": int(pad) if pad is not None and 0 <= int(pad) < vocab else 0,
            "embedding_scale": None if math.isclose(float(scale), math.sqrt(d), rel_tol=1e-12) else float(scale),
            "attention": "prefixlm" if config.get("prefix_lm", True) else "causal"}
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in tensors.values()})
    return HFModel(directory, core, args, _to_task_state(tensors, layout, per_stack, fused_qkv, directory), layout,
                   "/".join(dtypes), {k: config.get(k) for k in ("pad_token_id", "bos_token_id", "eos_token_id")})


def _to_task_state(tensors: dict[str, Tensor], layout: Layout, per_stack: int, fused_qkv: bool,
                   where: Path) -> dict[str, Tensor]:
    left = dict(tensors)

    def take(key: str) -> Tensor:
        if key not in left:
            raise HrmkitInputError(f"{where}: missing tensor {key!r} ({layout} layout, config: {per_stack} layers per "
                                   "stack)")
        return left.pop(key)

    out = {"embed_tokens.weight": take("model.embed_tokens.weight"), "lm_head.weight": take("lm_head.weight"),
           "core.z_L_init": take("model.z_L_init")}
    for stack in ("H", "L"):
        for i in range(per_stack):
            src, dst = f"model.{stack}_module.layers.{i}.", f"core.{stack}.layers.{i}."
            if layout == "published":
                fused = take(src + "attn.gqkv_proj.weight")
                if fused.shape[0] % 4:
                    raise HrmkitInputError(f"{where}: {src}attn.gqkv_proj.weight has {fused.shape[0]} rows, not 4·d")
                parts = list(fused.chunk(4, dim=0))
                o = take(src + "attn.o_proj.weight")
                gate_up = take(src + "mlp.gate_up_proj.weight")
            else:
                parts = [take(src + f"self_attn.{p}_proj.weight") for p in _ATTN]
                o = take(src + "self_attn.o_proj.weight")
                gate_up = torch.cat([take(src + "mlp.gate_proj.weight"), take(src + "mlp.up_proj.weight")])
            if fused_qkv:
                out[dst + "attn.gqkv_proj.weight"] = torch.cat(parts)
            else:
                out.update({dst + f"attn.{p}_proj.weight": t for p, t in zip(_ATTN, parts)})
            out[dst + "attn.o_proj.weight"] = o
            out[dst + "mlp.gate_up_proj.weight"] = gate_up
            out[dst + "mlp.down_proj.weight"] = take(src + "mlp.down_proj.weight")
    if left:
        shown = ", ".join(sorted(left)[:5]) + (" ..." if len(left) > 5 else "")
        raise HrmkitInputError(f"{where}: {len(left)} tensors not used by an hrm_text model with {per_stack} layers "
                               f"per stack ({shown}); is num_hidden_layers / num_layers_per_stack right?")
    return out


def load_into(task: torch.nn.Module, state: dict[str, Tensor], where: Path) -> None:
    """Load ``state`` into ``task`` strictly, naming the first key or shape that does not fit."""
    own = task.state_dict()
    for key, value in state.items():
        if key not in own:
            raise HrmkitInputError(f"{where}: tensor maps to {key!r}, which the TextTask does not have")
        if tuple(own[key].shape) != tuple(value.shape):
            raise HrmkitInputError(f"{where}: shape mismatch for {key}: file {tuple(value.shape)}, model "
                                   f"{tuple(own[key].shape)} (check hidden_size / intermediate_size / vocab_size)")
    missing = [k for k in own if k not in state]
    if missing:
        raise HrmkitInputError(f"{where}: the file does not fill {missing[:5]}")
    task.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


# -- writing ----------------------------------------------------------------------------------------------------------
def hf_config(task: TextTask, layout: Layout = "published", dtype: str = "bfloat16",
              token_ids: dict[str, int | None] | None = None) -> dict[str, Any]:
    """The ``config.json`` dict for ``task`` in ``layout`` (see the module docstring for the two conventions)."""
    core = _check_exportable(task)
    d, heads = core.hidden_size, core.num_heads
    per_stack = len(core.H.layers)
    inter = core.H.layers[0].mlp.intermediate
    grads = core.grad_calls()
    # Gradient-carrying L calls per H cycle (schedule: L×L_cycles then H, repeated H_cycles times).
    l_bp = [sum(grads[h * (core.L_cycles + 1) + j] for j in range(core.L_cycles)) for h in range(core.H_cycles)]
    ids = {"pad_token_id": task.hparams.pad_id, "bos_token_id": None, "eos_token_id": None}
    ids.update({k: v for k, v in (getattr(task, "hf_token_ids", None) or {}).items() if v is not None})
    ids.update({k: v for k, v in (token_ids or {}).items() if v is not None})
    init_range = 1.0 / task.embed_scale
    config: dict[str, Any] = {
        "architectures": ["HrmTextForCausalLM"], "model_type": "hrm_text",
        "vocab_size": task.embed_tokens.num_embeddings, "hidden_size": d, "intermediate_size": inter,
        "num_attention_heads": heads, "head_dim": d // heads,
        "H_cycles": core.H_cycles, "L_cycles": core.L_cycles, "L_bp_cycles": l_bp,
        "max_position_embeddings": core.rope.max_seq_len, "rms_norm_eps": core.H.eps,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
        "tie_word_embeddings": False, "initializer_range": init_range, "embedding_scale": task.embed_scale,
        "prefix_lm": task.hparams.attention == "prefixlm", "dtype": dtype, "use_cache": True, **ids,
    }
    if layout == "published":
        config.update(num_hidden_layers=per_stack, num_key_value_heads=heads, rope_theta=core.rope.theta)
    else:
        config.update(num_hidden_layers=per_stack * core.H_cycles * (core.L_cycles + 1),
                      num_layers_per_stack=per_stack,
                      rope_parameters={"rope_type": "default", "rope_theta": core.rope.theta})
    return config


def _check_exportable(task: TextTask) -> Any:
    core = task.core
    problems = []
    if not isinstance(core, HRM):
        problems.append(f"core is {type(core).__name__}, not HRM")
    else:
        if core.injection != "hrm_text":
            problems.append(f"injection={core.injection!r} (needs 'hrm_text')")
        if core.shared:
            problems.append("shared=True (needs separate H and L stacks)")
        if core.norm != "magic":
            problems.append(f"norm={core.norm!r} (needs 'magic')")
        if core.rope is None:
            problems.append("no RoPE")
        if not core.shared and len(core.H.layers) != len(core.L.layers):
            problems.append(f"H_layers={len(core.H.layers)} != L_layers={len(core.L.layers)}")
        attn = core.L.layers[0].attn if core.rope is not None else None
        if attn is not None and not attn.gated:
            problems.append("gated_attn=False (needs the sigmoid output gate)")
    if problems:
        raise HrmkitInputError("export_hf: the hrm_text format describes HRM-Text models only; this task has "
                               + "; ".join(problems))
    return core


def _export_tensors(task: TextTask, layout: Layout, dtype: torch.dtype) -> dict[str, Tensor]:
    core = task.core
    state = task.state_dict()
    cast = lambda t: t.detach().to("cpu", dtype).contiguous().clone()  # noqa: E731  (no shared storage in the file)
    out = {"model.embed_tokens.weight": cast(state["embed_tokens.weight"]),
           "lm_head.weight": cast(state["lm_head.weight"]), "model.z_L_init": cast(state["core.z_L_init"])}
    for stack in ("H", "L"):
        for i in range(len(getattr(core, stack).layers)):
            src, dst = f"core.{stack}.layers.{i}.", f"model.{stack}_module.layers.{i}."
            if src + "attn.gqkv_proj.weight" in state:
                parts = list(state[src + "attn.gqkv_proj.weight"].chunk(4, dim=0))
            else:
                parts = [state[src + f"attn.{p}_proj.weight"] for p in _ATTN]
            gate_up = state[src + "mlp.gate_up_proj.weight"]
            if layout == "published":
                out[dst + "attn.gqkv_proj.weight"] = cast(torch.cat(parts))
                out[dst + "attn.o_proj.weight"] = cast(state[src + "attn.o_proj.weight"])
                out[dst + "mlp.gate_up_proj.weight"] = cast(gate_up)
            else:
                out.update({dst + f"self_attn.{p}_proj.weight": cast(t) for p, t in zip(_ATTN, parts)})
                out[dst + "self_attn.o_proj.weight"] = cast(state[src + "attn.o_proj.weight"])
                gate, up = gate_up.chunk(2, dim=0)
                out[dst + "mlp.gate_proj.weight"], out[dst + "mlp.up_proj.weight"] = cast(gate), cast(up)
            out[dst + "mlp.down_proj.weight"] = cast(state[src + "mlp.down_proj.weight"])
    return out


def export_hf(task: TextTask, out_dir: str | os.PathLike, layout: Layout = "published", dtype: str = "bfloat16",
              overwrite: bool = False, token_ids: dict[str, int | None] | None = None,
              extra_files: dict[str, str] | None = None) -> Path:
    """Write ``task`` as an HF ``hrm_text`` checkpoint directory (``config.json`` + ``model.safetensors``).

    Args:
        task: a TextTask with an HRM-Text core (``hrm``, ``injection="hrm_text"``, MagicNorm, gated attention).
            Export the EMA weights if you trained with the EMA callback (``callback.ema.copy_to(task)``), as the
            reference does.
        out_dir: the directory to create; written to a temporary sibling and renamed into place, so readers
            never see a half-written checkpoint.
        layout: ``published`` (fused, as sapientinc/HRM-Text-1B) or ``transformers`` (split projections).
        dtype: ``bfloat16`` (the published checkpoint), ``float32`` or ``float16``.
        overwrite: replace an existing ``out_dir``.
        token_ids: ``pad_token_id`` / ``bos_token_id`` / ``eos_token_id`` for config.json (HRM-Text: 5, 6, 11);
            default: those read by :func:`read_hf`, else ``pad_id`` of the task.
        extra_files: file name → text written into the same directory, in the same atomic rename (the tokenizer
            and generation config of :mod:`hrmkit.interop.hf_tokenizer`).
    """
    from safetensors.torch import save_file

    if layout not in LAYOUTS:
        raise ValueError(f"export_hf: layout must be one of {LAYOUTS}, got {layout!r}")
    if dtype not in _DTYPES:
        raise ValueError(f"export_hf: dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    config = hf_config(task, layout, dtype, token_ids)
    target = Path(out_dir)
    if target.exists() and not overwrite:
        raise FileExistsError(f"export_hf: {target} already exists (pass overwrite=True, on the command line "
                              "--overwrite true, to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        save_file(_export_tensors(task, layout, _DTYPES[dtype]), str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for name, text in (extra_files or {}).items():
            if Path(name).name != name or name in ("config.json", "model.safetensors"):
                raise ValueError(f"export_hf: extra file name {name!r} is not a plain new file name")
            (tmp / name).write_text(text)
        swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target

import math

import pytest
import torch

from hrmkit.nn.attention import Attention
from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.block import Stack, TransformerBlock
from hrmkit.nn.init import _TRUNC2_STD, trunc_normal_
from hrmkit.nn.mlp import SwiGLU, TokenMixer, swiglu_intermediate
from hrmkit.nn.norm import RMSNorm, rms_norm
from hrmkit.nn.rope import RotaryEmbedding, apply_rope


def test_rms_norm_is_parameterless_fp32_and_unit_rms():
    assert list(RMSNorm().parameters()) == []
    x = (torch.randn(4, 7, 64) * 30).to(torch.bfloat16)
    y = rms_norm(x, 1e-6)
    assert y.dtype == torch.bfloat16
    ref = x.float() / torch.sqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(y.float(), ref, atol=1e-2, rtol=1e-2)
    assert torch.allclose(y.float().pow(2).mean(-1), torch.ones(4, 7), atol=2e-2)


@pytest.mark.parametrize("d,expected", [(512, 1536), (1024, 2816), (1280, 3584), (1536, 4096)])
def test_swiglu_intermediate(d, expected):
    assert swiglu_intermediate(d, 4) == expected


def test_token_mixer_sizes_match_trm():
    # TRM MLP-t: 81 cells + 16 prefix positions -> intermediate 512; 900 + 16 -> 2560
    assert swiglu_intermediate(97, 4) == 512 and swiglu_intermediate(916, 4) == 2560
    mixer = TokenMixer(97, 4.0)
    assert sum(p.numel() for p in mixer.parameters()) == 3 * 97 * 512
    with pytest.raises(ValueError, match="seq_len=97"):
        mixer(torch.randn(1, 10, 8))


def test_swiglu_matches_formula():
    m = SwiGLU(16, 4.0)
    x = torch.randn(3, 16)
    w = m.gate_up_proj.weight
    gate, up = (x @ w.T).chunk(2, -1)
    torch.testing.assert_close(m(x), (torch.nn.functional.silu(gate) * up) @ m.down_proj.weight.T)


def test_rope_matches_explicit_rotation_with_per_sample_positions():
    rope = RotaryEmbedding(8, 32, theta=10000.0)
    pos = torch.tensor([[0, 1, 2, 0, 1], [3, 4, 5, 6, 7]])
    cos, sin = rope(pos)
    x = torch.randn(2, 5, 3, 8, dtype=torch.bfloat16)
    out = apply_rope(x, cos, sin)
    assert out.dtype == torch.bfloat16
    # explicit: pair (i, i + 4) rotated by angle pos * theta^(-2i/8)
    xf = x.float()
    for b in range(2):
        for t in range(5):
            p = pos[b, t].item()
            for i in range(4):
                ang = p * 10000 ** (-2 * i / 8)
                a, c = xf[b, t, :, i], xf[b, t, :, i + 4]
                exp_a = a * math.cos(ang) - c * math.sin(ang)
                exp_c = c * math.cos(ang) + a * math.sin(ang)
                torch.testing.assert_close(out[b, t, :, i].float(), exp_a, atol=2e-2, rtol=2e-2)
                torch.testing.assert_close(out[b, t, :, i + 4].float(), exp_c, atol=2e-2, rtol=2e-2)
    # packed samples restarting at 0 rotate exactly like a fresh sequence
    torch.testing.assert_close(out[0, 3:5], apply_rope(x[0:1, 3:5], *rope(torch.tensor([[0, 1]])))[0])
    with pytest.raises(ValueError, match="max_seq_len"):
        rope(torch.tensor([[32]]))


def test_truncated_inits():
    big = torch.empty(400_000)
    trunc_normal_(big, 0.05, "trunc2")
    assert big.abs().max() <= 2 * 0.05 / _TRUNC2_STD + 1e-6
    assert abs(big.std().item() - 0.05) < 1e-3
    trunc_normal_(big, 0.05, "fmod3")
    assert big.abs().max() <= 3 * 1.014762601732121 * 0.05
    assert abs(big.std().item() - 0.05) < 1e-3
    with pytest.raises(ValueError, match="init scheme"):
        trunc_normal_(big, 0.05, "xavier")


def test_fused_and_separate_qkv_compute_the_same_function():
    for gated in (False, True):
        fused = Attention(32, 4, gated=gated, fused_qkv=True)
        sep = Attention(32, 4, gated=gated, fused_qkv=False)
        names = ["gate", "q", "k", "v"] if gated else ["q", "k", "v"]
        w = (fused.gqkv_proj if gated else fused.qkv_proj).weight.detach()
        with torch.no_grad():
            for name, chunk in zip(names, w.chunk(len(names), 0)):
                getattr(sep, f"{name}_proj").weight.copy_(chunk)
            sep.o_proj.weight.copy_(fused.o_proj.weight)
        x = torch.randn(2, 6, 32)
        spec = AttnSpec("causal")
        torch.testing.assert_close(fused(x, spec), sep(x, spec))


def test_gated_attention_parameter_layout():
    att = Attention(64, 4, gated=True)
    assert att.gqkv_proj.weight.shape == (256, 64)  # gate|q|k|v rows
    assert not any("bias" in n for n, _ in att.named_parameters())


def test_post_and_pre_norm_blocks():
    x = torch.randn(2, 5, 32) * 10
    post = TransformerBlock(32, 2, norm="post")
    out = post(x, AttnSpec())
    assert torch.allclose(out.pow(2).mean(-1), torch.ones(2, 5), atol=1e-3)  # post-norm output has unit RMS
    pre = TransformerBlock(32, 2, norm="pre")
    assert not torch.allclose(pre(x, AttnSpec()).pow(2).mean(-1), torch.ones(2, 5), atol=1e-1)
    magic = Stack(2, exit_norm=True, dim=32, num_heads=2, norm="pre", eps=1e-6)
    assert torch.allclose(magic(x, AttnSpec()).pow(2).mean(-1), torch.ones(2, 5), atol=1e-3)


def test_bf16_compute_keeps_fp32_masters():
    block = TransformerBlock(32, 2)
    out = block(torch.randn(2, 5, 32, dtype=torch.bfloat16), AttnSpec())
    assert out.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in block.parameters())

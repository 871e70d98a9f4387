"""Building blocks shared by every core: norms, RoPE, SwiGLU, attention (with pluggable backends), blocks, init."""

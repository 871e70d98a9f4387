"""Batched permutation primitives for puzzle augmentation (Sudoku digits, bands and stacks; colour relabelings).

Every sampler takes a seeded ``numpy.random.Generator`` and returns plain arrays, so a builder can record exactly
which transform produced each stored version and undo it. They draw ``n`` transforms in one call because builders
make ~1000 versions per puzzle. The dihedral group (Maze, ARC) lives in :mod:`hrmkit.data.puzzles.dihedral`.
"""

from __future__ import annotations

import numpy as np


def inverse_permutation(perm: np.ndarray) -> np.ndarray:
    """``inv`` with ``inv[perm[i]] == i`` along the last axis (works on a batch of permutations)."""
    perm = np.asarray(perm)
    inv = np.empty_like(perm)
    np.put_along_axis(inv, perm, np.broadcast_to(np.arange(perm.shape[-1]), perm.shape), axis=-1)
    return inv


def random_value_maps(rng: np.random.Generator, n: int, num_values: int, fixed: tuple[int, ...] = (0,)) -> np.ndarray:
    """``n`` random relabelings of ``0..num_values-1`` as lookup tables ``[n, num_values]``.

    Values in ``fixed`` map to themselves (the Sudoku blank, ARC's background colour); the rest are permuted.
    """
    free = np.array([v for v in range(num_values) if v not in fixed], dtype=np.int64)
    maps = np.tile(np.arange(num_values, dtype=np.int64), (n, 1))
    maps[:, free] = free[rng.permuted(np.tile(np.arange(free.size), (n, 1)), axis=1)]
    return maps


def random_nested_permutations(rng: np.random.Generator, n: int, blocks: int = 3, size: int = 3) -> np.ndarray:
    """``n`` permutations of ``blocks*size`` lines that keep lines inside their block: shuffle the blocks, then the
    lines within each block (Sudoku bands/rows and stacks/columns). Shape ``[n, blocks*size]``; entry ``i`` names the
    old line that becomes new line ``i``."""
    outer = rng.permuted(np.tile(np.arange(blocks), (n, 1)), axis=1)
    inner = rng.permuted(np.tile(np.arange(size), (n, blocks, 1)), axis=2)
    return (outer[:, :, None] * size + inner).reshape(n, blocks * size)

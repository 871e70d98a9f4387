"""The 8 dihedral grid transforms and colour maps used by ARC (and Maze) augmentation, with their inverses.

Ids and the composition order follow the HRM/TRM reference builders, because voting at test time must undo exactly
what the builder did: a version is ``dihedral(colour_map[grid], tid)``, and it is undone by the inverse dihedral
transform first, then the inverse colour map. Pure numpy, so builders and evaluators can share it.
"""

from __future__ import annotations

import numpy as np

#: Number of dihedral transforms (the symmetry group of the square).
NUM_DIHEDRAL = 8
#: Inverse id of each dihedral transform id: ``dihedral(dihedral(g, t), DIHEDRAL_INVERSE[t]) == g``.
DIHEDRAL_INVERSE: tuple[int, ...] = (0, 3, 2, 1, 4, 5, 6, 7)
#: ARC colours 0..9; colour 0 (black background) is never remapped.
NUM_COLOURS = 10
IDENTITY_COLOUR_MAP = np.arange(NUM_COLOURS, dtype=np.uint8)


def _check_tid(tid: int) -> int:
    if isinstance(tid, bool) or not isinstance(tid, (int, np.integer)) or not 0 <= int(tid) < NUM_DIHEDRAL:
        raise ValueError(f"dihedral transform id must be an int in 0..7, got {tid!r}")
    return int(tid)


def _t(g: np.ndarray) -> np.ndarray:
    return np.swapaxes(g, -2, -1)


# Views on the last two axes, written as slices because builders call this millions of times (np.rot90/np.flip
# cost several microseconds each in argument handling); the tests compare every id with the numpy reference ops.
_OPS = (
    lambda g: g,
    lambda g: _t(g[..., ::-1]),  # rot90 k=1 (counter-clockwise)
    lambda g: g[..., ::-1, ::-1],  # rot90 k=2
    lambda g: _t(g)[..., ::-1],  # rot90 k=3
    lambda g: g[..., ::-1],  # fliplr
    lambda g: g[..., ::-1, :],  # flipud
    _t,  # transpose
    lambda g: _t(g[..., ::-1])[..., ::-1],  # fliplr(rot90 k=1): anti-diagonal reflection
)


def dihedral_transform(grid: np.ndarray, tid: int) -> np.ndarray:
    """Apply transform ``tid`` to the last two axes: 0 identity, 1..3 ``rot90`` k=1..3 (counter-clockwise),
    4 ``fliplr``, 5 ``flipud``, 6 transpose, 7 anti-diagonal reflection (``fliplr(rot90(g, 1))``).

    Returns a contiguous copy so callers can hash or store the result directly.
    """
    tid = _check_tid(tid)
    grid = np.asarray(grid)
    if grid.ndim < 2:
        raise ValueError(f"dihedral_transform needs an array with at least 2 dimensions, got shape {grid.shape}")
    return np.ascontiguousarray(_OPS[tid](grid))


def inverse_dihedral_transform(grid: np.ndarray, tid: int) -> np.ndarray:
    """Undo :func:`dihedral_transform` with the same ``tid``."""
    return dihedral_transform(grid, DIHEDRAL_INVERSE[_check_tid(tid)])


def check_colour_map(colour_map: np.ndarray) -> np.ndarray:
    """Validate a colour map (a permutation of 0..9 that keeps 0 fixed) and return it as uint8."""
    cmap = np.asarray(colour_map)
    if cmap.shape != (NUM_COLOURS,) or not np.issubdtype(cmap.dtype, np.integer):
        raise ValueError(f"a colour map must be 10 integers, got shape {cmap.shape} dtype {cmap.dtype}")
    if sorted(cmap.tolist()) != list(range(NUM_COLOURS)):
        raise ValueError(f"a colour map must be a permutation of 0..9, got {cmap.tolist()}")
    if cmap[0] != 0:
        raise ValueError(f"a colour map must keep colour 0 (background) fixed, got {cmap.tolist()}")
    return cmap.astype(np.uint8)


def random_colour_map(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of colours 1..9, with 0 kept fixed (uint8 lookup table of 10 entries)."""
    return np.concatenate([[0], rng.permutation(np.arange(1, NUM_COLOURS))]).astype(np.uint8)


def inverse_colour_map(colour_map: np.ndarray) -> np.ndarray:
    """The lookup table that undoes ``colour_map`` (its argsort)."""
    return np.argsort(check_colour_map(colour_map)).astype(np.uint8)


def colour_map_name(colour_map: np.ndarray) -> str:
    """The 10-digit name used in version names, e.g. ``"0123456789"`` for the identity."""
    return "".join(str(int(c)) for c in check_colour_map(colour_map))


def parse_colour_map(name: str) -> np.ndarray:
    """Inverse of :func:`colour_map_name`; raises on anything that is not a valid 10-digit colour map."""
    if len(name) != NUM_COLOURS or not name.isdigit():
        raise ValueError(f"a colour map name must be 10 digits, got {name!r}")
    return check_colour_map(np.array([int(c) for c in name], dtype=np.uint8))


def augment_grid(grid: np.ndarray, tid: int, colour_map: np.ndarray) -> np.ndarray:
    """Apply the colour map, then the dihedral transform (the reference order)."""
    return dihedral_transform(np.asarray(colour_map, dtype=np.uint8)[np.asarray(grid)], tid)


def inverse_augment_grid(grid: np.ndarray, tid: int, colour_map: np.ndarray) -> np.ndarray:
    """Undo :func:`augment_grid`: inverse dihedral transform first, then the inverse colour map."""
    return inverse_colour_map(colour_map)[inverse_dihedral_transform(np.asarray(grid), tid)]

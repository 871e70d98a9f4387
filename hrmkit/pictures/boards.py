"""PNG pictures of puzzles and predictions (Sudoku, Maze, ARC) for reports, docs and eyeballing failures.

Every ``render_*`` returns a ``PIL.Image`` (RGB) with a size that follows from the grid and ``cell`` alone, so tests
and notebooks can place or compare them; :func:`save_png` writes one atomically. Pillow only, imported lazily.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

RGB = tuple[int, int, int]

#: The standard ARC palette (colours 0..9: black, blue, red, green, yellow, grey, magenta, orange, sky, maroon).
ARC_PALETTE: tuple[RGB, ...] = (
    (0, 0, 0), (0, 116, 217), (255, 65, 54), (46, 204, 64), (255, 220, 0),
    (170, 170, 170), (240, 18, 190), (255, 133, 27), (127, 219, 255), (135, 12, 37),
)
WHITE: RGB = (255, 255, 255)
GRID_LINE: RGB = (85, 85, 85)
TEXT: RGB = (0, 0, 0)
SUDOKU_GIVEN_BG: RGB = (224, 224, 224)
SUDOKU_FILLED_BG: RGB = (255, 255, 255)
SUDOKU_GIVEN_FG: RGB = (0, 0, 0)
SUDOKU_FILLED_FG: RGB = (0, 90, 200)
SUDOKU_WRONG_FG: RGB = (210, 30, 30)
#: Maze token colours: PAD, wall '#', open ' ', start 'S', goal 'G', path 'o'.
MAZE_COLOURS: tuple[RGB, ...] = ((255, 0, 255), (40, 40, 40), WHITE, (46, 204, 64), (255, 65, 54), (255, 170, 0))
MATCH: RGB = (46, 204, 64)
MISMATCH: RGB = (255, 65, 54)
ARC_GAP = 8
ARC_TITLE_H = 16
SUDOKU_PAD = 4


def _pil():
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as e:
        raise ModuleNotFoundError("hrmkit.pictures.boards needs Pillow: pip install pillow") from e
    return Image, ImageDraw, ImageFont


def _font(size: int):
    _, _, font = _pil()
    try:
        return font.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return font.load_default()


def _sudoku_digits(value: np.ndarray | str | Sequence[int], what: str) -> np.ndarray:
    """81 cells as a 9×9 int array, 0 = blank; strings may use '.' or '0' for blanks."""
    if isinstance(value, str):
        if len(value) != 81 or any(ch not in ".0123456789" for ch in value):
            raise ValueError(f"{what}: a Sudoku string must be 81 characters of '.', 0-9, got {value[:20]!r}...")
        return np.array([0 if ch == "." else int(ch) for ch in value], dtype=np.int64).reshape(9, 9)
    arr = np.asarray(value)
    if arr.size != 81 or not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 9:
        raise ValueError(f"{what}: expected 81 integers in 0..9 (0 = blank), got shape {arr.shape} dtype {arr.dtype}")
    return arr.reshape(9, 9).astype(np.int64)


def render_sudoku(puzzle: np.ndarray | str, solution: np.ndarray | str | None = None,
                  truth: np.ndarray | str | None = None, cell: int = 32) -> Image.Image:
    """A 9×9 board: givens (non-zero in ``puzzle``) on grey in black, cells filled by ``solution`` on white in blue,
    filled digits that disagree with ``truth`` in red. Size: ``9·cell + 2·SUDOKU_PAD`` square."""
    image_mod, draw_mod, _ = _pil()
    if cell < 12:
        raise ValueError(f"cell must be >= 12 pixels for digits to fit, got {cell}")
    given = _sudoku_digits(puzzle, "puzzle")
    filled = given if solution is None else _sudoku_digits(solution, "solution")
    if solution is not None and ((given != 0) & (filled != given)).any():
        raise ValueError("solution changes a given digit of the puzzle")
    right = None if truth is None else _sudoku_digits(truth, "truth")
    side = 9 * cell + 2 * SUDOKU_PAD
    img = image_mod.new("RGB", (side, side), WHITE)
    draw = draw_mod.Draw(img)
    font = _font(int(cell * 0.6))
    for r in range(9):
        for c in range(9):
            x0, y0 = SUDOKU_PAD + c * cell, SUDOKU_PAD + r * cell
            is_given = given[r, c] != 0
            background = SUDOKU_GIVEN_BG if is_given else SUDOKU_FILLED_BG
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=background)
            digit = int(filled[r, c])
            if digit:
                colour = SUDOKU_GIVEN_FG if is_given else SUDOKU_FILLED_FG
                if not is_given and right is not None and right[r, c] != digit:
                    colour = SUDOKU_WRONG_FG
                draw.text((x0 + cell / 2, y0 + cell / 2), str(digit), fill=colour, font=font, anchor="mm")
    for i in range(10):
        width = 3 if i % 3 == 0 else 1
        pos = SUDOKU_PAD + i * cell
        draw.line([(pos, SUDOKU_PAD), (pos, side - SUDOKU_PAD)], fill=TEXT, width=width)
        draw.line([(SUDOKU_PAD, pos), (side - SUDOKU_PAD, pos)], fill=TEXT, width=width)
    return img


def render_maze(grid: np.ndarray | str, cell: int = 10) -> Image.Image:
    """A maze grid (tokens 1..5 or a ``"# SGo"`` string): walls dark, open white, S green, G red, path orange.
    Size: ``cols·cell × rows·cell``."""
    image_mod, _, _ = _pil()
    if isinstance(grid, str):
        from hrmkit.data.puzzles.maze import encode_grid

        grid = encode_grid(grid)
    tokens = np.asarray(grid)
    if tokens.ndim != 2 or tokens.size == 0 or tokens.min() < 0 or tokens.max() >= len(MAZE_COLOURS):
        raise ValueError(f"a maze must be a 2-D grid of tokens 0..{len(MAZE_COLOURS) - 1}, got shape {tokens.shape}")
    if cell < 1:
        raise ValueError(f"cell must be >= 1 pixel, got {cell}")
    rgb = np.array(MAZE_COLOURS, dtype=np.uint8)[tokens]
    rgb = rgb.repeat(cell, axis=0).repeat(cell, axis=1)
    return image_mod.fromarray(rgb)


def _arc_grid(value: np.ndarray | Sequence[Sequence[int]], what: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 2 or (arr.size and (arr.min() < 0 or arr.max() > 9)):
        raise ValueError(f"{what}: expected a 2-D grid of ARC colours 0..9, got shape {arr.shape}")
    return arr.astype(np.int64)


def arc_panels_size(shapes: Sequence[tuple[int, int]], cell: int = 16) -> tuple[int, int]:
    """(width, height) of :func:`render_arc_panels` for grids of these (rows, cols)."""
    width = sum(max(c, 1) * cell for _, c in shapes) + ARC_GAP * (len(shapes) + 1)
    height = ARC_TITLE_H + max(max(r, 1) for r, _ in shapes) * cell + 2 * ARC_GAP
    return width, height


def render_arc_panels(panels: Sequence[tuple[str, np.ndarray | Sequence[Sequence[int]]]], cell: int = 16,
                      borders: Sequence[RGB | None] | None = None) -> Image.Image:
    """Titled ARC grids side by side in the standard palette, thin grey cell lines, optional coloured frames.

    Panel ``i`` has its top-left cell at ``(ARC_GAP + Σ_{j<i}(cols_j·cell + ARC_GAP), ARC_TITLE_H + ARC_GAP)``;
    the whole size is :func:`arc_panels_size`.
    """
    image_mod, draw_mod, _ = _pil()
    if not panels:
        raise ValueError("render_arc_panels needs at least one (title, grid) panel")
    if cell < 3:
        raise ValueError(f"cell must be >= 3 pixels, got {cell}")
    grids = [_arc_grid(g, f"panel {i} ({title!r})") for i, (title, g) in enumerate(panels)]
    if borders is not None and len(borders) != len(panels):
        raise ValueError(f"borders must have one entry per panel ({len(panels)}), got {len(borders)}")
    size = arc_panels_size([g.shape for g in grids], cell)
    img = image_mod.new("RGB", size, WHITE)
    draw = draw_mod.Draw(img)
    font = _font(11)
    palette = np.array(ARC_PALETTE, dtype=np.uint8)
    x = ARC_GAP
    y = ARC_TITLE_H + ARC_GAP
    for i, ((title, _), grid) in enumerate(zip(panels, grids)):
        rows, cols = grid.shape
        draw.text((x, 2), title, fill=TEXT, font=font)
        if grid.size:
            block = palette[grid].repeat(cell, axis=0).repeat(cell, axis=1)
            block[::cell, :] = GRID_LINE
            block[:, ::cell] = GRID_LINE
            img.paste(image_mod.fromarray(block), (x, y))
            draw.rectangle([x, y, x + cols * cell, y + rows * cell], outline=GRID_LINE)
        if borders is not None and borders[i] is not None:
            draw.rectangle([x - 3, y - 3, x + max(cols, 1) * cell + 2, y + max(rows, 1) * cell + 2],
                           outline=borders[i], width=2)
        x += max(cols, 1) * cell + ARC_GAP
    return img


def render_arc(input_grid: np.ndarray | Sequence[Sequence[int]], output_grid: np.ndarray | None = None,
               prediction: np.ndarray | None = None, cell: int = 16) -> Image.Image:
    """Input, expected output and prediction panels; the prediction is framed green if it equals the output, red
    if not."""
    panels = [("input", input_grid)]
    borders: list[RGB | None] = [None]
    if output_grid is not None:
        panels.append(("output", output_grid))
        borders.append(None)
    if prediction is not None:
        panels.append(("prediction", prediction))
        if output_grid is None:
            borders.append(None)
        else:
            same = np.array_equal(np.asarray(prediction), np.asarray(output_grid))
            borders.append(MATCH if same else MISMATCH)
    return render_arc_panels(panels, cell=cell, borders=borders)


def save_png(img: Image.Image, path: str | os.PathLike) -> Path:
    """Write ``img`` as PNG via a temporary file in the same directory and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            img.save(f, format="PNG")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

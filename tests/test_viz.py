"""Pictures: sizes follow from the grids, a few pixels have the right colours, PNGs are written atomically."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from hrmkit.data.puzzles.maze import encode_grid, solve  # noqa: E402
from hrmkit.pictures.boards import (  # noqa: E402
    ARC_GAP,
    ARC_PALETTE,
    ARC_TITLE_H,
    MAZE_COLOURS,
    MISMATCH,
    SUDOKU_FILLED_BG,
    SUDOKU_GIVEN_BG,
    SUDOKU_PAD,
    SUDOKU_WRONG_FG,
    arc_panels_size,
    render_arc,
    render_arc_panels,
    render_maze,
    render_sudoku,
    save_png,
)

PUZZLE = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
SOLUTION = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"


def test_sudoku_givens_and_filled_cells_differ():
    wrong = SOLUTION[:2] + "9" + SOLUTION[3:]  # cell (0, 2) is not a given
    img = render_sudoku(PUZZLE, wrong, truth=SOLUTION, cell=32)
    assert img.size == (9 * 32 + 2 * SUDOKU_PAD,) * 2 and img.mode == "RGB"
    corner = lambda r, c: img.getpixel((SUDOKU_PAD + c * 32 + 4, SUDOKU_PAD + r * 32 + 4))
    assert corner(0, 0) == SUDOKU_GIVEN_BG and corner(0, 2) == SUDOKU_FILLED_BG
    cell = np.asarray(img)[SUDOKU_PAD + 2:SUDOKU_PAD + 30, SUDOKU_PAD + 64 + 2:SUDOKU_PAD + 64 + 30].reshape(-1, 3)
    assert (np.abs(cell.astype(int) - SUDOKU_WRONG_FG).sum(axis=1) < 60).any()  # the wrong digit is drawn red
    with pytest.raises(ValueError, match="given"):
        render_sudoku(PUZZLE, "1" * 81)
    with pytest.raises(ValueError, match="81"):
        render_sudoku("123")


def test_maze_colours():
    text = "#####" "#S  #" "# # #" "#  G#" "#####"
    answer = solve(encode_grid(text))
    img = render_maze(answer, cell=6)
    assert img.size == (30, 30)
    centre = lambda r, c: img.getpixel((c * 6 + 3, r * 6 + 3))
    assert centre(0, 0) == MAZE_COLOURS[1] and centre(1, 1) == MAZE_COLOURS[3] and centre(3, 3) == MAZE_COLOURS[4]
    path_cells = list(zip(*np.nonzero(answer == 5)))
    assert len(path_cells) == 3 and all(centre(r, c) == MAZE_COLOURS[5] for r, c in path_cells)
    assert render_maze(text).size == (50, 50)
    with pytest.raises(ValueError, match="2-D"):
        render_maze(np.zeros(9, dtype=np.uint8))


def test_arc_panels_layout_and_palette():
    grid_in = np.arange(10).reshape(2, 5)
    grid_out = np.array([[3, 1], [4, 1], [5, 9]])
    pred = np.array([[3, 1], [4, 1], [5, 0]])
    img = render_arc(grid_in, grid_out, pred, cell=10)
    assert img.size == arc_panels_size([(2, 5), (3, 2), (3, 2)], cell=10) == (5 * 10 + 2 * 10 + 2 * 10 + 4 * ARC_GAP,
                                                                               ARC_TITLE_H + 30 + 2 * ARC_GAP)
    top = ARC_TITLE_H + ARC_GAP
    centre = lambda x0, r, c: img.getpixel((x0 + c * 10 + 5, top + r * 10 + 5))
    assert all(centre(ARC_GAP, r, c) == ARC_PALETTE[grid_in[r, c]] for r in range(2) for c in range(5))
    x_out = ARC_GAP + 50 + ARC_GAP
    assert centre(x_out, 2, 1) == ARC_PALETTE[9]
    x_pred = x_out + 20 + ARC_GAP
    assert centre(x_pred, 2, 1) == ARC_PALETTE[0]
    assert img.getpixel((x_pred - 3, top + 5)) == MISMATCH  # wrong prediction framed red
    assert render_arc_panels([("empty", np.zeros((0, 0), dtype=int))]).size == arc_panels_size([(0, 0)])
    with pytest.raises(ValueError, match="colours 0..9"):
        render_arc([[10]])


def test_save_png_round_trip(tmp_path):
    img = render_arc([[1, 2], [3, 4]], cell=4)
    path = save_png(img, tmp_path / "pics" / "a.png")
    assert [p.name for p in path.parent.iterdir()] == ["a.png"]
    with Image.open(path) as back:
        assert back.size == img.size and np.array_equal(np.asarray(back.convert("RGB")), np.asarray(img))

"""Sudoku: exact solver, unique-solution generator, reference augmentation, puzzle sources and the dataset builder.

Grids are 81 cells in row-major order, 0 = blank, 1..9 = digits. Tokens on disk are ``cell + 1`` (spec §4.1:
0 = PAD, 1 = blank, 2..10 = digits 1..9), so inputs are ``puzzle + 1`` and labels ``solution + 1``.

Difficulty knob of the generator: the number of givens. Named levels: ``easy`` = 40 givens, ``medium`` = 30,
``hard`` = ``minimal`` (cells removed until no further removal keeps the solution unique; typically 22-26 givens).
Fewer givens is only a proxy for difficulty: random minimal puzzles are mostly solvable by singles; for truly hard
sets use the ``csv`` (Sudoku-Extreme), ``larsdoku`` or ``top1465`` sources.

One module per part: :mod:`.grids`, :mod:`.solver`, :mod:`.generator`, :mod:`.augmentation`, :mod:`.sources`,
:mod:`.builder`. Every public name is re-exported here, so ``from hrmkit.data.puzzles.sudoku import build_sudoku``
keeps working.
"""

from hrmkit.data.puzzles.sudoku.augmentation import (
    SudokuAugmentation,
    augment_sudoku,
    augment_versions,
    sample_sudoku_augmentations,
)
from hrmkit.data.puzzles.sudoku.builder import (
    SUDOKU_BUILDER_VERSION,
    build_sudoku,
)
from hrmkit.data.puzzles.sudoku.generator import (
    LEVELS,
    MIN_GIVENS,
    Givens,
    generate,
    generate_many,
    parse_level,
)
from hrmkit.data.puzzles.sudoku.grids import (
    SEQ_LEN,
    VOCAB_SIZE,
    format_grid,
    givens_agree,
    parse_grid,
    valid_solutions,
)
from hrmkit.data.puzzles.sudoku.solver import (
    count_solutions,
    random_solution,
    solve,
)
from hrmkit.data.puzzles.sudoku.sources import (
    LARSDOKU_INSTALL,
    PuzzleSet,
    SudokuSource,
    csv_source,
    generate_source,
    larsdoku_dir,
    read_larsdoku_collection,
    read_sudoku_csv,
    read_top1465,
)

__all__ = [
    "Givens",
    "LARSDOKU_INSTALL",
    "LEVELS",
    "MIN_GIVENS",
    "PuzzleSet",
    "SEQ_LEN",
    "SUDOKU_BUILDER_VERSION",
    "SudokuAugmentation",
    "SudokuSource",
    "VOCAB_SIZE",
    "augment_sudoku",
    "augment_versions",
    "build_sudoku",
    "count_solutions",
    "csv_source",
    "format_grid",
    "generate",
    "generate_many",
    "generate_source",
    "givens_agree",
    "larsdoku_dir",
    "parse_grid",
    "parse_level",
    "random_solution",
    "read_larsdoku_collection",
    "read_sudoku_csv",
    "read_top1465",
    "sample_sudoku_augmentations",
    "solve",
    "valid_solutions",
]

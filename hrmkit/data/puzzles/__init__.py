"""Puzzle datasets (Sudoku now; Maze and ARC share the format): builders, on-disk format and augmentation."""

from hrmkit.data.puzzles.format import (
    DatasetFormatError,
    PuzzleGroup,
    PuzzleMetadata,
    SplitStats,
    iter_groups,
    read_metadata,
    write_puzzle_dataset,
)
from hrmkit.data.puzzles.sudoku import (
    SudokuAugmentation,
    build_sudoku,
    count_solutions,
    generate,
    random_solution,
    solve,
)

__all__ = [
    "DatasetFormatError",
    "PuzzleGroup",
    "PuzzleMetadata",
    "SplitStats",
    "SudokuAugmentation",
    "build_sudoku",
    "count_solutions",
    "generate",
    "iter_groups",
    "random_solution",
    "read_metadata",
    "solve",
    "write_puzzle_dataset",
]

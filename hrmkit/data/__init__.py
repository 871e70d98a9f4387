"""Data modules and builders."""

from hrmkit.data.modules import PuzzleDataModule
from hrmkit.data.puzzles import PuzzleMetadata, build_sudoku, read_metadata
from hrmkit.data.synthetic import SyntheticDataModule, make_synthetic

__all__ = ["PuzzleDataModule", "PuzzleMetadata", "SyntheticDataModule", "build_sudoku", "make_synthetic",
           "read_metadata"]

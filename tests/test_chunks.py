import pytest

from hrmkit.data.modules import PuzzleDataModule
from hrmkit.data.puzzles.format import DatasetFormatError
from hrmkit.data.puzzles.sudoku import build_sudoku


def test_truncated_or_missing_chunk_is_named_before_training(tmp_path):
    build_sudoku(str(tmp_path / "d"), train_size=6, test_size=2, levels=["easy"], num_aug=1)
    chunk = next((tmp_path / "d/train").glob("chunk-*.bin"))
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    dm = PuzzleDataModule(str(tmp_path / "d"), batch_size=2)
    with pytest.raises(DatasetFormatError, match=f"{chunk.name}.*truncated"):
        dm.setup("fit")
        dm.train_dataloader()
    chunk.unlink()
    with pytest.raises(DatasetFormatError, match="missing"):
        PuzzleDataModule(str(tmp_path / "d"), batch_size=2).train_dataloader()

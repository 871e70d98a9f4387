from pathlib import Path

import lightning as L
from PIL import Image

from hrmkit.cli import main
from hrmkit.cores import build_core
from hrmkit.data.modules import PuzzleDataModule
from hrmkit.data.puzzles.maze import build_maze
from hrmkit.data.puzzles.sudoku import build_sudoku
from hrmkit.tasks.puzzle import PuzzleTask


def test_show_draws_dataset_puzzles_and_model_answers(tmp_path, capsys):
    build_sudoku(str(tmp_path / "sud"), train_size=4, test_size=3, levels=["easy"], num_aug=0)
    build_maze(str(tmp_path / "maze"), train_size=2, test_size=2, size=10, min_path_len=4, num_loops=2)
    main(["show", "--data_dir", str(tmp_path / "maze"), "--out_dir", str(tmp_path / "pics"), "--count", "2"])
    task = PuzzleTask(build_core("hrm", "tiny", max_seq_len=128), vocab_size=11, seq_len=81, num_puzzle_identifiers=1,
                      halt_max_steps=2)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(task, PuzzleDataModule(str(tmp_path / "sud"), batch_size=2))
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    main(["show", "--data_dir", str(tmp_path / "sud"), "--out_dir", str(tmp_path / "pics"),
          "--checkpoint", str(tmp_path / "m.ckpt"), "--segments", "1"])
    files = sorted(Path(tmp_path / "pics").glob("*.png"))
    assert [f.name for f in files] == ["maze-test-000-maze.png", "maze-test-001-maze.png",
                                       "sudoku-test-000-easy.png", "sudoku-test-001-easy.png",
                                       "sudoku-test-002-easy.png"]
    assert Image.open(files[0]).size == (100, 100)
    assert "sudoku-test-002-easy.png" in capsys.readouterr().out

"""``hrmkit data sudoku``: build a puzzle dataset from one of the sources (train augmented, test as is)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np

from hrmkit.data.puzzles.format import (
    DatasetFormatError,
    PuzzleGroup,
    PuzzleMetadata,
    check_output_dir,
    write_puzzle_dataset,
)
from hrmkit.data.puzzles.sudoku.augmentation import augment_versions
from hrmkit.data.puzzles.sudoku.grids import SEQ_LEN, VOCAB_SIZE, format_grid, givens_agree, valid_solutions
from hrmkit.data.puzzles.sudoku.sources import (
    PuzzleSet,
    SudokuSource,
    _dedupe,
    _first_bad,
    _random_split,
    csv_source,
    generate_source,
    larsdoku_dir,
    read_larsdoku_collection,
    read_top1465,
)

log = logging.getLogger(__name__)

SUDOKU_BUILDER_VERSION = 1


def _tokens(cells: np.ndarray) -> np.ndarray:
    """Cells (0 blank, 1..9) to tokens ``[V, 1, 81]`` (1 blank, 2..10)."""
    return (cells.astype(np.uint8) + 1).reshape(-1, 1, SEQ_LEN)


def _group(puzzles: np.ndarray, solutions: np.ndarray, tag: int) -> PuzzleGroup:
    v = len(puzzles)
    return PuzzleGroup(_tokens(puzzles), _tokens(solutions), np.ones(v, np.int16), np.zeros(v, np.int32), int(tag))


def _train_groups(ps: PuzzleSet, num_aug: int, seed: int) -> Iterator[PuzzleGroup]:
    order = np.random.default_rng([seed, 0x0DE]).permutation(len(ps))  # mix levels/sources across LitData chunks
    for g, idx in enumerate(order):
        p, s = augment_versions(ps.puzzles[idx], ps.solutions[idx], num_aug, np.random.default_rng([seed, 0xA06, g]))
        yield _group(p, s, ps.tags[idx])


def _test_groups(ps: PuzzleSet) -> Iterator[PuzzleGroup]:
    for i in range(len(ps)):
        yield _group(ps.puzzles[i:i + 1], ps.solutions[i:i + 1], ps.tags[i])


def _check_sets(train: PuzzleSet, test: PuzzleSet, source: str) -> None:
    """Last line of defence before writing: every solution valid and consistent with its puzzle."""
    for split, ps in (("train", train), ("test", test)):
        if len(ps) == 0:
            raise ValueError(f"Sudoku source {source!r} gave an empty {split} split")
        bad = _first_bad(valid_solutions(ps.solutions) & givens_agree(ps.puzzles, ps.solutions))
        if bad is not None:
            raise DatasetFormatError(f"Sudoku source {source!r}, {split} puzzle {bad}: solution invalid or "
                                     f"inconsistent with the givens ({format_grid(ps.puzzles[bad])})")


def build_sudoku(out_dir: str, source: SudokuSource = "generate", data_dir: str | None = None,
                 train_size: int | None = 1000, test_size: int | None = 1000,
                 levels: Sequence[str] = ("easy", "medium", "hard"), min_rating: float | None = None,
                 num_aug: int = 0, seed: int = 0, num_workers: int = 2, overwrite: bool = False) -> PuzzleMetadata:
    """Build a Sudoku dataset (LitData groups + metadata.json) in ``out_dir``.

    Args:
        out_dir: directory to create. Built in ``<out_dir>.tmp-XXXX`` and renamed into place when complete.
        source: ``generate`` (fresh puzzles with a unique solution), ``csv`` (Sudoku-Extreme layout: ``train.csv`` and
            ``test.csv`` in ``data_dir``), ``larsdoku`` (673k very hard puzzles of the installed larsdoku package,
            split at random) or ``top1465`` (the Top1465 collection from the same package, solved here).
        data_dir: folder with ``train.csv`` and ``test.csv`` (``csv`` source only).
        train_size: training puzzles: per level for ``generate``; a seeded subsample for the other sources
            (None keeps every available puzzle).
        test_size: test puzzles, as ``train_size``; for ``larsdoku``/``top1465`` they are held out of the same pool.
        levels: ``generate`` only: difficulty levels, each a tag of the test metrics. ``easy`` = 40 givens,
            ``medium`` = 30, ``hard`` = ``minimal`` (as few as uniqueness allows, ~22-26), or a givens count.
        min_rating: ``csv`` only: keep rows whose ``rating`` (tdoku backtracks) is at least this.
        num_aug: augmented versions per training puzzle (digit permutation, transpose, band/row and stack/column
            shuffles), stored next to the original; duplicates are dropped. The test split is never augmented.
        seed: seeds generation, subsampling, splitting, group order and augmentation; equal seeds give equal datasets.
        num_workers: processes for generating or solving puzzles (results do not depend on it).
        overwrite: replace an existing dataset in ``out_dir`` (the old one is removed only after the new one is
            complete).

    Returns:
        The metadata written to ``<out_dir>/metadata.json``.
    """
    build_args = {"out_dir": str(out_dir), "source": source, "data_dir": data_dir, "train_size": train_size,
                  "test_size": test_size, "levels": list(levels), "min_rating": min_rating, "num_aug": num_aug,
                  "seed": seed, "num_workers": num_workers, "overwrite": overwrite}
    if num_aug < 0:
        raise ValueError(f"num_aug must be >= 0, got {num_aug}")
    for name, size in (("train_size", train_size), ("test_size", test_size)):
        if size is not None and size < 1:
            raise ValueError(f"{name} must be >= 1 or None, got {size}")
    check_output_dir(out_dir, overwrite)  # fail before spending minutes on generation
    if source == "generate":
        if train_size is None or test_size is None:
            raise ValueError("the generate source needs train_size and test_size (puzzles per level)")
        train, test, tag_names = generate_source(levels, train_size, test_size, seed, num_workers)
    elif source == "csv":
        if data_dir is None:
            raise ValueError("the csv source needs data_dir (a folder with train.csv and test.csv)")
        train, test, tag_names = csv_source(data_dir, train_size, test_size, min_rating, seed)
    elif source == "larsdoku":
        pool, tag_names = read_larsdoku_collection(larsdoku_dir() / "puzzle_collection.json.gz")
        train, test = _random_split(pool, train_size, test_size, seed, "larsdoku puzzle_collection")
    elif source == "top1465":
        pool = read_top1465(larsdoku_dir() / "top1465.py", num_workers)
        tag_names = ["top1465"]
        train, test = _random_split(pool, train_size, test_size, seed, "larsdoku top1465")
    else:
        raise ValueError(f"source must be one of generate, csv, larsdoku, top1465; got {source!r}")
    train, dropped_train = _dedupe(train)
    test, dropped_test = _dedupe(test, exclude={row.tobytes() for row in train.puzzles})
    if dropped_train or dropped_test:
        log.warning("dropped %d repeated train puzzles and %d test puzzles that repeat or appear in train",
                    dropped_train, dropped_test)
    _check_sets(train, test, source)
    from hrmkit import __version__

    meta = PuzzleMetadata(task="sudoku", vocab_size=VOCAB_SIZE, seq_len=SEQ_LEN, pad_id=0, ignore_label_id=0,
                          blank_identifier_id=0, num_puzzle_identifiers=1, tag_names=list(tag_names),
                          builder={"name": "hrmkit.sudoku", "version": SUDOKU_BUILDER_VERSION, "hrmkit": __version__},
                          source=source, seed=seed, num_aug=num_aug, build_args=build_args)
    log.info("writing %d train groups (num_aug %d) and %d test puzzles to %s", len(train), num_aug, len(test), out_dir)
    splits = {"train": _train_groups(train, num_aug, seed), "test": _test_groups(test)}
    return write_puzzle_dataset(out_dir, meta, splits, overwrite=overwrite)

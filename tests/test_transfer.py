"""Core transfer between tasks (hrmkit.transfer): exact weights, clear mismatch reports, freezing, the CLI."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hrmkit.cli import main
from hrmkit.cores import build_core
from hrmkit.data.text import pack_batch
from hrmkit.errors import HrmkitInputError
from hrmkit.tasks import PuzzleTask, TextTask
from hrmkit.transfer import TransferError, freeze_parts, init_task, read_source, save_task_checkpoint, transfer_core

# One core configuration for both tasks; only the RoPE table length differs (puzzle 81 + 1 prefix, text 64).
CORE = dict(hidden_size=32, num_heads=2, expansion=2.0, H_cycles=2, L_cycles=2, H_layers=1, L_layers=1)


def _trainer(tmp_path, steps: int = 1) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                     num_sanity_val_steps=0, limit_val_batches=0)


def _puzzle_batches(n: int = 2) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"inputs": torch.randint(1, 11, (4, 81), generator=g), "labels": torch.randint(1, 11, (4, 81), generator=g),
             "puzzle_identifiers": torch.zeros(4, dtype=torch.long)} for _ in range(n)]


def _text_batches(n: int = 2) -> list[dict]:
    rng = np.random.default_rng(0)
    return [pack_batch([(rng.integers(1, 60, 20), 8), (rng.integers(1, 60, 24), 10)], 64, pad_id=0)
            for _ in range(n)]


@pytest.fixture
def puzzle_ckpt(tmp_path):
    """A real Lightning checkpoint of a PuzzleTask trained for two steps (so its core differs from any init)."""
    task = PuzzleTask(build_core("hrm", max_seq_len=82, **CORE), vocab_size=11, seq_len=81,
                      num_puzzle_identifiers=1, halt_max_steps=2, lr=1e-2, warmup_steps=0)
    trainer = _trainer(tmp_path, steps=2)
    trainer.fit(task, train_dataloaders=DataLoader(_puzzle_batches(), batch_size=None))
    path = tmp_path / "puzzle.ckpt"
    trainer.save_checkpoint(path)
    return path, {k: v.clone() for k, v in task.core.state_dict().items()}


def _text_task(**kwargs) -> TextTask:
    return TextTask(build_core("hrm", max_seq_len=64, **CORE), vocab_size=64, warmup_steps=0, **kwargs)


def _assert_equal(state: dict[str, torch.Tensor], core: torch.nn.Module) -> None:
    got = core.state_dict()
    assert set(got) == set(state)
    for k, v in state.items():
        assert torch.equal(got[k], v), k


def test_puzzle_core_loads_into_a_text_task_and_back_exactly(tmp_path, puzzle_ckpt):
    path, puzzle_core = puzzle_ckpt
    text = _text_task()
    qkv = "L.layers.0.attn.qkv_proj.weight"
    assert not torch.equal(text.core.state_dict()[qkv], puzzle_core[qkv])
    report = init_task(text, str(path))
    _assert_equal(puzzle_core, text.core)
    assert report.source_task == "PuzzleTask" and report.target_task == "TextTask"
    assert len(report.matched) == len(puzzle_core) and report.ok
    assert {"rope.cos", "rope.sin"} <= set(report.rederived)  # RoPE tables re-derived for 64 positions
    assert report.config_diff == {"max_seq_len": (82, 64)}
    assert "embed_tokens.weight" in report.reinitialised and "task-specific" in report.reinitialised["lm_head.weight"]
    assert text.core.rope.cos.shape[0] == 64
    # a different-length RoPE table still computes the same function on the shared positions
    x = torch.randn(1, 10, 32)
    back_puzzle = PuzzleTask(build_core("hrm", max_seq_len=82, **CORE), 11, 81, 1)
    # ... and back: the text model's core (saved as a checkpoint) initialises a fresh puzzle task exactly
    text_ckpt = save_task_checkpoint(text, tmp_path / "text.ckpt")
    assert read_source(text_ckpt).task == "TextTask"
    init_task(back_puzzle, str(text_ckpt))
    _assert_equal(puzzle_core, back_puzzle.core)
    with torch.no_grad():
        out_text = text.core(x, text.core.initial_state(x))[1]
        out_puzzle = back_puzzle.core(x, back_puzzle.core.initial_state(x))[1]
    assert torch.equal(out_text, out_puzzle)


def test_init_from_in_training_is_a_weight_init_and_freeze_keeps_the_core(tmp_path, puzzle_ckpt):
    path, puzzle_core = puzzle_ckpt
    text = _text_task(init_from=str(path), freeze=["core"], lr=1e-2)
    head_before = None
    trainer = _trainer(tmp_path, steps=2)

    class Probe(L.Callback):
        def on_train_start(self, trainer, module):
            nonlocal head_before
            head_before = module.lm_head.weight.detach().clone()

    trainer.callbacks.append(Probe())
    trainer.fit(text, train_dataloaders=DataLoader(_text_batches(), batch_size=None))
    assert trainer.global_step == 2
    _assert_equal(puzzle_core, text.core)  # loaded by configure_model, then frozen through two optimizer steps
    assert all(not p.requires_grad for p in text.core.parameters())
    assert not torch.equal(head_before, text.lm_head.weight)  # the head did train
    # the saved hyper-parameters record init_from, but reloading takes the checkpoint's weights, not init_from's
    ckpt = tmp_path / "text-fit.ckpt"
    trainer.save_checkpoint(ckpt)
    path.unlink()
    reloaded = TextTask.load_from_checkpoint(ckpt, map_location="cpu")
    _assert_equal(puzzle_core, reloaded.core)
    assert torch.equal(reloaded.lm_head.weight, text.lm_head.weight)


def test_mismatched_cores_give_a_clear_report_and_copy_nothing(puzzle_ckpt):
    path, puzzle_core = puzzle_ckpt
    wider = TextTask(build_core("hrm", **{**CORE, "hidden_size": 48}), vocab_size=64)
    before = {k: v.clone() for k, v in wider.core.state_dict().items()}
    with pytest.raises(TransferError) as err:
        init_task(wider, str(path))
    msg = str(err.value)
    assert "TextTask.init_from" in msg and str(path) in msg
    assert "core.L.layers.0.attn.qkv_proj.weight: shape mismatch: source (96, 32) vs target (144, 48)" in msg
    assert "hidden_size: 32 -> 48" in msg and "build the target core with the source's size" in msg
    _assert_equal(before, wider.core)  # strict: all or nothing

    trm = build_core("trm", hidden_size=32, num_heads=2, expansion=2.0, num_layers=1)
    with pytest.raises(TransferError, match="core class differs: source HRM, target TRM"):
        transfer_core(path, trm)

    deeper = build_core("hrm", **{**CORE, "L_layers": 2})
    with pytest.raises(TransferError, match=r"core\.L\.layers\.1\.\S+: missing in the source core"):
        transfer_core(path, deeper)
    report = transfer_core(path, deeper, strict=False)  # non-strict: copy what matches, report the rest
    assert not report.ok and "core.L.layers.1.attn.qkv_proj.weight" in report.reinitialised
    assert torch.equal(deeper.L.layers[0].attn.qkv_proj.weight, puzzle_core["L.layers.0.attn.qkv_proj.weight"])


def test_freeze_parts_and_clear_errors(tmp_path, puzzle_ckpt):
    path, _ = puzzle_ckpt
    text = _text_task()
    assert freeze_parts(text, ["H"]) == ["H"]
    assert all(not p.requires_grad for p in text.core.H.parameters())
    assert all(p.requires_grad for p in text.core.L.parameters())
    assert text.lm_head.weight.requires_grad
    with pytest.raises(ValueError, match=r"freeze: 'X' is not a submodule of TextTask .*core part: rope, L, H"):
        freeze_parts(text, ["X"])
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        init_task(text, str(tmp_path / "missing.ckpt"))
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(HrmkitInputError, match="checkpoint is truncated or corrupt"):
        read_source(bad)


def test_same_task_init_copies_heads_unless_reinit(tmp_path):
    src = _text_task()
    ckpt = save_task_checkpoint(src, tmp_path / "src.ckpt")
    dst = _text_task()
    report = init_task(dst, str(ckpt), reinit=["lm_head"])
    assert torch.equal(dst.embed_tokens.weight, src.embed_tokens.weight)
    assert not torch.equal(dst.lm_head.weight, src.lm_head.weight)
    assert report.reinitialised == {"lm_head.weight": "listed in reinit"}
    other_vocab = TextTask(build_core("hrm", max_seq_len=64, **CORE), vocab_size=96)
    with pytest.raises(TransferError, match=r"embed_tokens.weight: shape mismatch: source \(64, 32\) vs target "
                                            r"\(96, 32\) \(add it to reinit"):
        init_task(other_vocab, str(ckpt))


def test_transfer_command_writes_a_loadable_checkpoint(tmp_path, puzzle_ckpt, capsys):
    path, puzzle_core = puzzle_ckpt
    target = save_task_checkpoint(_text_task(), tmp_path / "fresh-text.ckpt")
    out = tmp_path / "transferred.ckpt"
    main(["transfer", "--source", str(path), "--target", str(target), "--out", str(out), "--freeze", "[L]"])
    printed = capsys.readouterr().out
    assert "matched: " in printed and "frozen: L" in printed and f"wrote {out}" in printed
    task = TextTask.load_from_checkpoint(out, map_location="cpu")
    _assert_equal(puzzle_core, task.core)
    assert task.hparams.freeze == ["L"]
    assert all(not p.requires_grad for p in task.core.L.parameters())
    wider = save_task_checkpoint(TextTask(build_core("hrm", **{**CORE, "hidden_size": 48}), vocab_size=64),
                                 tmp_path / "wide.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        main(["transfer", "--source", str(path), "--target", str(wider)])
    assert exit_info.value.code == 2
    assert "shape mismatch" in capsys.readouterr().err


RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "transfer"


@pytest.mark.parametrize("recipe", sorted(RECIPES.rglob("*.yaml")), ids=lambda p: p.relative_to(RECIPES).as_posix())
def test_transfer_recipe_prints_its_config(recipe, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(recipe), "--print_config"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    if "TextTask" in out:
        assert "init_from: runs/transfer/" in out and "hrmkit.cores.HRM" in out


@pytest.mark.slow  # two CLI runs with a GPT-2-sized vocabulary: about 40 s of CPU
def test_cpu_transfer_recipes_chain_a_puzzle_core_into_a_text_model(tmp_path, monkeypatch):
    """recipes/transfer/cpu: the symbolic run's last.ckpt is what the text recipe's init_from reads; with the core
    frozen the text model's core still equals the puzzle core exactly after training."""
    from hrmkit.data.puzzles.sudoku import build_sudoku
    from hrmkit.data.text.puzzles_as_text import build_puzzle_text

    monkeypatch.chdir(tmp_path)
    build_sudoku("sudoku", train_size=8, test_size=4, levels=["easy"], num_workers=1)
    main(["fit", "-c", str(RECIPES / "cpu/sudoku-symbolic.yaml"), "--data.init_args.data_dir", "sudoku",
          "--data.init_args.batch_size", "4", "--data.init_args.eval_batch_size", "4", "--trainer.max_steps", "2",
          "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_model_summary",
          "false"])
    puzzle_ckpt = tmp_path / "runs/transfer/cpu/sudoku-symbolic/checkpoints/last.ckpt"
    puzzle_core = read_source(puzzle_ckpt).core_state
    build_puzzle_text("text", "sudoku", puzzle_dir="sudoku", tokenizer="gpt2", max_len=512)
    main(["fit", "-c", str(RECIPES / "cpu/sudoku-text.yaml"), "--data.init_args.data_dir", "text",
          "--model.init_args.freeze", "[core]", "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
          "--trainer.limit_val_batches", "1", "--trainer.enable_model_summary", "false"])
    (text_ckpt,) = (tmp_path / "runs/transfer/cpu/sudoku-text").rglob("*.ckpt")
    text = TextTask.load_from_checkpoint(text_ckpt, map_location="cpu")
    assert text.hparams.init_from == "runs/transfer/cpu/sudoku-symbolic/checkpoints/last.ckpt"
    _assert_equal(puzzle_core, text.core)


def test_an_exported_hf_directory_is_a_source(tmp_path):
    from hrmkit.interop.hf_hrm_text import export_hf

    src = TextTask(build_core("hrm", "text-tiny"), vocab_size=64)
    out = export_hf(src, tmp_path / "hf", dtype="float32")
    source = read_source(out)
    assert source.task == "TextTask"
    target = build_core("hrm", "text-tiny", max_seq_len=128)
    report = transfer_core(source, target)
    assert report.ok and {"rope.cos", "rope.sin"} <= set(report.rederived)
    _assert_equal(src.core.state_dict(), target)

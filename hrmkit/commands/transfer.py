"""``hrmkit transfer``: copy the core of one trained model into another and write the result."""

from __future__ import annotations

from hrmkit.loading import load
from hrmkit.transfer import init_task, save_task_checkpoint


def transfer_command(source: str, target: str, out: str | None = None, strict: bool = True,
                     reinit: list[str] | None = None, freeze: list[str] | None = None) -> str:
    """Copy the core of one trained model into another model and print what matched (``hrmkit transfer``).

    Args:
        source: the model whose core is taken: a task checkpoint (.ckpt) or an HF hrm_text directory.
        target: the model that receives it (a .ckpt or HF directory, e.g. a freshly built text model); its
            embeddings and heads stay as they are unless the source is the same task (then see ``reinit``).
        out: write the result here as a weights-only checkpoint (no optimizer or step state), usable with
            ``load_from_checkpoint`` and as a task's ``init_from``. Without it only the report is printed.
        strict: all-or-nothing: the cores must be the same class with equal shapes for every tensor.
            ``--strict false`` copies what matches and reports the rest as re-initialised.
        reinit: non-core layers to keep from the target even when the source has them (e.g. lm_head).
        freeze: parts (core, H, L, ...) to freeze; stored as the written checkpoint's ``freeze`` hyper-parameter,
            so training from it keeps them frozen.
    """
    task = load(target)
    report = init_task(task, source, freeze, reinit, strict)
    if freeze:
        task.hparams["freeze"] = list(freeze)
    text = report.format()
    print(text)
    if out is not None:
        print(f"wrote {save_task_checkpoint(task, out)}")
    return text

"""LightningModules that pair a registered core with embeddings, heads, losses and metrics."""

from hrmkit.tasks.base import Task
from hrmkit.tasks.puzzle import PuzzleTask
from hrmkit.tasks.sequence import SequenceTask
from hrmkit.tasks.text import TextTask

__all__ = ["PuzzleTask", "SequenceTask", "Task", "TextTask"]

"""Evaluation beyond per-token metrics: ARC test-time voting, pass@k and Kaggle submissions."""

from hrmkit.eval.arc import ArcVoter, crop, inverse_augment, write_json_atomic
from hrmkit.eval.arc_runner import evaluate_arc

__all__ = ["ArcVoter", "crop", "evaluate_arc", "inverse_augment", "write_json_atomic"]

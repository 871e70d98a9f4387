"""Evaluation beyond per-token metrics: ARC test-time voting, pass@k and Kaggle submissions."""

from hrmkit.eval.arc import ArcVoter, crop, inverse_augment, write_json_atomic

__all__ = ["ArcVoter", "crop", "inverse_augment", "write_json_atomic"]

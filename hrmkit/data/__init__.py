"""Data modules and builders."""

from hrmkit.data.synthetic import SyntheticDataModule, make_synthetic

__all__ = ["SyntheticDataModule", "make_synthetic"]

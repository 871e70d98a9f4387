"""hrmkit's shared core test-suite, reusable by plugin authors: ``class TestMine(CoreContract): case =
CoreCase("mine")`` under pytest, or ``check_core("mine")`` anywhere (see docs/plugins.md)."""

from typing import Any

from hrmkit.testing.case import CoreCase
from hrmkit.testing.checks import CHECKS, check_core

__all__ = ["CHECKS", "CoreCase", "CoreContract", "check_core"]


def __getattr__(name: str) -> Any:
    """``CoreContract`` needs pytest: import it only when asked for, so ``check_core`` works without pytest."""
    if name == "CoreContract":
        from hrmkit.testing.suite import CoreContract

        return CoreContract
    raise AttributeError(f"module 'hrmkit.testing' has no attribute {name!r}")

"""Deprecated alias: ``hrmkit.plot`` split into :mod:`hrmkit.pictures.charts` (drawing) and
:mod:`hrmkit.commands.plot` (the ``hrmkit plot`` command); see :mod:`hrmkit._moved`."""

from typing import Any

from hrmkit._moved import warn_moved
from hrmkit.commands import plot as _command
from hrmkit.commands.plot import plot
from hrmkit.pictures import charts as _charts

warn_moved(__name__, "hrmkit.pictures.charts (the plot command: hrmkit.commands.plot)")
__all__ = ["plot", *(n for n in vars(_charts) if not n.startswith("_"))]  # what ``import *`` gave before


def __getattr__(name: str) -> Any:
    for module in (_command, _charts):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module 'hrmkit.plot' has no attribute {name!r}")

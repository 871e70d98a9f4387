"""Deprecated alias: ``hrmkit.viz`` moved to :mod:`hrmkit.pictures.boards` (see :mod:`hrmkit._moved`)."""

from hrmkit._moved import alias
from hrmkit.pictures import boards as _new

alias(__name__, _new)

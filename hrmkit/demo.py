"""Deprecated alias: ``hrmkit.demo`` moved to :mod:`hrmkit.commands.demo` (see :mod:`hrmkit._moved`)."""

from hrmkit._moved import alias
from hrmkit.commands import demo as _new

alias(__name__, _new)

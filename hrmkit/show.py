"""Deprecated alias: ``hrmkit.show`` moved to :mod:`hrmkit.commands.show` (see :mod:`hrmkit._moved`)."""

from hrmkit._moved import alias
from hrmkit.commands import show as _new

alias(__name__, _new)

"""Deprecated alias: ``hrmkit.text_commands`` moved to :mod:`hrmkit.commands.text` (see :mod:`hrmkit._moved`)."""

from hrmkit._moved import alias
from hrmkit.commands import text as _new

alias(__name__, _new)

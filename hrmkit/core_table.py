"""Deprecated alias: ``hrmkit.core_table`` moved to :mod:`hrmkit.commands.cores` (see :mod:`hrmkit._moved`)."""

from hrmkit._moved import alias
from hrmkit.commands import cores as _new

alias(__name__, _new)

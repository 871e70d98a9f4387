"""Deprecated alias: ``hrmkit.lightning_cli`` moved to :mod:`hrmkit.commands.lightning` (see :mod:`hrmkit._moved`)."""

from hrmkit._moved import alias
from hrmkit.commands import lightning as _new

alias(__name__, _new)

"""Old module paths kept alive after a move: the old name *is* the new module, with one DeprecationWarning.

Making the old name the same module object (not a copy of its names) keeps everything that refers to it by path
working unchanged: ``from hrmkit.show import show``, private helpers, YAML ``class_path`` entries and pickled
objects in checkpoints all resolve to the very same classes and functions.
"""

from __future__ import annotations

import sys
import warnings
from types import ModuleType

#: old module path → where it lives now (tests import every old path and check the warning).
MOVED: dict[str, str] = {
    "hrmkit.demo": "hrmkit.commands.demo",
    "hrmkit.show": "hrmkit.commands.show",
    "hrmkit.text_commands": "hrmkit.commands.text",
    "hrmkit.lightning_cli": "hrmkit.commands.lightning",
    "hrmkit.core_table": "hrmkit.commands.cores",
    "hrmkit.viz": "hrmkit.pictures.boards",
    "hrmkit.plot": "hrmkit.pictures.charts",  # its ``plot`` command went to hrmkit.commands.plot
}


def warn_moved(old: str, new: str) -> None:
    """The one DeprecationWarning of an old path (raised while it is first imported; later imports are cached)."""
    warnings.warn(f"{old} moved to {new}; import it from there (the old path will be removed)",
                  DeprecationWarning, stacklevel=4)


def alias(old: str, new: ModuleType) -> None:
    """Make ``old`` name the module ``new`` from now on, warning once (the import system caches the module)."""
    warn_moved(old, new.__name__)
    sys.modules[old] = new

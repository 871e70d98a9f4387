"""Attention backends behind one call, :func:`attend`, driven by a backend-neutral :class:`AttnSpec`.

Built-ins (``sdpa``, ``flex``, ``varlen``, ``xformers``) register on import; third-party backends are
:class:`AttentionBackend` subclasses declared in the ``hrmkit.attention`` entry-point group. See docs/attention.md.
"""

from hrmkit.nn.backends import flex, sdpa, varlen, xformers_backend  # noqa: F401  (registers the built-ins)
from hrmkit.nn.backends.base import ATTENTION, AttentionBackend, BackendUnavailable, get_backend
from hrmkit.nn.backends.packing import with_plan
from hrmkit.nn.backends.selection import BackendChoice, attend, select_backend

__all__ = ["ATTENTION", "AttentionBackend", "BackendChoice", "BackendUnavailable", "attend", "get_backend",
           "select_backend", "with_plan"]

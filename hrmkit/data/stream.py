"""A continuous, resumable pull of items from a LitData ``StreamingDataLoader``: the part the puzzle and text
training loaders share (they differ only in how items become batches).

Why it exists: both loaders keep one iterator (and its worker processes) alive from one Lightning epoch to the next
so the stream runs on across data epochs, which brings three chores done once here:

* crossing a data-epoch boundary while pulling (a fresh ``iter()`` when the previous one is exhausted);
* stopping the workers deterministically when Lightning's teardown sets ``loader._iterator = None`` (left to the
  cyclic garbage collector, a worker iterator's queues are finalized before the iterator, its "stop" message is
  never sent, and shutdown waits out a 5 s timeout per worker), keeping the stream position for the next ``iter()``;
* in a forked child (another loader's worker), keeping the iterator copies inherited from the parent alive: if the
  child's garbage collector finalized one, it would stop the *parent's* workers through their shared queues.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from typing import Any

from litdata import StreamingDataLoader

#: Streams whose iterator (and its worker processes) may be alive; see _disown_inherited_iterators.
_LIVE: weakref.WeakSet[ItemStream] = weakref.WeakSet()
_INHERITED: list[Any] = []


def _disown_inherited_iterators() -> None:
    for stream in list(_LIVE):
        if stream._it is not None:
            _INHERITED.append(stream._it)
            stream._it = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_inherited_iterators)


class ItemStream:
    """Base of the stateful training loaders: ``source`` is pulled item by item, continuously across data epochs.

    Not a ``DataLoader`` on purpose: Lightning then injects no sampler and, seeing ``state_dict``/``load_state_dict``
    on the subclass, saves and restores it with the fit loop.
    """

    def __init__(self, source: StreamingDataLoader, where: str) -> None:
        self.source = source
        self.where = where
        self._it: Iterator[Any] | None = None
        _LIVE.add(self)

    def pull(self, what: str = "item") -> Any:
        """The next item of the stream, starting the next data epoch when this one is exhausted."""
        for _ in range(2):  # at most one epoch boundary: this epoch ends, the next one starts
            if self._it is None:
                self._it = iter(self.source)
            try:
                return next(self._it)
            except StopIteration:
                self._it = None
        raise RuntimeError(f"{self.where}: a whole training epoch yielded no {what}")

    def close(self) -> None:
        """Stop the source's worker processes now; the stream continues where it was at the next ``iter()``."""
        if self._it is None:
            return
        position = self.source.state_dict()
        self._it = None
        self.source.load_state_dict(position)

    def restart_at(self, position: dict[str, Any]) -> None:
        """Drop the live iterator and continue from a saved source ``position`` (a loader's ``load_state_dict``)."""
        self._it = None
        self.source.load_state_dict(position)

    @property
    def _iterator(self) -> Iterator[Any] | None:
        return self._it

    @_iterator.setter
    def _iterator(self, value: None) -> None:
        if value is not None:
            raise ValueError(f"{type(self).__name__}._iterator can only be reset to None")
        self.close()

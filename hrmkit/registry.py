"""Name → implementation registries with lazy entry-point plugins.

Built-ins register themselves with a decorator at import time (timm style). Third-party packages declare an entry point
in one of the groups below; it is *listed* without being imported (so ``hrmkit cores`` stays fast and a broken plugin
cannot take the CLI down) and imported on first :meth:`Registry.get`. :func:`load_plugins` imports every plugin up
front, which LightningCLI short class names and Lightning 2.6.6's checkpoint class guard both need.
"""

from __future__ import annotations

import difflib
import importlib
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")

DISABLE_ENV = "HRMKIT_DISABLE_PLUGINS"


class PluginError(RuntimeError):
    """A registered name could not be resolved (unknown name, or a plugin that failed to import)."""


@dataclass(frozen=True)
class Entry:
    """One registered name, as listed by ``hrmkit cores``."""

    name: str
    source: str  # "built-in" or the distribution that ships the plugin
    target: str  # import path "pkg.mod:Obj"
    error: str | None = None  # set when the plugin failed to load


def _target_of(obj: Any) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


class Registry(Generic[T]):
    """A named collection of classes or factories, extendable through the entry-point ``group``."""

    def __init__(self, kind: str, group: str | None = None, base: type | None = None) -> None:
        self.kind = kind
        self.group = group
        self.base = base
        self._items: dict[str, T] = {}
        self._sources: dict[str, str] = {}
        self._entry_points: dict[str, EntryPoint] = {}
        self._errors: dict[str, str] = {}
        self._discovered = False

    # -- registration -------------------------------------------------------------------------------------------
    def register(self, name: str, *, source: str = "built-in") -> Callable[[T], T]:
        """Decorator: ``@CORES.register("hrm")``. Re-registering a name with a different object is an error."""

        def wrap(obj: T) -> T:
            existing = self._items.get(name)
            if existing is not None and existing is not obj and _target_of(existing) != _target_of(obj):
                raise PluginError(f"{self.kind} name {name!r} is already registered by {_target_of(existing)}")
            self._check(name, obj)
            self._items[name] = obj
            self._sources.setdefault(name, source)
            return obj

        return wrap

    def _check(self, name: str, obj: Any) -> None:
        if self.base is not None and not (isinstance(obj, type) and issubclass(obj, self.base)):
            raise PluginError(f"{self.kind} {name!r} must be a subclass of {self.base.__qualname__}, got {obj!r}")

    # -- discovery ----------------------------------------------------------------------------------------------
    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        if self.group is None or os.environ.get(DISABLE_ENV, "") not in ("", "0"):
            return
        for ep in entry_points(group=self.group):
            if ep.name in self._items or ep.name in self._entry_points:
                other = self._sources.get(ep.name) or _dist_name(self._entry_points[ep.name])
                self._errors[ep.name] = f"name clash with {other}; entry point {ep.value} ignored"
                continue
            self._entry_points[ep.name] = ep

    def _load(self, name: str) -> T:
        ep = self._entry_points[name]
        try:
            obj = ep.load()
            self._check(name, obj)
        except Exception as exc:  # a plugin may fail in any way; report it by name and keep going
            self._errors[name] = f"{type(exc).__name__}: {exc}"
            del self._entry_points[name]
            raise PluginError(
                f"{self.kind} plugin {name!r} ({ep.value}, from {_dist_name(ep)}) failed to load: {self._errors[name]}"
            ) from exc
        self._items[name] = obj
        self._sources[name] = _dist_name(ep)
        del self._entry_points[name]
        return obj

    # -- lookup -------------------------------------------------------------------------------------------------
    def get(self, name: str) -> T:
        self._discover()
        if name in self._items:
            return self._items[name]
        if name in self._entry_points:
            return self._load(name)
        if name in self._errors:
            raise PluginError(f"{self.kind} plugin {name!r} is unavailable: {self._errors[name]}")
        close = difflib.get_close_matches(name, self.names(), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise PluginError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})")

    def names(self) -> list[str]:
        self._discover()
        return sorted({*self._items, *self._entry_points})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def entries(self) -> list[Entry]:
        """Every name with its source and import path; failed plugins are listed with their error."""
        self._discover()
        rows = [Entry(n, self._sources[n], _target_of(obj)) for n, obj in self._items.items()]
        rows += [Entry(n, _dist_name(ep), ep.value.replace(" ", "")) for n, ep in self._entry_points.items()]
        rows += [Entry(n, "plugin", "", err) for n, err in self._errors.items() if n not in self._items]
        return sorted(rows, key=lambda e: (e.source != "built-in", e.name))

    def load_all(self) -> dict[str, str]:
        """Import every pending plugin; return ``{name: error}`` for the ones that failed (they stay listed)."""
        self._discover()
        for name in list(self._entry_points):
            try:
                self._load(name)
            except PluginError:
                warnings.warn(f"hrmkit: {self.kind} plugin {name!r} failed to load: {self._errors[name]}", stacklevel=2)
        return dict(self._errors)

    @property
    def errors(self) -> dict[str, str]:
        self._discover()
        return dict(self._errors)


def _dist_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else "unknown distribution"


_ALL: list[Registry[Any]] = []


def track(registry: Registry[T]) -> Registry[T]:
    _ALL.append(registry)
    return registry


# Task LightningModules by class name. Checkpoints don't store their class, so loaders and transfer find it here
# (matching saved hyper-parameters against each constructor) without importing the tasks package themselves.
TASKS: Registry[type] = track(Registry("task", group="hrmkit.tasks"))


def load_plugins() -> dict[str, str]:
    """Import all plugins of every hrmkit registry. Called before CLI parsing and before checkpoint loading."""
    # Importing the packages registers the built-ins (and so creates the registries) before discovery.
    importlib.import_module("hrmkit.cores")
    importlib.import_module("hrmkit.nn.backends")
    importlib.import_module("hrmkit.tasks")
    failed: dict[str, str] = {}
    for reg in _ALL:
        failed.update({f"{reg.kind}:{k}": v for k, v in reg.load_all().items()})
    return failed

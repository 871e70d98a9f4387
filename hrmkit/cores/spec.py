"""Cores named the short way: ``hrm``, ``ut``, ``hrm:tiny`` (registry name and variant) instead of a class path.

Why: recipes and command lines should accept what ``hrmkit cores`` lists. :func:`parse_core_spec` turns a spec into
the import path and the full set of constructor arguments (class defaults overlaid with the variant), so a core
named with a variant is built exactly as that variant, whatever core the recipe had before. :func:`describe_core`
is the one line every ``fit`` prints about the core it built.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from hrmkit.cores.base import CORES, RecursiveCore

#: ``name`` or ``name:variant`` as listed by ``hrmkit cores`` (no dots: those are import paths).
_SPEC = re.compile(r"^(?P<name>[A-Za-z_][\w-]*)(?::(?P<variant>[\w.+-]+))?$")


def import_path(cls: type) -> str:
    """``module.Class`` as jsonargparse and checkpoints spell a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def registered_path(name: str) -> str | None:
    """The import path of the registered core ``name`` (built-in or plugin), or None for other names."""
    if name not in CORES.names():
        return None
    return import_path(CORES.get(name))


def core_defaults(cls: type) -> dict[str, Any]:
    """Every constructor argument with a default, following ``**kwargs`` up the class chain (as jsonargparse does)."""
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        for p in params:
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.default is not p.empty:
                out.setdefault(p.name, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return out


def parse_core_spec(spec: str) -> tuple[str, str | None, dict[str, Any]] | None:
    """``"hrm:tiny"`` → (import path, variant, every constructor argument of that variant); ``"hrm"`` → (import
    path, None, {}). None when ``spec`` is not a registered name (a class name or import path: jsonargparse's job)."""
    m = _SPEC.match(spec.strip())
    if m is None or m["name"] not in CORES.names():
        return None
    cls = CORES.get(m["name"])
    variant = m["variant"]
    if variant is None:
        return import_path(cls), None, {}
    known = getattr(cls, "variants", {})
    if variant not in known:
        raise KeyError(f"core {m['name']!r} has no variant {variant!r}; variants: {', '.join(sorted(known)) or 'none'}"
                       " (`hrmkit cores` lists them)")
    return import_path(cls), variant, {**core_defaults(cls), **known[variant]}


def registry_name(cls: type) -> str:
    """The registered name of a core class (its class name when it is not registered)."""
    for entry in CORES.entries():
        if entry.target == f"{cls.__module__}:{cls.__qualname__}":
            return entry.name
    return cls.__qualname__


def match_variant(core: RecursiveCore) -> str:
    """The named variant whose arguments ``core`` was built with, else ``custom``."""
    cls = type(core)
    defaults = core_defaults(cls)
    for name, kwargs in sorted(getattr(cls, "variants", {}).items()):
        wanted = {**defaults, **kwargs}
        if all(core.config.get(k, defaults.get(k)) == v for k, v in wanted.items()):
            return name
    return "custom"


def describe_core(core: RecursiveCore) -> str:
    """One line: registry name, variant, parameter count, call schedule and gradient-carrying calls."""
    schedule = "".join(core.schedule())
    return (f"core {registry_name(type(core))} (variant {match_variant(core)}): {core.num_parameters():,} parameters, "
            f"hidden {core.hidden_size}, schedule {schedule} ({len(schedule)} calls, bp_steps {core.bp_steps})")

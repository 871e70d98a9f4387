"""``hrmkit cores``: the registered cores (built-in and plugins) with their variants, listed in a blink.

Listing variants needs each core class, and importing them imports torch (seconds). The table is therefore cached in
``$HRMKIT_CACHE_DIR`` (default ``~/.cache/hrmkit``) under a fingerprint of everything it depends on: the hrmkit
version, the size and mtime of every core source file, the installed entry points with their distributions'
versions and the size and mtime of each plugin's top-level module files, and ``HRMKIT_DISABLE_PLUGINS``. Any change
rebuilds it (one slow run); an unwritable cache only costs speed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from importlib.metadata import entry_points
from pathlib import Path

from rich.console import Console
from rich.table import Table

import hrmkit
from hrmkit.registry import DISABLE_ENV

_GROUP = "hrmkit.cores"
_CACHE_NAME = "cores.json"


def cache_dir() -> Path:
    """Where hrmkit keeps rebuildable caches."""
    env = os.environ.get("HRMKIT_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hrmkit"


def _stat_files(folder: Path) -> list[tuple[str, int, int]]:
    out = []
    for f in sorted(folder.glob("*.py")):
        st = f.stat()
        out.append((str(f), st.st_size, st.st_mtime_ns))
    return out


def fingerprint() -> str:
    """A hash of everything the core table depends on (see the module docstring); cheap: no import."""
    parts: list = [hrmkit.__version__, os.environ.get(DISABLE_ENV, "")]
    parts += _stat_files(Path(hrmkit.__file__).parent / "cores")
    if os.environ.get(DISABLE_ENV, "") in ("", "0"):
        for ep in sorted(entry_points(group=_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            parts.append((ep.name, ep.value, dist.name if dist else "", dist.version if dist else ""))
            spec = importlib.util.find_spec(ep.value.split(":")[0].split(".")[0])
            if spec is not None and spec.origin:
                parts += _stat_files(Path(spec.origin).parent)
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def build_rows() -> list[list[str]]:
    """``[name, source, import path, variants or error]`` for every registered core (imports them)."""
    from hrmkit.cores import CORES

    rows = []
    for entry in CORES.entries():
        if entry.error:
            rows.append([entry.name, entry.source, "", f"failed to load: {entry.error}"])
            continue
        try:
            cls = CORES.get(entry.name)
        except Exception as err:  # a plugin may fail in any way; it is listed with its error
            rows.append([entry.name, entry.source, entry.target, f"failed to load: {err}"])
            continue
        rows.append([entry.name, entry.source, entry.target, " ".join(sorted(getattr(cls, "variants", {})))])
    return rows


def core_rows() -> list[list[str]]:
    """The table rows, from the cache when its fingerprint matches, else rebuilt (and cached)."""
    key = fingerprint()
    path = cache_dir() / _CACHE_NAME
    try:
        cached = json.loads(path.read_text())
        if cached.get("fingerprint") == key:
            return cached["rows"]
    except (OSError, ValueError, AttributeError):
        pass
    rows = build_rows()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cores-")
        with os.fdopen(fd, "w") as f:
            json.dump({"fingerprint": key, "rows": rows}, f)
        os.replace(tmp, path)
    except OSError:  # a read-only home only costs speed
        pass
    return rows


def list_cores(sizes: bool = False) -> None:
    """List every registered core: name, where it comes from, import path, and its named variants.

    A core is named in a recipe or on the command line by its name (``class_path: hrm``), name and variant
    (``--model.init_args.core hrm:tiny``) or import path.

    Args:
        sizes: instead, one row per core × variant with its parameter count, schedule and gradient horizon (built
            on the meta device: no memory, a few seconds).
    """
    if sizes:
        from hrmkit.cores.sizes import core_sizes

        table = Table(title="hrmkit core sizes")
        for col in ("core", "variant", "parameters", "schedule", "bp_steps"):
            table.add_column(col, justify="right" if col in ("parameters", "bp_steps") else "left")
        for row in core_sizes():
            table.add_row(row.core, row.variant, f"{row.parameters:,}", row.schedule, str(row.bp_steps))
        Console(width=160).print(table)
        return
    table = Table(title="hrmkit cores")
    for col in ("name", "source", "class", "variants"):
        table.add_column(col)
    for name, source, target, variants in core_rows():
        table.add_row(name, source, target, f"[red]{variants}[/]" if variants.startswith("failed") else variants)
    Console(width=160).print(table)

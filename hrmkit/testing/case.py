"""CoreCase: which core the shared contract checks build, and the few facts about it they cannot infer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hrmkit.cores import CORES, RecursiveCore, build_core


@dataclass(frozen=True)
class CoreCase:
    """A core under test: a registered name (built-in or entry-point plugin) or a ``RecursiveCore`` subclass not
    registered yet, built from ``variant`` (default ``tiny``) plus ``overrides``.

    ``carries_state=False`` marks a core whose output ignores the carried state (a one-pass Transformer).
    """

    core: str | type[RecursiveCore]
    variant: str | None = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    carries_state: bool = True

    def build(self, **overrides: Any) -> RecursiveCore:
        """A fresh core; ``overrides`` win over the case's own overrides and the variant."""
        kwargs = {**self.overrides, **overrides}
        if isinstance(self.core, str):
            return build_core(self.core, self.variant, **kwargs)
        if not (isinstance(self.core, type) and issubclass(self.core, RecursiveCore)):
            raise TypeError(f"CoreCase.core must be a registered core name or a RecursiveCore subclass, "
                            f"got {self.core!r}")
        variants = getattr(self.core, "variants", {})
        if self.variant is not None and self.variant not in variants:
            raise KeyError(f"{self.core.__name__} has no variant {self.variant!r}; variants: "
                           f"{', '.join(sorted(variants)) or 'none'}")
        base = variants[self.variant] if self.variant is not None else {}
        return self.core(**{**base, **kwargs})

    @property
    def registered(self) -> bool:
        """Whether checkpoints can rebuild it (:func:`hrmkit.cores.core_from_config` accepts registered cores only)."""
        cls = CORES.get(self.core) if isinstance(self.core, str) else self.core
        return any(CORES.get(name) is cls for name in CORES.names())

    def __str__(self) -> str:
        name = self.core if isinstance(self.core, str) else self.core.__name__
        return name if self.variant in (None, "tiny") else f"{name}-{self.variant}"

"""hrmkit: a Lightning framework for recursive reasoning models (HRM, TRM, HRM-Text and friends)."""

__version__ = "0.1.0.dev0"


def __getattr__(name: str):  # noqa: ANN202 - `hrmkit.load` without importing Lightning on `import hrmkit`
    if name == "load":
        from hrmkit.loading import load

        return load
    raise AttributeError(f"module 'hrmkit' has no attribute {name!r}")

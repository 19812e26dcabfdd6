"""RLHF weight-update service."""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # Looked up on first use, not at import: `python -m app` imports this package first,
    # and reading the installed metadata would delay the SIGTERM handler it installs.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("rlhf-update")
        except PackageNotFoundError:  # a source tree that was never installed
            return "0+unknown"
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)

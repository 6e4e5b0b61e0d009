"""Berth's control plane: models, immutable versions, aliases and the change feed."""

import importlib.metadata


def _installed_version() -> str:
    try:
        return importlib.metadata.version("berth")
    except importlib.metadata.PackageNotFoundError:  # imported from a checkout never installed
        return "0+unknown"


__version__ = _installed_version()
"""The installed Berth's version, from its package metadata: pyproject.toml is the one source."""

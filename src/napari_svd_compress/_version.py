"""The installed distribution's version (a leaf module, so the container can name it)."""

from __future__ import annotations

try:
    from importlib.metadata import version as _version

    __version__ = _version("napari-svd-compress")
except Exception:  # running from a source tree that is not installed
    __version__ = "0.0.0"

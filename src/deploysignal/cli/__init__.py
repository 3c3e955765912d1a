"""Command-line interface (``deploysignal``)."""

from ._main import app, main

__all__ = ["app", "main"]

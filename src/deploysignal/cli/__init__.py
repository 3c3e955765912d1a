"""Command-line interface (``deploysignal``)."""

from ._app import app, main

__all__ = ["app", "main"]

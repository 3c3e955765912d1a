"""Command-line interface (``deploysignal``)."""

from ._main import app, console_main, main

__all__ = ["app", "console_main", "main"]

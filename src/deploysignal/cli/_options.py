"""How the CLI names a setting in its messages: the ``--option`` a user typed for a settings field."""

from __future__ import annotations

__all__ = ["cli_option"]


def cli_option(field: str) -> str:
    """The command-line option of settings field ``field`` (a nested field keeps its dotted path).

    >>> cli_option("max_extensions"), cli_option("window")
    ('--max-extensions', '--window')
    """
    return "--" + field.replace("_", "-")

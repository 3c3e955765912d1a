"""Lazily loaded package attributes (PEP 562): a package re-exports a name whose module imports a heavy
library (scipy.stats, statsmodels, httpx) without importing it until the name is first used, so that a
command that never uses it starts without it.

>>> import types
>>> pkg = types.ModuleType("pkg")
>>> pkg.__getattr__ = lazy_attributes("json", {"dumps": "json"})
>>> pkg.__getattr__("dumps")([1])
'[1]'
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, table: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: attribute ``name`` is ``table[name]``'s attribute of that
    name, its module imported (relative to ``package``) on first access and the value then cached in the
    package's namespace. Any other name raises ``AttributeError`` as usual."""

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name], package), name)
        module = sys.modules.get(package)
        if module is not None:
            setattr(module, name, value)
        return value

    return __getattr__

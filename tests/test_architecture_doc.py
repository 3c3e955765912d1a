"""docs/architecture.md stays true: every dotted ``deploysignal.`` name it writes in backticks imports
(a module, or an attribute path below one: class, method, function)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
NAME = re.compile(r"`(deploysignal(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")


def resolve(dotted: str) -> object:
    """The object ``dotted`` names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)  # AttributeError names what the page got wrong
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_name_on_the_architecture_page_imports():
    names = sorted(set(NAME.findall(PAGE.read_text(encoding="utf-8"))))
    assert len(names) >= 40, names  # the page names the route, not a handful of packages
    missing = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{name}: {exc}")
    assert not missing, missing


def test_the_check_can_fail():
    import pytest

    with pytest.raises(AttributeError):
        resolve("deploysignal.gate.Gate.no_such_method")
    with pytest.raises(ModuleNotFoundError):
        resolve("deploysignal_nope.x")
    assert resolve("deploysignal.gate.Gate.update_many").__name__ == "update_many"


def test_readme_links_the_page():
    readme = (PAGE.parents[1] / "README.md").read_text(encoding="utf-8")
    assert "(docs/architecture.md)" in readme

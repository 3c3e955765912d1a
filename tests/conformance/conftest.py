from __future__ import annotations

import pytest
from service.conftest import _sim

from ._live import LiveService


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One real ``deploysignal serve`` process (SQLite store) per test module."""
    svc = LiveService(tmp_path_factory.mktemp("live"))
    yield svc
    svc.close()


@pytest.fixture(scope="session")
def healthy():
    """Simulated healthy canary telemetry and the config compiled from its baseline."""
    return _sim("healthy", 2)


@pytest.fixture(scope="session", autouse=True)
def _close_port_clients():
    """The ports' pooled HTTP clients, closed when the session ends."""
    yield
    from . import argo, flagger

    argo._CLIENT.close()
    flagger._CLIENT.close()

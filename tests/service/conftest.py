from __future__ import annotations

import functools

import numpy as np
import pytest

from deploysignal.calibration import compile_baseline
from deploysignal.simulate import simulate

WRITE, READ, KAYENTA = "w-token-test", "r-token-test", "k-token-test"


@functools.lru_cache(maxsize=4)
def _sim(scenario: str, seed: int):
    sim = simulate(scenario, seed=seed)
    cfg = compile_baseline(sim.baseline, seed=0)
    return sim, cfg


@pytest.fixture(scope="session")
def step_sim():
    return _sim("step", 1)


@pytest.fixture(scope="session")
def healthy_sim():
    return _sim("healthy", 2)


def ticks_of(frame, start: int = 0, stop: int | None = None, control=None) -> list[dict]:
    stop = len(frame) if stop is None else stop
    out = []
    for i in range(start, stop):
        vals = {s: (None if np.isnan(v) else float(v)) for s, v in zip(frame.signals, frame.values[i])}
        t = {"timestamp": float(frame.timestamps[i]), "values": vals}
        if control is not None:
            t["control"] = {s: (None if np.isnan(v) else float(v)) for s, v in zip(control.signals, control.values[i])}
        out.append(t)
    return out


def make_client(tmp_path, **kw):
    import warnings

    with warnings.catch_warnings():  # starlette asks for httpx2; httpx works the same for the test client
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from deploysignal.service import ServiceSettings, TokenEntry, create_app, hash_token

    kw.setdefault("rate_limit_token", None)  # tests drive the app faster than the default limits admit (those: test_tenancy_scope.py)
    kw.setdefault("rate_limit_analysis", None)
    kw.setdefault("rate_limit_analysis_write", None)
    kw.setdefault("rate_limit_ticks", None)
    kw.setdefault("rate_limit_failures", None)  # auth tests send many bad tokens from one address
    st = ServiceSettings(
        store_url=kw.pop("store_url", f"sqlite:///{tmp_path / 'ds.db'}"),
        create_store=kw.pop("create_store", True),
        tokens=[TokenEntry(name="w", sha256=hash_token(WRITE), role="write"), TokenEntry(name="r", sha256=hash_token(READ), role="read"),
                TokenEntry(name="k", sha256=hash_token(KAYENTA), role="kayenta")],
        **kw,
    )
    return TestClient(create_app(st), raise_server_exceptions=False)


W = {"Authorization": f"Bearer {WRITE}"}
R = {"Authorization": f"Bearer {READ}"}


@pytest.fixture(scope="session")
def postgres():
    pytest.importorskip("psycopg", reason="the PostgreSQL store needs psycopg 3 (pip install 'deploysignal[service]')")
    from ._external import Postgres

    pg = Postgres()
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    pg = request.getfixturevalue("postgres")
    return pg.fresh_db("ds_" + request.node.name.split("[")[0][-40:].lower().replace("-", "_"))

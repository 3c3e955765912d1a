"""Process set-up for the service: ``deploysignal serve`` and the multi-worker ASGI factory
``uvicorn --factory deploysignal.service._asgi:app_from_env``.

``app_from_env`` reads ``DEPLOYSIGNAL_SERVICE_SETTINGS`` (JSON of :class:`ServiceSettings`), set by
``deploysignal serve``.
"""

from __future__ import annotations

import gc
import os
import sys

from fastapi import FastAPI

from ._app import create_app
from ._engine import _parse_config
from ._settings import ServiceSettings

__all__ = ["SWITCH_INTERVAL", "app_from_env", "prepare_process"]

#: seconds a thread runs before it must hand the interpreter lock to a waiting one (CPython: 0.005)
SWITCH_INTERVAL = 0.0005


def prepare_process() -> None:
    """Ready a long-running service process before it takes requests (called once per process).

    1. Warm-up: a short gate evaluation in one- and two-sample mode on a 500-tick slice of the
       built-in simulated baseline, so the compiled kernels are loaded (from numba's on-disk cache)
       now rather than inside the first requests (~0.5 s each).
    2. ``gc.collect()`` then ``gc.freeze()``: every object alive at this point (the imported libraries,
       about 230,000 objects) moves to the permanent generation. Full collections no longer rescan
       them; on the 2-core reference machine each full collection took 150-280 ms and stalled every
       ingest waiting behind the one it interrupted. Objects created afterwards (engines, requests)
       are collected as usual. What the freeze can keep is an object alive at the freeze that later
       becomes part of unreachable cycles (the warm-up's engines and parsed config are released before it; right after
       ``prepare_process``, ``gc.unfreeze(); gc.collect()`` finds no garbage).

    3. ``sys.setswitchinterval(SWITCH_INTERVAL)`` (0.5 ms instead of CPython's 5 ms): a thread that
       wants the interpreter lock while another evaluates a large batch waits at most about this long
       per hand-over, and a single-tick request hands it over a dozen times (each store call, each
       socket write). With 5 ms, one analysis' 10,000-tick batch stretched another analysis'
       single-tick requests several-fold (``deploysignal bench --noisy-neighbour``, docs/performance.md).

    With numba's on-disk cache empty (first start after an install) the warm-up compiles the
    kernels, about 25 s on the reference machine, before the port is bound; later starts take ~1 s.
    """
    _warm_up()
    _parse_config.cache_clear()  # the warm-up's config must not be frozen
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL)


def _warm_up() -> None:
    from ..calibration import compile_baseline
    from ..simulate import simulate
    from ..telemetry import Frame
    from ._engine import AnalysisEngine, TickIn

    sim = simulate("healthy", seed=0, canary_ticks=8)
    b = sim.baseline
    cfg = compile_baseline(Frame(b.timestamps[:500], b.values[:500], b.signals), seed=0).to_json()
    names = sim.canary.signals
    for mode in ("one-sample", "two-sample"):
        eng = AnalysisEngine(cfg, {"window": 4, "mode": mode})
        rows = [(float(sim.canary.timestamps[i]), dict(zip(names, map(float, sim.canary.values[i])))) for i in range(4)]
        ticks = [TickIn(ts, v, v if mode == "two-sample" else None) for ts, v in rows]  # control = canary
        eng.ingest(ticks[:1])  # the one-tick path (live ingest) and the batch path
        eng.ingest(ticks[1:])


def app_from_env() -> FastAPI:
    raw = os.environ.get("DEPLOYSIGNAL_SERVICE_SETTINGS", "{}")
    app = create_app(ServiceSettings.model_validate_json(raw))
    prepare_process()
    return app

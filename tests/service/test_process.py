"""Service process set-up: shared parsed configs and prepare_process (kernel warm-up, gc.freeze)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deploysignal._exceptions import ConfigError
from deploysignal.service import AnalysisEngine

from .conftest import ticks_of


def test_engines_from_one_config_share_the_parsed_config_and_keep_separate_state(step_sim):
    sim, cfg = step_sim
    js = cfg.to_json()
    a, b = AnalysisEngine(js, {"window": 480}), AnalysisEngine(str(js[:10] + js[10:]), {"window": 480})  # equal, not identical
    assert a.config is b.config
    a.ingest(a.validate(ticks_of(sim.canary, 0, 200)))
    assert (a.n_ticks, b.n_ticks) == (200, 0)
    assert a.config.to_json() == js  # nothing writes into the shared model
    assert b.gate.state() != a.gate.state()
    broken = json.loads(js)
    broken["version_id"] = "cc-000000000000"
    for _ in range(2):  # errors are raised every time, never cached
        with pytest.raises(ConfigError):
            AnalysisEngine(json.dumps(broken), {"window": 480})


def test_prepare_process_warms_the_kernels_and_freezes_the_startup_heap():
    code = (
        "import gc\n"
        "from deploysignal.detectors import _kernels as K\n"
        "from deploysignal.service._asgi import prepare_process\n"
        "prepare_process()\n"
        "assert gc.get_freeze_count() > 50_000, gc.get_freeze_count()\n"
        "assert K.family_d_run.signatures and K.family_b_run.signatures and K.decide_run.signatures\n"
        "assert gc.isenabled()\n"
        "from deploysignal.service._engine import _parse_config\n"
        "assert _parse_config.cache_info().currsize == 0  # the warm-up's config was released before the freeze\n"
        "gc.unfreeze()\n"
        "assert gc.collect() == 0  # nothing unreachable was frozen\n"
        "print('ok')\n"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]

"""Tamper probe: each single-row edit of tests/service/test_issue23_store_binding.py (EDITS) applied to a
store written by the deploysignal on sys.path; prints what ``audit verify --store`` answers and what a
fresh manager serves, and how many edits pass verify. Run from the repository root, e.g. against the
code before the store binding: ``PYTHONPATH=<old checkout>/src python scripts/store_tamper_probe.py``
(20 of the first 27 passed there), or this tree's: ``PYTHONPATH=src python scripts/store_tamper_probe.py`` (0)."""
import json
import logging
import sys
import tempfile

logging.disable(logging.CRITICAL)  # the refusals are logged as errors; the table below says it
sys.path.insert(0, "tests")
from service import test_issue23_store_binding as t
from service.conftest import _sim, ticks_of
from deploysignal.service._manager import AnalysisManager
from deploysignal.store import open_store
import deploysignal
print("code:", deploysignal.__file__)
sim, cfg = _sim("step", 1)
d = tempfile.mkdtemp()
url = f"sqlite:///{d}/s.db"
t._build(url, cfg, ticks_of(sim.canary, 0, t.N))
dump = t._dump(url)
passed = []
for name, edit in t.EDITS.items():
    t._restore(url, dump); edit(url)
    r = t._verify(url)
    st = open_store(url)
    try:
        e = AnalysisManager(st).engine("a"); served = f"served {e.last.verdict if e.last else 'pending'} n={e.n_ticks}"
    except Exception as exc:
        served = f"load failed: {type(exc).__name__}"
    st.close()
    if r.exit_code == 0: passed.append(name)
    print(f"{name:32s} verify exit {r.exit_code}  {served}")
print(f"{len(passed)} of {len(t.EDITS)} edits pass audit verify --store")

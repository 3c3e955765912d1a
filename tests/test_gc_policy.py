"""The garbage-collector policy lives in the adapters (``deploysignal._gc``: service, CLI, bench), and
the library core sets none: no ``gc``, ``threading`` or ``time`` in the core modules (issue 24)."""

from __future__ import annotations

import sys

def _stress_gc_pause(pause, threads: int = 2, rounds: int = 20_000) -> bool:
    """Overlap many short pauses from several threads; True when the collector ends enabled."""
    import gc
    import threading

    def work() -> None:
        for _ in range(rounds):
            with pause():
                [object() for _ in range(5)]

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads as often as possible
    try:
        for _ in range(10):
            gc.enable()
            th = [threading.Thread(target=work) for _ in range(threads)]
            [t.start() for t in th]
            [t.join() for t in th]
            if not gc.isenabled():
                return False
        return True
    finally:
        sys.setswitchinterval(switch)
        gc.enable()


def test_overlapping_gc_pauses_from_threads_leave_the_collector_enabled(monkeypatch):
    """The service pauses the process-wide collector while it evaluates a batch; overlapping pauses from several threads (a
    service replays one analysis while it ingests into another) must not leave it switched off.
    The harness does catch the naive save/disable/restore pattern (checked when this was written:
    it ended disabled in the first round)."""
    import gc

    from deploysignal import _gc

    with _gc.gc_paused():  # it does pause, nested too
        assert not gc.isenabled()
        with _gc.gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:  # a collector the caller had switched off stays off
        with _gc.gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert _stress_gc_pause(_gc.gc_paused)
    from deploysignal.service import _manager

    calls = []
    real = _gc.gc_paused

    def spy():
        calls.append(gc.isenabled())
        return real()

    class Engine:  # what the service's evaluation calls; records whether the collector was paused
        def ingest(self, ticks):
            return [gc.isenabled() for _ in ticks]

    monkeypatch.setattr(_manager, "gc_paused", spy)
    mgr = _manager.AnalysisManager.__new__(_manager.AnalysisManager)
    mgr.eval_chunk = 2
    assert mgr._evaluate(Engine(), [0, 1, 2]) == [False, False, False]  # the service evaluates inside its pause
    assert calls == [True, True] and gc.isenabled()  # one pause per chunk, the collector on again after


def test_pauses_that_keep_overlapping_still_collect_cyclic_garbage(monkeypatch):
    """Two threads whose pauses always overlap never bring the depth to zero; a pause ending more than
    GC_STARVATION_SECONDS after the collector was last on collects the young generations itself, so
    cycles made meanwhile are freed while the pauses go on (without the valve none is)."""
    import gc
    import threading
    import time
    import weakref

    from deploysignal import _gc

    monkeypatch.setattr(_gc, "GC_STARVATION_SECONDS", 0.05)

    class Node:
        pass

    def cycle() -> weakref.ref:
        a, b = Node(), Node()
        a.other, b.other = b, a
        return weakref.ref(a)

    gc.collect()
    assert gc.isenabled()
    hold = threading.Event()
    refs: list = []

    def holder() -> None:  # one long pause that overlaps every short one
        with _gc.gc_paused():
            hold.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    try:
        time.sleep(0.01)
        refs.append(cycle())
        with _gc.gc_paused():  # ends within the starvation window: no collection
            pass
        assert refs[0]() is not None and not gc.isenabled()
        time.sleep(0.1)
        with _gc.gc_paused():  # ends after it, another pause still running: collects
            pass
        assert refs[0]() is None and not gc.isenabled()
    finally:
        hold.set()
        t.join()
    assert gc.isenabled()




#: the library core: pure computation, no process-wide state (no collector switching, locks or clocks)
CORE = ("audit", "calibration", "detectors", "fleet", "gate", "migration", "simulate", "split", "telemetry")
#: adapters inside core packages, each with why it may use a clock, threads or an event loop
ALLOWED = {
    "fleet/_bench.py": "deploysignal bench --fleet: times the observer",
    "migration/_live.py": "the live migration run: stamps each pair with its asyncio event loop's clock (loop.time())",
    "migration/_router.py": "the live dual-serve router: an asyncio adapter between agents and the protocol",
}
#: modules whose import is a clock, a lock, the collector or an event loop; ``deploysignal._gc`` is the adapters' GC pause
FORBIDDEN = frozenset({"gc", "threading", "_thread", "time", "asyncio", "deploysignal._gc", "__import__"})
#: calls that read the wall clock through a module the core may import for other reasons (datetime: conversions)
CLOCK_CALLS = frozenset({"now", "utcnow", "today"})


def _imports(path) -> set[str]:
    """What of :data:`FORBIDDEN` module ``path`` uses: top-level names of the modules it imports
    (``import a.b`` and ``from a.b import c``: ``a``), ``deploysignal._gc`` however it is imported
    (``from .._gc import ...``, ``from deploysignal import _gc``), ``__import__`` calls, and
    ``datetime.now()`` / ``date.today()`` style clock reads (as ``"datetime.now"`` etc.)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names} | {a.name for a in node.names if a.name == "deploysignal._gc"}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 0 and mod:
                found.add(mod.split(".")[0])
            if mod.split(".")[-1] == "_gc" or (mod in ("", "deploysignal") and any(a.name == "_gc" for a in node.names)):
                found.add("deploysignal._gc")
        elif isinstance(node, ast.Call):
            if getattr(node.func, "id", None) == "__import__":
                found.add("__import__")
            elif isinstance(node.func, ast.Attribute) and node.func.attr in CLOCK_CALLS:
                found.add(f"datetime.{node.func.attr}")
    return found & (FORBIDDEN | {f"datetime.{c}" for c in CLOCK_CALLS})


def test_core_modules_import_no_gc_threading_or_clock():
    """Issue 24: the core holds no process-wide state. An AST scan of every module of the core packages
    for imports of ``gc``, ``threading``, ``_thread``, ``time``, ``asyncio`` and the adapters' GC pause
    ``deploysignal._gc`` (or ``__import__``), and for ``datetime.now()``-style clock reads; the allow-list
    names the adapters that live inside core packages, and each must still need its exemption."""
    from pathlib import Path

    import deploysignal

    root = Path(deploysignal.__file__).parent
    scanned, bad = 0, []
    for pkg in CORE:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            hits = _imports(path)
            scanned += 1
            if rel in ALLOWED:
                assert hits, f"{rel} no longer uses a clock, threads or an event loop: drop it from ALLOWED"
            elif hits:
                bad.append(f"{rel}: {sorted(hits)}")
    assert scanned > 60 and not bad, bad
    assert {m for m in ("gc", "threading", "time") if m in vars(__import__("deploysignal.gate._gate", fromlist=["x"]))} == set()


def test_the_scan_catches_a_clock(tmp_path):
    """The scan is not vacuous: each forbidden form is found."""
    for src in ("import gc\n", "import time as t\n", "from threading import Lock\n", "from time import monotonic\n", "x = __import__('gc')\n",
                "from .._gc import gc_paused\n", "from ... import _gc\n", "from deploysignal._gc import gc_paused\n", "import deploysignal._gc\n",
                "from deploysignal import _gc\n", "import asyncio\n", "from datetime import datetime\nt = datetime.now()\n",
                "import datetime\nd = datetime.date.today()\n"):
        (tmp_path / "m.py").write_text(src)
        assert _imports(tmp_path / "m.py"), src
    (tmp_path / "m.py").write_text("import math\nfrom datetime import timezone\nfrom .._gcd import x\nfrom . import _gate\n")
    assert not _imports(tmp_path / "m.py")

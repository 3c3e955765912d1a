"""A split gate and its decisions under copy, pickle and state moved outside ``update``.

The gate's families keep their state in views of the compiled step's arrays (``split/_step.py``) and a
live decision builds its evidence on first read (:class:`~deploysignal.split.SplitDecision`). These
tests hold that neither is visible through the public API: a copied or pickled gate continues exactly
as the uncopied one on the golden streams (``test_split_compiled.py``), a decision read late shows its
own tick, and a decision is still a dataclass that copies, pickles and converts to a dict.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from typing import Any

import numpy as np
import pytest
from tests.split.test_split_compiled import N_STREAMS, stream

from deploysignal.split import SplitDecision, SplitGate


def _live(gate: SplitGate, data: Any, lo: int, hi: int) -> list[Any]:
    return [gate.update(data.ticks(t, t + 1)).records() for t in range(lo, hi)]


def _tail(gate: SplitGate, data: Any, lo: int) -> str:
    """Everything the gate shows from tick ``lo`` on: live records, then summary and state."""
    recs = _live(gate, data, lo, data.n_ticks)
    return json.dumps([recs, gate.summary(), gate.state()], sort_keys=True, allow_nan=True)


def _copies(gate: SplitGate) -> dict[str, SplitGate]:
    return {"deepcopy": copy.deepcopy(gate), "copy": copy.copy(gate), "pickle": pickle.loads(pickle.dumps(gate))}


def _check_copies(seeds: range) -> None:
    """Copy, deepcopy and pickle the gate fresh, after a third of the ticks (live, a decision still
    held) and after a batch run of half the ticks; each copy and the original continue to the end and
    show the same records, summary and state as a gate never copied."""
    for seed in seeds:
        specs, settings, data = stream(seed)
        T = data.n_ticks
        ref = SplitGate(specs, settings)
        want = _tail(ref, data, 0)
        fresh = _copies(SplitGate(specs, settings))
        for how, g in fresh.items():
            assert _tail(g, data, 0) == want, (seed, how, "fresh")
        third = T // 3
        gate = SplitGate(specs, settings)
        first = _live(gate, data, 0, third)
        held = gate.update(data.ticks(third, third + 1)) if third < T else None  # not read before the copies
        copies = _copies(gate)
        if held is not None:
            assert [*first, held.records()] == json.loads(json.dumps(_live(SplitGate(specs, settings), data, 0, third + 1))), (seed, "held")
        lo = third + (held is not None)
        full = json.loads(want)
        for how, g in {**copies, "original": gate}.items():
            got = json.loads(_tail(g, data, lo))
            assert got[0] == full[0][lo:] and got[1:] == full[1:], (seed, how, "live")
        half = T // 2
        bref = SplitGate(specs, settings)
        bref.run_batch(data)
        gate = SplitGate(specs, settings)
        gate.run_batch(data.ticks(0, half))
        for how, g in _copies(gate).items():
            g.run_batch(data.ticks(half, T))
            assert (g.summary(), g.state()) == (bref.summary(), bref.state()), (seed, how, "batch")
            restored = SplitGate.from_state(specs, settings, json.loads(json.dumps(g.state())))
            assert restored.state() == bref.state(), (seed, how, "restored")


def test_copied_and_pickled_gates_continue_as_the_original():
    """CI: 16 of the golden streams (every 10th: proceed, extend and rollback, a sample-ratio fire, session-routed units)."""
    _check_copies(range(0, N_STREAMS, 10))


@pytest.mark.extended
@pytest.mark.parametrize("chunk", range(4))
def test_copied_and_pickled_gates_continue_as_the_original_all_streams(chunk):
    """Every golden stream (15.8 s wall at load 1.6)."""
    _check_copies(range(chunk, N_STREAMS, 4))


def _held_and_reference(seed: int, at: int) -> tuple[SplitGate, SplitDecision, list[dict[str, Any]], Any]:
    specs, settings, data = stream(seed)
    ref = SplitGate(specs, settings)
    want = _live(ref, data, 0, at + 1)[-1]
    gate = SplitGate(specs, settings)
    _live(gate, data, 0, at)
    return gate, gate.update(data.ticks(at, at + 1)), want, data


def test_decision_read_late_shows_its_own_tick_when_a_family_moves():
    """A decision not yet read keeps its tick's evidence when a family is stepped on its own, restored
    from a state, or given a new threshold before the first read."""
    gate, d, want, data = _held_and_reference(3, 10)
    gate.families[0].step(data.ticks(11, 12))
    assert d.records() == want
    gate, d, want, data = _held_and_reference(3, 10)
    gate.families[0].load_state(SplitGate(gate.specs, gate.settings).families[0].state())
    assert d.records() == want
    gate, d, want, data = _held_and_reference(3, 5)
    gate.families[0].threshold = gate.families[0].threshold / 4
    assert d.records() == want


def test_decision_read_while_the_gate_moves_keeps_its_own_tick():
    """The interleaving of a reader and the gate's next ``update`` (another thread, which the gate does
    not support, or a callback): the first evidence stored stays, a later half-built one is dropped."""
    gate, d, want, data = _held_and_reference(0, 10)
    fam = gate.families[0]
    own = fam.evidence
    done = []

    def evidence():  # the reader is inside family 0's evidence when the gate takes tick 11
        if not done:
            done.append(11)
            gate.update(data.ticks(11, 12))
        return own()

    fam.evidence = evidence
    assert d.records() == want


def test_decision_is_a_dataclass_that_copies_pickles_and_converts():
    """copy, deepcopy, pickle and ``dataclasses.asdict`` of a live decision (evidence not yet read) give
    its values and evidence, as the eager dataclass did; equality and hash ignore the evidence."""
    gate, d, want, data = _held_and_reference(3, 10)
    assert dataclasses.is_dataclass(d)
    for c in (copy.copy(d), copy.deepcopy(d), pickle.loads(pickle.dumps(d))):
        assert c == d and c.records() == want and hash(c) == hash(d)
    as_dict = dataclasses.asdict(d)
    assert as_dict["tick"] == 11 and [e["family"] for e in as_dict["evidence"]] == [r["family"] for r in want[:-1]]
    assert d.records() == want
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.verdict = "proceed"  # type: ignore[misc]
    assert SplitDecision(1, 0.0, "pending", False, None, (), "").evidence == ()


def test_from_state_refuses_measured_of_the_wrong_length():
    """``measured`` must hold one count per family (it was silently stretched)."""
    specs, settings, data = stream(3)
    gate = SplitGate(specs, settings)
    gate.run_batch(data)
    st = gate.state()
    st["measured"] = st["measured"][:1] if len(st["measured"]) > 1 else st["measured"] * 2
    with pytest.raises(ValueError, match="measured holds"):
        SplitGate.from_state(specs, settings, st)
    assert np.array_equal(SplitGate.from_state(specs, settings, gate.state())._measured, gate._measured)  # noqa: SLF001


def test_update_at_a_tick_of_the_run_equals_update_of_its_cut():
    """``update(data, t)`` (the CLI, service and audit replay path, no cut built) gives the records of
    ``update(data.ticks(t, t + 1))`` on 16 golden streams, and refuses a tick outside the run."""
    for seed in range(5, N_STREAMS, 10):
        specs, settings, data = stream(seed)
        a, b = SplitGate(specs, settings), SplitGate(specs, settings)
        for t in range(data.n_ticks):
            assert a.update(data, t).records() == b.update(data.ticks(t, t + 1)).records(), (seed, t)
    with pytest.raises(ValueError, match="tick 99 of a run"):
        a.update(data, 99)

"""Issue 22: family A's ``a_nuisance="mixture"`` (the level nuisance integrated out of a Gaussian
likelihood ratio, :mod:`deploysignal.detectors._nuisance_mixture`).

(a) The kernel's closed form is the ratio of the two Gaussian marginal likelihoods it claims to be
(checked against scipy's multivariate normal with cell and global-offset covariances).
(b) Monotone in harm: a larger harmful step never gives family A less log-wealth at any tick nor a
later rollback (hypothesis, mixture only; ``tests/test_family_a_monotone.py`` runs the shared property
test and the five gross cases with every treatment that claims monotonicity, this one included).
(c) The state round-trips exactly (the service saves and reloads family A between batches).
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal

from deploysignal.detectors._nuisance_mixture import mixture_step
from deploysignal.gate import Gate, GateSettings
from deploysignal.telemetry import Frame
from test_family_a_monotone import HARMFUL, MODES, _shifted, check_larger_harm, sims  # noqa: F401  (sims: the shared fixture)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), v_g=st.sampled_from([0.0, 0.01, 0.3]), delta=st.floats(0.05, 2.0))
def test_closed_form_is_the_marginal_likelihood_ratio(seed, n, v_g, delta):
    rng = np.random.default_rng(seed)
    n_cells = 3
    cells = rng.integers(0, n_cells, size=n)
    v_c = rng.uniform(0.001, 0.5, size=n_cells)
    y = rng.normal(size=n) * 1.5
    Sm, Nm, Um, Am, out = np.zeros((1, n_cells, 1)), np.zeros((1, n_cells, 1)), np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1)
    inv_g2 = np.array([[1.0 / v_g if v_g > 0 else np.inf]])
    for t in range(n):
        z = np.array([[y[t]]])
        mixture_step(z, z, z, z, False, False, int(cells[t]), np.array([0]), np.array([1.0]), 6.0, 6.0, 3.0, np.ones((1, 1)),
                     np.zeros((1, n_cells, 1)), v_c.reshape(1, n_cells, 1), inv_g2, np.zeros((1, 1)), np.zeros((1, 1)),
                     np.array([delta]), np.zeros(1), Sm, Nm, Um, Am, out)
    y = np.clip(y, -6.0, 6.0)
    B = np.eye(n_cells)[cells]
    cov = np.eye(n) + B @ np.diag(v_c) @ B.T + v_g
    expected = multivariate_normal(delta * np.ones(n), cov).logpdf(y) - multivariate_normal(np.zeros(n), cov).logpdf(y)
    assert abs(out[0] - expected) <= 1e-8 * (1.0 + abs(expected))


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    which=st.integers(0, 1),
    name=st.sampled_from(HARMFUL),
    onset=st.integers(0, 250),
    small=st.floats(0.0, 3.0),
    extra=st.floats(1e-3, 60.0),
    mode=st.sampled_from(MODES),
)
def test_mixture_larger_harm_never_gives_less_evidence(sims, which, name, onset, small, extra, mode):  # noqa: F811
    sim, cfg = sims[which]
    check_larger_harm(cfg, sim.canary, sim.control, name, onset, small, extra, mode, "mixture")


def test_mixture_state_round_trips_and_batch_agrees(sims):  # noqa: F811
    """Saving and reloading the gate mid-run (JSON state, as the service does) gives the same evidence as
    running straight through; the batch path over ``P`` streams (``run_batch``, the kernels' ``step``)
    decides as the single-stream path (``run``) does."""
    import json

    sim, cfg = sims[0]
    s = GateSettings(a_nuisance="mixture")
    can = _shifted(sim.canary, "p99_latency_ms", 0.8, 50)
    whole = Gate(cfg, s).run(can)
    g = Gate(cfg, s)
    first = g.run(Frame(can.timestamps[:120], can.values[:120], can.signals))
    g2 = Gate.from_state(cfg, s, json.loads(json.dumps(g.state())))
    rest = g2.run(Frame(can.timestamps[120:], can.values[120:], can.signals))
    a = [next(e.log_wealth for e in d.evidence if e.family == "A") for d in whole]
    b = [next(e.log_wealth for e in d.evidence if e.family == "A") for d in [*first, *rest]]
    assert a == b
    batch = Gate([cfg, cfg], s).run_batch(can.timestamps, np.stack([can.values, can.values]))
    rolled = [d.tick for d in whole if d.verdict == "rollback"]
    assert batch.verdicts() == [whole[-1].verdict] * 2 or (rolled and batch.verdicts() == ["rollback"] * 2)
    if rolled:
        assert list(batch.decided_at) == [rolled[0]] * 2

"""The dashboard in a real headless Chromium (Debian packages chromium + chromium-driver, driven by selenium).

One started service (``deploysignal serve`` subprocess) and one ``deploysignal ui`` subprocess are shared by
the module's tests: pages load without console errors, show the verdict and the plots of a rolled-back, a
proceeded and a split analysis, update live while ticks arrive; ``deploysignal report`` opens offline (a
file:// page that fetches nothing) with all plots; the fleet and migration pages draw. Screenshots go to
``$DEPLOYSIGNAL_SCREENSHOT_DIR`` when set, else to a pytest tmp dir (test artefacts).

When the browser is missing, scripts/ci_services.sh is asked to install it (root + apt-get); if that
fails the tests skip with the reason, never pass silently.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from ._external import _ensure
from ._proc import READ, WRITE, Server, free_port
from ._split import METRICS, split_ticks
from .conftest import _sim, ticks_of

W = {"Authorization": f"Bearer {WRITE}"}
R = {"Authorization": f"Bearer {READ}"}
SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploysignal", *args], env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = os.environ.get("DEPLOYSIGNAL_SCREENSHOT_DIR")
    p = Path(d) if d else tmp_path_factory.mktemp("screenshots")
    p.mkdir(parents=True, exist_ok=True)
    return p


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install 'deploysignal[dev]')")
    _ensure("chromium", "chromium")
    _ensure("chromedriver", "chromium-driver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000",
              "--no-first-run", "--disable-extensions", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not download a browser or driver
    drv = webdriver.Chrome(options=opts, service=Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A served store with a rolled-back, a proceeded and a split analysis (the split one is fed later)."""
    tmp = tmp_path_factory.mktemp("dash")
    store = f"sqlite:///{tmp / 'ds.db'}"
    step, step_cfg = _sim("step", 1)
    healthy, healthy_cfg = _sim("healthy", 2)
    with Server(tmp, store) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        for aid, (sim, cfg), window in (("checkout-rollback", (step, step_cfg), 480), ("search-proceed", (healthy, healthy_cfg), 120)):
            r = c.post("/v1/analyses", json={"id": aid, "config": json.loads(cfg.to_json()), "window": window, "max_extensions": 0}, headers=W)
            assert r.status_code == 201, r.text
            r = c.post(f"/v1/analyses/{aid}/ticks", json={"ticks": ticks_of(sim.canary, 0, window)}, headers=W)
            assert r.status_code == 200, r.text
        r = c.post("/v1/analyses", json={"id": "ranker-split", "mode": "split", "metrics": METRICS, "window": 400, "canary_share": 0.5}, headers=W)
        assert r.status_code == 201, r.text
        assert c.post("/v1/analyses/ranker-split/ticks", json={"ticks": split_ticks(5, 20)}, headers=W).status_code == 200
        verdicts = {a: c.get(f"/v1/analyses/{a}", headers=R).json()["verdict"] for a in ("checkout-rollback", "search-proceed")}
        assert verdicts == {"checkout-rollback": "rollback", "search-proceed": "proceed"}, verdicts
        yield srv, c, store, tmp


def _errors(drv) -> list[dict]:
    return [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]


def _wait(drv, css: str, n: int = 1, timeout: float = 60):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout).until(lambda d: (lambda found: found if len(found) >= n else False)(d.find_elements(By.CSS_SELECTOR, css)))


def _text(drv, eid: str) -> str:
    """The text of element ``eid`` now ('' when absent): the page re-renders on live updates, so no element handle is kept."""
    return drv.execute_script("const e = document.getElementById(arguments[0]); return e ? e.textContent : '';", eid)


def _open(drv, url: str) -> None:
    """Load ``url`` as a new document (a change of the hash alone would keep the previous page's elements a moment)."""
    drv.get("about:blank")
    drv.get(url)


def _login(drv, base: str, token: str) -> None:
    drv.get(base + "/ui/")
    drv.execute_script("sessionStorage.setItem('deploysignal.token', arguments[0]);", token)
    drv.get("about:blank")
    drv.get_log("browser")  # what the page logged before it had the token (the 401s of the login screen) is not this test's


def _drawn(drv, canvas) -> int:
    """Pixels that are not blank on a canvas (a plot that was drawn has thousands)."""
    return drv.execute_script(
        "const c = arguments[0], d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
        "for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;", canvas)


def _shot(drv, path: Path, height: int | None = None) -> None:
    h = height or drv.execute_script("return document.documentElement.scrollHeight")
    drv.set_window_size(1400, min(max(int(h) + 40, 800), 4000))
    time.sleep(0.3)
    drv.save_screenshot(str(path))
    drv.set_window_size(1400, 1000)
    assert path.stat().st_size > 10_000


def _check_analysis_page(drv, verdict: str, families: int) -> None:
    from selenium.webdriver.common.by import By

    v = _wait(drv, "#verdict .badge")[0]
    assert v.text == verdict
    canvases = _wait(drv, "#evidence .uplot canvas", families)
    assert all(_drawn(drv, c) > 500 for c in canvases), "an evidence plot is blank"
    assert len(drv.find_elements(By.CSS_SELECTOR, "#drivers tr")) == families + 1
    assert drv.find_element(By.CSS_SELECTOR, "canvas.strip").is_displayed()
    assert "audit chain verified" in drv.find_element(By.ID, "summary").text


def test_login_list_and_auth(browser, service):
    srv, *_ = service
    from selenium.webdriver.common.by import By

    browser.get(srv.url + "/")  # / redirects to the dashboard
    form = _wait(browser, "#login-form input")[0]
    assert browser.current_url.endswith("/ui/")
    form.send_keys(READ)
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
    rows = _wait(browser, "#analyses tr", 4)
    text = browser.find_element(By.ID, "analyses").text
    assert "checkout-rollback" in text and "search-proceed" in text and "ranker-split" in text
    badges = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#analyses .badge")]
    assert badges[:2] == ["rollback", "proceed"] and badges[2] in ("extend", "pending"), badges  # the split one is still live
    assert len(rows) == 4 and _errors(browser) == []
    assert READ not in browser.current_url  # the token is in no URL
    # a wrong token: the page asks again (the 401 is the one console error it may log)
    browser.execute_script("sessionStorage.setItem('deploysignal.token', 'wrong'); location.reload();")
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(lambda d: "refused (401)" in d.find_element(By.ID, "login-error").text)
    assert [e for e in _errors(browser) if "401" not in e["message"]] == []  # the refused token's 401 is the only error


def test_rolled_back_and_proceeded_pages(browser, service, shots):
    srv, *_ = service
    _login(browser, srv.url, READ)
    _open(browser, srv.url + "/ui/#/a/checkout-rollback")
    _check_analysis_page(browser, "rollback", 5)
    from selenium.webdriver.common.by import By

    assert len(_wait(browser, "#signals .uplot canvas", 5)) >= 5  # canary signals from the verified tick rows
    assert "uncertified" in browser.find_element(By.ID, "uncertified").text  # the run-time caveat of a one-sample config
    assert _errors(browser) == []
    _shot(browser, shots / "analysis.png")
    _open(browser, srv.url + "/ui/#/a/search-proceed")
    _check_analysis_page(browser, "proceed", 5)
    assert _errors(browser) == []
    _shot(browser, shots / "analysis-proceed.png")


def test_live_updates_and_split_effects(browser, service, shots):
    srv, c, *_ = service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _login(browser, srv.url, READ)
    _open(browser, srv.url + "/ui/#/a/ranker-split")
    _wait(browser, "#verdict .badge")
    assert "20 evaluated ticks" in browser.find_element(By.ID, "verdict").text
    _wait(browser, "#effects .uplot canvas", 2)
    WebDriverWait(browser, 30).until(lambda d: _text(d, "live-status").startswith("live"))
    for k in range(3):  # ticks arrive while the page is open: it follows the server-sent events
        r = c.post("/v1/analyses/ranker-split/ticks", json={"ticks": split_ticks(5, 20, start=20 + 20 * k)}, headers=W)
        assert r.status_code == 200, r.text
        want = f"{40 + 20 * k} evaluated ticks"
        WebDriverWait(browser, 30).until(lambda d, w=want: w in _text(d, "verdict"))
    assert all(_drawn(browser, cv) > 500 for cv in _wait(browser, "#effects .uplot canvas", 2))
    assert _errors(browser) == []
    _shot(browser, shots / "analysis-split.png")


def test_report_opens_offline(browser, service, tmp_path, shots):
    _, _, store, _ = service
    out = tmp_path / "checkout.report.html"
    r = _cli("report", "checkout-rollback", "--store", store, "-o", str(out))
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    assert "<script src=" not in html and "<link rel=\"stylesheet\" href=" not in html  # nothing to fetch
    browser.get(out.as_uri())
    _check_analysis_page(browser, "rollback", 5)
    assert len(_wait(browser, "#signals .uplot canvas", 5)) >= 5
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0  # opened offline: no request at all
    assert _errors(browser) == []
    _shot(browser, shots / "report.png")
    # the service's report of the same analysis is the same file, byte for byte (same inputs, same bytes)
    srv, c, *_ = service
    assert c.get("/v1/analyses/checkout-rollback/report", headers=R).content == out.read_bytes()
    from deploysignal.cli._dashboard import _fetch_report  # what `report --url ... --token-file` writes

    tok = tmp_path / "read.token"
    tok.write_text(READ + "\n")
    assert _fetch_report(srv.url, "checkout-rollback", tok).encode() == out.read_bytes()


def _fleet_jsonl(path: Path) -> None:
    """What ``fleet observe --jsonl`` prints, for a rack common-mode fault on a 128-shard synthetic fleet."""
    from deploysignal.fleet import FleetObserver, ObserverSettings, TopologySnapshot

    topo = TopologySnapshot.synthetic(8, 4, 4, racks_per_switch=2, racks_per_zone=4)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((160, len(topo), 2))
    racks, idx = topo.group_index("rack")
    x[60:, np.array(idx) == 2, 0] += 1.5
    obs = FleetObserver(topo, 2, baseline_loc=np.zeros(2), baseline_scale=np.ones(2), phi=0.0, settings=ObserverSettings(q=0.05))
    path.write_text("".join(obs.update(x[t]).model_dump_json() + "\n" for t in range(x.shape[0])))


def test_ui_fleet_and_migration_pages(browser, service, tmp_path, shots):
    """``deploysignal ui`` over the service's store, an audit file, a fleet and a migration file."""
    from selenium.webdriver.common.by import By

    _, c, store, _ = service
    audit = tmp_path / "exported.audit.ndjson"
    audit.write_text(c.get("/v1/analyses/search-proceed/audit", headers=R).text)

    fleet = tmp_path / "racks.jsonl"
    _fleet_jsonl(fleet)
    mig = tmp_path / "sql-migration.json"
    r = _cli("migrate", "run", "--simulate-regression", "0.3", "--max-queries", "300", "--json", str(mig))
    assert r.returncode == 4, r.stdout + r.stderr  # rolled back
    tok = tmp_path / "ui.token"
    tok.write_text("ui-token-test\n")
    port = free_port()
    log = tmp_path / "ui.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "deploysignal", "ui", "--store", store, "--audit", str(audit), "--fleet", str(fleet),
                                 "--migration", str(mig), "--port", str(port), "--token-file", str(tok)], env=ENV, stdout=sink, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/ui/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.2)
        assert httpx.get(base + "/v1/dashboard/sources", timeout=5).status_code == 401
        _login(browser, base, "ui-token-test")
        _open(browser, base + "/ui/")
        listed = _wait(browser, "#analyses tr", 5)  # the store's three analyses and the audit file
        assert "exported" in browser.find_element(By.ID, "analyses").text and len(listed) == 5
        _open(browser, base + "/ui/#/a/exported")
        _check_analysis_page(browser, "proceed", 5)
        assert "not in an audit log" in browser.find_element(By.CSS_SELECTOR, "ul.notes").text  # no signal values in a file: said
        # a file without its published head: its end is not checked, and its id is its file name; both said
        assert "missing lines at the end are not detected" in browser.find_element(By.ID, "no-head").text
        assert "not verified" in browser.find_element(By.ID, "id-note").text
        _open(browser, base + "/ui/#/a/checkout-rollback")
        _check_analysis_page(browser, "rollback", 5)
        assert _errors(browser) == []
        # a live analysis of the store follows what the service writes into it
        from selenium.webdriver.support.ui import WebDriverWait

        n = len(c.get("/v1/analyses/ranker-split/view", headers=R).json()["ticks"])
        _open(browser, base + "/ui/#/a/ranker-split")
        WebDriverWait(browser, 30).until(lambda d: _text(d, "live-status").startswith("live"))
        assert c.post("/v1/analyses/ranker-split/ticks", json={"ticks": split_ticks(5, 10, start=n)}, headers=W).status_code == 200
        WebDriverWait(browser, 30).until(lambda d: f"{n + 10} evaluated ticks" in _text(d, "verdict"))
        assert _errors(browser) == []
        _open(browser, base + "/ui/#/fleet")
        heat = _wait(browser, "#heat canvas.heat")[0]
        assert _drawn(browser, heat) > 1000
        assert "rack" in browser.find_element(By.ID, "attributions").text
        assert len(browser.find_elements(By.CSS_SELECTOR, "#flagged tr")) > 1
        assert browser.find_element(By.CSS_SELECTOR, "#fleet-summary .badge").text == "flagged"  # the observer gives no verdict
        assert _errors(browser) == []
        _shot(browser, shots / "fleet.png")
        _open(browser, base + "/ui/#/migration")
        _wait(browser, "#dimensions .uplot canvas", 9)  # per dimension the decision plot and the detector, the error budget
        assert "Holm harm" in browser.find_element(By.ID, "dimensions").text
        assert "rolled_back" in browser.find_element(By.ID, "migration-summary").text
        assert "rolled_back" in browser.find_element(By.ID, "phases").text
        assert _errors(browser) == []
        _shot(browser, shots / "migration.png")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
            raise AssertionError(f"deploysignal ui did not stop on SIGTERM within 30 s: {log.read_text()[-2000:]}") from None

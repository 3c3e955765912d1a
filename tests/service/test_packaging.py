"""Packaging: the Dockerfile, the Kubernetes manifests, the Argo / Flagger templates and the Grafana
dashboard under deploy/ (issue 25). No container engine here: the Dockerfile's install and entry steps
run in a fresh virtual environment (extended: a full install, minutes); the CI checks its structure and
that its entry point parses with the real ``serve`` command. The manifests are validated against the
Kubernetes JSON schemas that kubernetes-validate ships (offline)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
import yaml
from prometheus_client.parser import text_string_to_metric_families

from deploysignal.cli._service import serve

from .conftest import W, make_client, ticks_of

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes version the manifests are checked against (newer ones: same result)


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, argument) pairs of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip()) for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _exec_form(arg: str) -> list[str]:
    value = json.loads(arg)
    assert isinstance(value, list) and all(isinstance(x, str) for x in value), f"exec form expected: {arg}"
    return value


def entry_command() -> list[str]:
    ins = dockerfile()
    entry = [_exec_form(a) for i, a in ins if i == "ENTRYPOINT"]
    cmd = [_exec_form(a) for i, a in ins if i == "CMD"]
    assert len(entry) == 1 and len(cmd) == 1
    return entry[0] + cmd[0]


def healthcheck() -> list[str]:
    (arg,) = [a for i, a in dockerfile() if i == "HEALTHCHECK"]
    return _exec_form(arg.split(" CMD ", 1)[1])


#: every RUN line must be one of these kinds (a new kind of step must be added to the fresh-venv test)
RUN_KINDS = {"install": re.compile(r"^python -m pip install \"\.\[service\]\"$"), "warm": re.compile(r"^deploysignal demo step$"),
             "user": re.compile(r"^useradd --system --uid 10001 .*chown -R 10001:10001 ")}


def run_steps() -> list[tuple[str, str]]:
    out = []
    for ins, arg in dockerfile():
        if ins == "RUN":
            kinds = [k for k, rx in RUN_KINDS.items() if rx.search(arg)]
            assert len(kinds) == 1, f"unclassified RUN step: {arg}"
            out.append((kinds[0], arg))
    return out


def test_dockerfile_structure_and_entry_point_parse_with_the_real_cli():
    ins = dockerfile()
    assert ins[0] == ("FROM", "python:3.11-slim")
    users = [a for i, a in ins if i == "USER"]
    assert users and users[-1] not in ("0", "root") and ins.index(("USER", users[-1])) > max(k for k, (i, _) in enumerate(ins) if i == "RUN")
    assert [k for k, _ in run_steps()] == ["install", "warm", "user"]
    extras = re.search(r"\.\[([a-z,]+)\]", [a for k, a in run_steps() if k == "install"][0]).group(1).split(",")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert all(re.search(rf"^{e} = \[", pyproject, re.M) for e in extras)
    # the entry point is `deploysignal serve` and its options are valid for the real command
    cmd = entry_command()
    assert cmd[:2] == ["deploysignal", "serve"]
    ctx = typer.main.get_command(_single(serve)).make_context("serve", cmd[2:])
    port = ctx.params["port"]
    assert ctx.params["host"] == "0.0.0.0" and ("EXPOSE", str(port)) in ins
    # the health check asks the route the service serves, on that port
    hc = " ".join(healthcheck())
    assert f"http://127.0.0.1:{port}/healthz" in hc
    assert "/healthz" in json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))["paths"]


def _single(fn) -> typer.Typer:
    t = typer.Typer(add_completion=False)
    t.command()(fn)
    return t


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.extended
def test_dockerfile_install_and_entry_steps_run_in_a_fresh_virtual_environment(tmp_path):
    """The Dockerfile's steps in order, in a new venv: COPY, the pip install, the kernel warm-up, then
    the ENTRYPOINT + CMD as a process, until the HEALTHCHECK command passes (the user step needs root:
    its effect, a non-root uid, is the structural test's). About 5-10 minutes (the full install)."""
    app_dir = tmp_path / "opt"
    app_dir.mkdir()
    for i, arg in dockerfile():
        if i == "COPY":
            *srcs, dest = arg.split()
            for s in srcs:  # Docker's COPY: a directory's contents go into dest, a file into dest/ (or as dest)
                if (ROOT / s).is_dir():
                    shutil.copytree(ROOT / s, app_dir / dest, dirs_exist_ok=True)
                else:
                    shutil.copy(ROOT / s, app_dir / dest / Path(s).name if dest.endswith("/") else app_dir / dest)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", NUMBA_CACHE_DIR=str(tmp_path / "numba"), PIP_NO_CACHE_DIR="1")
    for kind, arg in run_steps():
        if kind in ("install", "warm"):
            subprocess.run(shlex.split(arg), cwd=app_dir, env=env, check=True, timeout=1800, capture_output=True)
    data = tmp_path / "data"
    data.mkdir()
    port = _free_port()
    cmd = [c.replace("/data/", f"{data}/") for c in entry_command()]
    cmd[cmd.index("--port") + 1] = str(port)
    cmd[cmd.index("--host") + 1] = "127.0.0.1"
    proc = subprocess.Popen(cmd, cwd=data, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        check = [c.replace(":8080/", f":{port}/") for c in healthcheck()]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if subprocess.run(check, env=env, capture_output=True, timeout=30).returncode == 0:
                break
            time.sleep(2)
        else:
            pytest.fail(f"the health check never passed; server output: {proc.communicate(timeout=10)[0] if proc.poll() is not None else ''}")
        assert (data / "deploysignal.db").is_file() and (data / ".deploysignal" / "read.token").is_file()
    finally:
        proc.terminate()
        proc.communicate(timeout=60)  # waits and closes the pipe


def _manifests() -> list[tuple[Path, dict]]:
    docs = []
    for p in sorted((DEPLOY / "kubernetes").glob("*.yaml")) + sorted((DEPLOY / "argo").glob("*.yaml")) + sorted((DEPLOY / "flagger").glob("*.yaml")):
        docs += [(p, d) for d in yaml.safe_load_all(p.read_text(encoding="utf-8")) if d]
    return docs


#: kinds of custom resources: their CRDs' schemas are not Kubernetes', checked otherwise (below)
CRDS = {"ServiceMonitor", "AnalysisTemplate", "Rollout", "Canary", "Kustomization"}


def test_manifests_validate_against_the_kubernetes_schemas():
    import kubernetes_validate

    docs = _manifests()
    core = [(p, d) for p, d in docs if d["kind"] not in CRDS]
    assert {d["kind"] for _, d in core} >= {"Namespace", "Secret", "PersistentVolumeClaim", "Deployment", "Service"}
    for p, d in core:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)  # raises naming the path in the document
    # the check can fail: a port name for a number, an unknown field
    bad = next(d for _, d in core if d["kind"] == "Deployment")
    bad = json.loads(json.dumps(bad))
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 8080
    bad["spec"]["replica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    # kustomization lists every manifest of the folder
    kust = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kust["resources"]) == sorted(p.name for p in (DEPLOY / "kubernetes").glob("*.yaml") if p.name != "kustomization.yaml")


def test_manifests_wire_the_service_together(tmp_path):
    docs = {d["kind"]: d for _, d in _manifests()}
    dep, svc, mon = docs["Deployment"], docs["Service"], docs["ServiceMonitor"]
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"  # one writer on the SQLite file
    # the container's args are valid `serve` options after the image's entry point; the store URL is the env's
    entry = entry_command()[: entry_command().index("--port") + 2]
    ctx = typer.main.get_command(_single(serve)).make_context("serve", entry[2:] + c["args"])
    assert ctx.params["tokens_file"] == Path("/etc/deploysignal/tokens.yaml")
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert Path(mounts["tokens"]) == ctx.params["tokens_file"].parent
    store = next(e["value"] for e in c["env"] if e["name"] == "DEPLOYSIGNAL_STORE")
    assert store.startswith(f"sqlite:///{mounts['data']}/")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["ports"][0] == {"name": "http", "containerPort": ctx.params["port"], "protocol": "TCP"}
    assert svc["spec"]["selector"] == pod["metadata"]["labels"] and svc["spec"]["ports"][0]["targetPort"] == "http"
    # the docs' templates call http://deploysignal.deploysignal.svc:8080
    assert (svc["metadata"]["name"], svc["metadata"]["namespace"], svc["spec"]["ports"][0]["port"]) == ("deploysignal", "deploysignal", 8080)
    ep = mon["spec"]["endpoints"][0]
    assert mon["spec"]["selector"]["matchLabels"] == svc["metadata"]["labels"] and ep["port"] == "http" and ep["path"] == "/metrics"
    secret = ep["authorization"]["credentials"]["name"]
    assert any(d["kind"] == "Secret" and d["metadata"]["name"] == secret for _, d in _manifests())
    # the tokens secret holds a tokens file the service reads
    from deploysignal.service import ServiceSettings

    tokens = next(d for _, d in _manifests() if d["kind"] == "Secret" and d["metadata"]["name"] == pod["spec"]["volumes"][1]["secret"]["secretName"])
    tmp = tmp_path / "tokens.yaml"
    tmp.write_text(tokens["stringData"]["tokens.yaml"], encoding="utf-8")
    assert {t.role for t in ServiceSettings.read_tokens_file(tmp)} == {"write", "read", "kayenta", "metrics"}


def test_argo_and_flagger_templates_are_the_documented_fail_closed_ones():
    """The shipped templates are the docs' (whose fail-closed logic tests/conformance and
    tests/service/test_kayenta_argo.py check): equal as YAML documents."""
    text = (ROOT / "docs" / "integrations.md").read_text(encoding="utf-8")

    def doc_example(name: str) -> dict:
        return yaml.safe_load(re.search(rf"<!-- example: {re.escape(name)} -->\s*```yaml\n(.*?)```", text, re.S).group(1))

    for path, name in (("argo/analysistemplate.yaml", "argo-analysistemplate"), ("argo/rollout-example.yaml", "argo-rollout"),
                       ("argo/analysistemplate-pre-1.8.yaml", "argo-analysistemplate-pre-1.8"),
                       ("flagger/canary.yaml", "flagger-canary")):
        assert yaml.safe_load((DEPLOY / path).read_text(encoding="utf-8")) == doc_example(name), path
    tpl = yaml.safe_load((DEPLOY / "argo" / "analysistemplate.yaml").read_text(encoding="utf-8"))
    secret = yaml.safe_load((DEPLOY / "argo" / "read-token-secret.yaml").read_text(encoding="utf-8"))
    ref = next(a for a in tpl["spec"]["args"] if a["name"] == "token")["valueFrom"]["secretKeyRef"]
    assert "v1.8" in (DEPLOY / "argo" / "analysistemplate.yaml").read_text(encoding="utf-8").splitlines()[0]  # says its minimum
    old = yaml.safe_load((DEPLOY / "argo" / "analysistemplate-pre-1.8.yaml").read_text(encoding="utf-8"))["spec"]["metrics"][0]
    assert "consecutiveSuccessLimit" not in old and old["inconclusiveLimit"] == old["count"] - 1 and old["failureLimit"] == 0
    assert (secret["metadata"]["name"], ref["key"] in secret["stringData"]) == (ref["name"], True)


def test_grafana_dashboard_reads_only_metrics_the_service_exports(tmp_path, step_sim):
    sim, cfg = step_sim
    c = make_client(tmp_path)
    with c:
        assert c.post("/v1/analyses", json={"id": "a", "config": cfg.model_dump(mode="json")}, headers=W).status_code == 201
        assert c.post("/v1/analyses/a/ticks", json={"ticks": ticks_of(sim.canary, 0, 20)}, headers=W).status_code == 200
        text = c.get("/metrics", headers=W).text
    exported = {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    dash = json.loads((DEPLOY / "grafana" / "deploysignal.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    used = {m for e in exprs for m in re.findall(r"\bdeploysignal_[a-z_]+", e)}
    assert len(used) >= 10 and used <= exported, sorted(used - exported)
    labels = {k for fam in text_string_to_metric_families(text) for s in fam.samples for k in s.labels}
    for e in exprs:
        for group in re.findall(r"by \(([a-z_, ]+)\)", e):
            assert {g.strip() for g in group.split(",")} <= labels | {"le"}, e

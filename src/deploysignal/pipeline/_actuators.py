"""Actuators: switch the served version by HTTP webhook, shell command or config-file rewrite.

Each actuator returns an :class:`ActuationResult`; a failed actuation is reported, never swallowed:
the pipeline marks the deployment ``failed`` when a rollback actuator fails.

Every call carries the traffic it asks for: ``action`` (``promote``, ``shift``, ``mirror``,
``rollback``), ``version`` (the version serving the rest of live traffic: the candidate once promoted,
the incumbent otherwise), ``weight`` (the candidate's share of live traffic, 0 to 1) and ``mirror``
(whether the candidate receives a mirrored copy). A webhook gets them in its JSON body
(``candidate_weight``, ``mirror``), a command in ``DEPLOYSIGNAL_ACTION``, ``DEPLOYSIGNAL_VERSION``,
``DEPLOYSIGNAL_WEIGHT``, ``DEPLOYSIGNAL_MIRROR`` (``0``/``1``) and the context variables, a file
actuator under its ``key``, ``weight_key`` and ``mirror_key``, and the candidate's version under
``candidate_key`` (default ``candidate`` for a file with a weight or mirror key).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from ._spec import CommandActuator, FileActuator, WebhookActuator

__all__ = ["ActuationResult", "actuate", "read_served_version"]


@dataclass(frozen=True)
class ActuationResult:
    actuator: str
    ok: bool
    detail: str


def _file(a: FileActuator, version: str, base: Path, weight: float, mirror: bool, candidate: str | None) -> ActuationResult:
    path = base / a.path
    if a.version_key is None:
        text = version + "\n"
    else:
        data: object = {}
        if path.exists():
            raw = path.read_text(encoding="utf-8")
            data = (json.loads(raw) if path.suffix == ".json" else yaml.safe_load(raw)) if raw.strip() else {}
        if not isinstance(data, dict):
            return ActuationResult("file", False, f"{path} does not hold a mapping")
        data[a.version_key] = version
        if a.weight_key is not None:
            data[a.weight_key] = weight
        if a.mirror_key is not None:
            data[a.mirror_key] = mirror
        if a.candidate_field is not None and candidate is not None:
            data[a.candidate_field] = candidate  # which revision gets the weight / the mirror
        text = json.dumps(data, indent=2, sort_keys=True) + "\n" if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)  # atomic: readers see the old or the new version, never a torn file
    return ActuationResult("file", True, f"{path} -> {version}" + (f" (candidate weight {weight:g})" if a.weight_key else "")
                           + (f" (mirror {str(mirror).lower()})" if a.mirror_key else ""))


def read_served_version(path: str | Path, key: str | None = None) -> str:
    """The version a file actuator last wrote (for verification after a switch)."""
    p = Path(path)
    raw = p.read_text(encoding="utf-8")
    if key is None:
        return raw.strip()
    data = json.loads(raw) if p.suffix == ".json" else yaml.safe_load(raw)
    return str(data[key])


def actuate(a: WebhookActuator | CommandActuator | FileActuator, *, action: str, version: str, context: dict[str, str],
            base: Path, client: httpx.Client | None = None, weight: float | None = None,
            mirror: bool = False) -> ActuationResult:
    """Run one actuator: serve ``version`` with the candidate's live share ``weight`` (default 1 for
    ``promote``, else 0) and ``mirror`` (``action``: promote, shift, mirror or rollback)."""
    w = float(weight) if weight is not None else (1.0 if action == "promote" else 0.0)
    if isinstance(a, FileActuator):
        try:
            return _file(a, version, base, w, mirror, context.get("candidate"))
        except Exception as e:  # a file holding anything (too deep to parse, unhashable keys...): a failed actuation
            return ActuationResult("file", False, f"{a.path}: {type(e).__name__}: {e}")
    if isinstance(a, CommandActuator):
        env = {**os.environ, "DEPLOYSIGNAL_ACTION": action, "DEPLOYSIGNAL_VERSION": version,
               "DEPLOYSIGNAL_WEIGHT": f"{w:g}", "DEPLOYSIGNAL_MIRROR": "1" if mirror else "0",
               **{f"DEPLOYSIGNAL_{k.upper()}": v for k, v in context.items()}}
        try:
            proc = subprocess.run(a.argv, cwd=base, env=env, capture_output=True, text=True, timeout=a.timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            return ActuationResult("command", False, f"{a.argv[0]}: {e}")
        return ActuationResult("command", proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}")
    payload = {"action": action, "version": version, "candidate_weight": w, "mirror": mirror, **context}
    own = client is None
    c = client or httpx.Client()
    try:
        resp = c.post(a.url, json=payload, headers=a.headers, timeout=a.timeout_s)
        return ActuationResult("webhook", resp.is_success, f"{a.url}: HTTP {resp.status_code}")
    except Exception as e:  # httpx.HTTPError, an invalid URL, a transport raising anything: a failed call
        return ActuationResult("webhook", False, f"{a.url}: {type(e).__name__}: {e}")
    finally:
        if own:
            c.close()

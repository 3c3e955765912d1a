"""Versioned release-pipeline file (YAML), validated with pydantic (unknown keys rejected).

Example::

    version: 1
    name: nl2sql-v2
    deployment: {incumbent: v1, candidate: v2, strategy: canary}
    store: deployments.sqlite
    stages:
      - name: promotion-gates
        type: gate
        metrics_file: eval_metrics.json        # or per gate: command printing a number / JSON
        gates:
          - {metric: eval_score, op: ">=", threshold: 0.85}
          - {metric: p99_latency_ms, op: "<=", threshold: 1200}
          - {metric: memory_gb, op: "<=", threshold: 40}
          - {metric: drift_pvalue, op: ">=", threshold: 0.01}
      - name: switch
        type: actuate
        actuators: [{type: file, path: served_version.txt}]
      - name: watch
        type: monitor
        baseline: baseline.csv
        telemetry: canary.csv
    rollback:
      actuators:
        - {type: file, path: served_version.txt}
        - {type: webhook, url: "https://deploy.example/rollback"}
        - {type: command, argv: ["kubectl", "rollout", "undo", "deploy/agent"]}

Gates are blocking and there is deliberately no way to skip them: the schema forbids unknown keys
(``skip``, ``allow_failure``, ``override`` ... are errors) and neither the runner API nor the CLI
takes such an argument.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._exceptions import ConfigError

__all__ = [
    "SCHEMA_VERSION",
    "ActuateStage",
    "CommandActuator",
    "DeploymentSpec",
    "FileActuator",
    "GateCheck",
    "GateStage",
    "MonitorStage",
    "PipelineSpec",
    "RollbackSpec",
    "WebhookActuator",
    "load_pipeline",
]

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookActuator(_Strict):
    type: Literal["webhook"]
    url: str
    timeout_s: float = Field(10.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)


class CommandActuator(_Strict):
    type: Literal["command"]
    argv: list[str] = Field(min_length=1)
    timeout_s: float = Field(60.0, gt=0)


class FileActuator(_Strict):
    """Switches the served version by rewriting a config file atomically.

    ``key`` = None writes the version as the whole file; otherwise the YAML/JSON mapping in the file
    gets ``key: version`` (other keys kept).
    """

    type: Literal["file"]
    path: str
    key: str | None = None


Actuator = Annotated[Union[WebhookActuator, CommandActuator, FileActuator], Field(discriminator="type")]


class GateCheck(_Strict):
    """One executable promotion gate: ``metric op threshold`` on a measured value."""

    metric: str
    op: Literal[">=", ">", "<=", "<"]
    threshold: float
    command: list[str] | None = Field(None, min_length=1)
    timeout_s: float = Field(300.0, gt=0)


class GateStage(_Strict):
    name: str
    type: Literal["gate"]
    metrics_file: str | None = None
    gates: list[GateCheck] = Field(min_length=1)


class ActuateStage(_Strict):
    name: str
    type: Literal["actuate"]
    actuators: list[Actuator] = Field(min_length=1)


class MonitorStage(_Strict):
    """Telemetry watch: the deploysignal gate on ``telemetry`` against a compiled ``baseline``; a
    ``rollback`` verdict fires the pipeline's rollback stage."""

    name: str
    type: Literal["monitor"]
    baseline: str
    telemetry: str
    alpha: float = Field(0.05, gt=0, lt=1)
    window: int = Field(480, ge=1)
    seed: int = 0


Stage = Annotated[Union[GateStage, ActuateStage, MonitorStage], Field(discriminator="type")]


class DeploymentSpec(_Strict):
    incumbent: str
    candidate: str
    strategy: Literal["direct", "canary", "shadow"] = "canary"


class RollbackSpec(_Strict):
    actuators: list[Actuator] = Field(min_length=1)


class PipelineSpec(_Strict):
    version: Literal[1]
    name: str
    deployment: DeploymentSpec
    store: str = "deployments.sqlite"
    stages: list[Stage] = Field(min_length=1)
    rollback: RollbackSpec


def load_pipeline(path: str | Path) -> PipelineSpec:
    """Read and validate a pipeline file; relative paths inside stay relative to the file's folder."""
    from .._text import bad_utf8_line

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read pipeline file {p}: {e.strerror}") from None
    except UnicodeDecodeError:
        line = bad_utf8_line(p)
        raise ConfigError(f"pipeline file {p} is not UTF-8 text" + (f" (line {line})" if line else "")) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"pipeline file {p} is not valid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"pipeline file {p} is not usable YAML: nested too deeply") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"pipeline file {p} must hold a mapping")
    if raw.get("version") != SCHEMA_VERSION:
        raise ConfigError(f"pipeline file {p}: unsupported version {raw.get('version')!r} (supported: {SCHEMA_VERSION})")
    try:
        return PipelineSpec.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"pipeline file {p}: {where}: {first['msg']}") from None

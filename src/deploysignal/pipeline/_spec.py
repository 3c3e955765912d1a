"""Versioned release-pipeline file (YAML), validated with pydantic (unknown keys rejected).

Example::

    version: 1
    name: nl2sql-v2
    deployment: {incumbent: v1, candidate: v2, strategy: canary, steps: [0.1, 0.25, 0.5, 1.0]}
    store: deployments.sqlite
    stages:
      - name: promotion-gates
        type: gate
        metrics_file: eval_metrics.json        # or per gate: command printing a number / JSON
        gates:
          - {metric: eval_score, op: ">=", threshold: 0.85}
          - {metric: p99_latency_ms, op: "<=", threshold: 1200}
      - name: rollout
        type: actuate                          # executes the strategy: one call per traffic step
        actuators: [{type: file, path: served.yaml, key: version, weight_key: canary_weight}]
        watch:                                 # the gate between steps ({step} = 1, 2, ...)
          - name: step-watch
            type: monitor
            baseline: baseline.csv
            telemetry: canary_step{step}.csv
            rules:                             # static thresholds: warn (default) or rollback
              - {kind: relative_increase, metric: downstream_error_rate, threshold: 0.5, action: rollback}
    rollback:
      actuators:
        - {type: file, path: served.yaml, key: version, weight_key: canary_weight}
        - {type: webhook, url: "https://deploy.example/rollback"}
    drills: {every_s: 604800}                  # `deploysignal pipeline drills` runs them on schedule

Gates are blocking and there is deliberately no way to skip them: the schema forbids unknown keys
(``skip``, ``allow_failure``, ``override`` ... are errors) and neither the runner API nor the CLI
takes such an argument.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .._exceptions import ConfigError
from ._compare import CompareStage
from ._rules import DEFAULT_RULES, ThresholdRule
from ._schedule import DrillSchedule
from ._strategy import DEFAULT_STEPS, traffic_plan

__all__ = [
    "SCHEMA_VERSION",
    "ActuateStage",
    "CommandActuator",
    "CompareStage",
    "DeploymentSpec",
    "DrillSchedule",
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
    gets ``key: version`` (other keys kept), where the version is the one serving live traffic (the
    candidate only once promoted). ``weight_key`` (needed by a canary) also writes the candidate's share
    of live traffic, ``mirror_key`` (needed by shadow) whether the candidate receives mirrored traffic,
    ``candidate_key`` which candidate version that share or mirror goes to.
    """

    type: Literal["file"]
    path: str
    key: str | None = None
    weight_key: str | None = None
    mirror_key: str | None = None
    candidate_key: str | None = None

    @property
    def candidate_field(self) -> str | None:
        """The key the candidate's version is written under, so a router reading the file knows which
        revision gets the weight or the mirror (``candidate_key``; ``candidate`` when the file has a
        weight or mirror key; None for a plain version file)."""
        return self.candidate_key or ("candidate" if self.weight_key or self.mirror_key else None)

    @property
    def keys(self) -> tuple[str | None, str | None, str | None, str | None]:
        """Every key the actuator writes (version, weight, mirror, candidate)."""
        return self.version_key, self.weight_key, self.mirror_key, self.candidate_field

    @property
    def version_key(self) -> str | None:
        """The key the served version is written under (``version`` when only traffic keys are given;
        None = the whole file)."""
        return self.key or ("version" if self.weight_key or self.mirror_key else None)


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


class MonitorStage(_Strict):
    """Telemetry watch: the deploysignal gate on ``telemetry`` against a compiled ``baseline``; a
    ``rollback`` verdict fires the pipeline's rollback stage. ``rules``: static thresholds on the same
    telemetry (default: the classical controller's three checks, ``warn``); a rule with ``action:
    rollback`` that fires makes the verdict rollback, no rule can make it anything else."""

    name: str
    type: Literal["monitor"]
    baseline: str
    telemetry: str
    alpha: float = Field(0.05, gt=0, lt=1)
    window: int = Field(480, ge=1)
    seed: int = 0
    rules: list[ThresholdRule] = Field(default_factory=lambda: list(DEFAULT_RULES))


Check = Annotated[Union[MonitorStage, CompareStage], Field(discriminator="type")]


class ActuateStage(_Strict):
    """Switch traffic to the candidate following the deployment's strategy (:func:`traffic_plan`);
    ``watch``: checks run after each traffic step (a monitor's ``telemetry`` and a compare's ``outputs``
    may name the step as ``{step}``, 1-based), all must pass before the next step."""

    name: str
    type: Literal["actuate"]
    actuators: list[Actuator] = Field(min_length=1)
    watch: list[Check] = Field(default_factory=list)


Stage = Annotated[Union[GateStage, ActuateStage, MonitorStage, CompareStage], Field(discriminator="type")]


class DeploymentSpec(_Strict):
    incumbent: str
    candidate: str
    strategy: Literal["direct", "canary", "shadow"] = "direct"
    steps: tuple[float, ...] = DEFAULT_STEPS

    @model_validator(mode="after")
    def _steps(self) -> DeploymentSpec:
        if "steps" in self.model_fields_set and self.strategy != "canary":
            raise ValueError(f"steps are the traffic shares of a canary; strategy is {self.strategy!r} (add "
                             "'strategy: canary' to step traffic, or remove 'steps')")
        traffic_plan(self.strategy, self.steps)  # ValueError names the problem
        return self


class RollbackSpec(_Strict):
    actuators: list[Actuator] = Field(min_length=1)


class PipelineSpec(_Strict):
    version: Literal[1]
    name: str
    deployment: DeploymentSpec
    store: str = "deployments.sqlite"
    stages: list[Stage] = Field(min_length=1)
    rollback: RollbackSpec
    drills: DrillSchedule | None = None

    @model_validator(mode="after")
    def _executable(self) -> PipelineSpec:
        """A canary or shadow that cannot be executed is refused, not run as a label."""
        strat = self.deployment.strategy
        files: dict[str, tuple[str, tuple[str | None, ...]]] = {}
        for st in self.stages:
            if not isinstance(st, ActuateStage):
                continue
            if strat != "direct" and not st.watch:
                raise ValueError(f"stage {st.name}: a {strat} needs watch checks (the gate between traffic steps)")
            for a in st.actuators:
                if isinstance(a, FileActuator):
                    if strat == "canary" and a.weight_key is None:
                        raise ValueError(f"stage {st.name}: a canary file actuator needs weight_key (the traffic share)")
                    if strat == "shadow" and a.mirror_key is None:
                        raise ValueError(f"stage {st.name}: a shadow file actuator needs mirror_key")
                    files[a.path] = (st.name, a.keys)
        resets = {a.path: a.keys for a in self.rollback.actuators if isinstance(a, FileActuator)}
        for path, (stage, keys) in files.items():
            if path not in resets:
                raise ValueError(f"stage {stage}: the file actuator on {path} moves traffic, but no rollback file "
                                 f"actuator resets {path} (add one with the same keys)")
            if resets[path] != keys:
                names = ("key", "weight_key", "mirror_key", "candidate_key")
                diff = [f"{n} {x!r} vs {y!r}" for n, x, y in zip(names, keys, resets[path]) if x != y]
                raise ValueError(f"rollback file actuator {path} must write the same keys as stage {stage} "
                                 f"({'; '.join(diff)})")
        return self


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
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"pipeline file {p}: " + (f"{where}: {msg}" if where else msg)) from None

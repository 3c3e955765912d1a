"""Release pipeline: versioned YAML, blocking promotion gates, actuators, rollback stage, drills, records."""

from ._actuators import ActuationResult, actuate, read_served_version
from ._runner import evaluate_gate, run_drill, run_pipeline, run_rollback
from ._spec import PipelineSpec, load_pipeline
from ._store import DeploymentRecord, DeploymentStore

__all__ = [
    "ActuationResult",
    "DeploymentRecord",
    "DeploymentStore",
    "PipelineSpec",
    "actuate",
    "evaluate_gate",
    "load_pipeline",
    "read_served_version",
    "run_drill",
    "run_pipeline",
    "run_rollback",
]

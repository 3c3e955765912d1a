"""Release pipeline: versioned YAML, blocking promotion gates, executed strategies (direct, canary with
steps, shadow), threshold rules that warn or roll back, output comparison with a grader hook, actuators,
rollback stage, scheduled drills, deployment records."""

from ._actuators import ActuationResult, actuate, read_served_version
from ._compare import CompareStage, GraderSpec, PairedComparison, compare_outputs, paired_comparison
from ._rules import DEFAULT_RULES, RuleOutcome, ThresholdRule, evaluate_rules
from ._runner import evaluate_gate, run_drill, run_pipeline, run_rollback
from ._schedule import DrillSchedule, next_slot, run_drill_schedule
from ._spec import PipelineSpec, load_pipeline
from ._store import DeploymentRecord, DeploymentStore
from ._strategy import TrafficStep, traffic_plan

__all__ = [
    "DEFAULT_RULES",
    "ActuationResult",
    "CompareStage",
    "DeploymentRecord",
    "DeploymentStore",
    "DrillSchedule",
    "GraderSpec",
    "PairedComparison",
    "PipelineSpec",
    "RuleOutcome",
    "ThresholdRule",
    "TrafficStep",
    "actuate",
    "compare_outputs",
    "evaluate_gate",
    "evaluate_rules",
    "load_pipeline",
    "next_slot",
    "paired_comparison",
    "read_served_version",
    "run_drill",
    "run_drill_schedule",
    "run_pipeline",
    "run_rollback",
    "traffic_plan",
]

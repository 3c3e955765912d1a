"""Randomised-split gate: canary and stable arms share traffic at random; test what the split guarantees.

The null is the split alone: the canary version changes no unit's outcome and, within a block of a
tick, the canary units are a uniformly random subset of the units. Every e-process conditions on each
block's totals, so its false-rollback bound holds for any traffic, load or outcome process (no model,
no baseline). See ``docs/split.md``.
"""

from ._data import BlockBuilder, MetricBlocks, SplitData
from ._gate import VERDICTS, SplitBatch, SplitDecision, SplitGate
from ._metric import SplitMetric, rate_grid
from ._protocol import Family, FamilyEvidence, FamilyStep
from ._requests import EDGE_LEVELS, RequestLog, read_requests, requests_to_data, resolve_specs
from ._spec import MetricSpec, SplitSettings, read_split_signals, settings_error
from ._srm import SampleRatio
from ._ticks import ArmCounts, SplitTick, read_split_ticks, ticks_to_data

__all__ = [
    "EDGE_LEVELS", "VERDICTS", "ArmCounts", "BlockBuilder", "Family", "FamilyEvidence", "FamilyStep",
    "MetricBlocks", "MetricSpec", "RequestLog", "SampleRatio", "SplitBatch", "SplitData", "SplitDecision",
    "SplitGate", "SplitMetric", "SplitSettings", "SplitTick", "rate_grid", "read_requests", "read_split_signals",
    "read_split_ticks", "requests_to_data", "resolve_specs", "settings_error", "ticks_to_data",
]

"""Evaluation harness: peer baselines, scenario Monte Carlo, real-data benchmarks and reports."""

from ._gate_method import GateMethod
from ._kayenta import KayentaJudge, classify_metric, iqr_outliers, mann_whitney_interval
from ._method import VERDICTS, Method, MethodResult, finish, harm_signs, reference_rows, reference_values
from ._river import ADWINMethod, PageHinkleyMethod, river_available
from ._azure_split import AZURE_EFFECTS, AzureTrace, azure_split, load_azure_trace
from ._split_gate import SplitGateMethod
from ._split_peers import FixedNTest, KayentaSplit, PeerResult, TwoSampleAggregateGate, aggregate_signals, split_ticks, tick_aggregates
from ._thresholds import FlaggerAnalysis, StaticThresholds, rolling_nanmean
from ._ttest import PeekingTTest, cumulative_welch

__all__ = [
    "ADWINMethod",
    "AZURE_EFFECTS",
    "AzureTrace",
    "FixedNTest",
    "KayentaSplit",
    "PeerResult",
    "SplitGateMethod",
    "TwoSampleAggregateGate",
    "aggregate_signals",
    "azure_split",
    "load_azure_trace",
    "split_ticks",
    "tick_aggregates",
    "FlaggerAnalysis",
    "GateMethod",
    "KayentaJudge",
    "Method",
    "MethodResult",
    "PageHinkleyMethod",
    "PeekingTTest",
    "StaticThresholds",
    "VERDICTS",
    "classify_metric",
    "cumulative_welch",
    "finish",
    "harm_signs",
    "iqr_outliers",
    "mann_whitney_interval",
    "reference_rows",
    "reference_values",
    "river_available",
    "rolling_nanmean",
]

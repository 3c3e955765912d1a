"""Evaluation harness: peer baselines, scenario Monte Carlo, real-data benchmarks and reports."""

from ._gate_method import GateMethod
from ._kayenta import KayentaJudge, classify_metric, iqr_outliers, mann_whitney_interval
from ._method import VERDICTS, Method, MethodResult, finish, harm_signs, reference_rows, reference_values
from ._river import ADWINMethod, PageHinkleyMethod, river_available
from ._thresholds import FlaggerAnalysis, StaticThresholds, rolling_nanmean
from ._ttest import PeekingTTest, cumulative_welch

__all__ = [
    "ADWINMethod",
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

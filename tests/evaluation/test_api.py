"""The public API of deploysignal.evaluation is exactly what is meant."""

import deploysignal.evaluation as ev
from deploysignal.simulate import _suite


def test_evaluation_all() -> None:
    assert len(ev.__all__) == len(set(ev.__all__))
    assert set(ev.__all__) == {
        "ADWINMethod", "FlaggerAnalysis", "GateMethod", "KayentaJudge", "Method", "MethodResult", "PageHinkleyMethod",
        "PeekingTTest", "StaticThresholds", "VERDICTS", "classify_metric", "cumulative_welch", "finish", "harm_signs",
        "iqr_outliers", "mann_whitney_interval", "reference_rows", "reference_values", "river_available", "rolling_nanmean",
        # split mode: the split gate as a method, its peers on the same per-request logs, the Azure trace splitter
        "AZURE_EFFECTS", "AzureTrace", "FixedNTest", "KayentaSplit", "PeerResult", "SplitGateMethod", "TwoSampleAggregateGate",
        "aggregate_signals", "azure_split", "load_azure_trace", "split_ticks", "tick_aggregates",
    }
    for name in ev.__all__:
        assert hasattr(ev, name)


def test_suite_all() -> None:
    assert set(_suite.__all__) == {"SUITE", "NULL_SCENARIOS", "REGRESSION_SCENARIOS", "SuiteScenario", "postmortem_effects", "simulate_suite"}

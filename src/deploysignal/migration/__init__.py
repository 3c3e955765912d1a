"""Paired migration of an AI agent: dual-serve router, quality aggregator, sequential tests, phased protocol.

Public API::

    BettingEProcess, ESRDetector, WaldSPRT, holm, simes_global      sequential tests
    AgentAnswer, PairScores, QualityAggregator, sql_grade, sql_safety_violation   quality signals
    MigrationProtocol, ProtocolSettings, PHASES                      phased migration
    DualServeRouter, RouterStats, http_agent                         asyncio dual-serve router
    ShadowCostModel                                                  shadow-fraction cost model
    AgentProfile, PlanResult, simulate_plan                          planning (``migrate plan``)
    settings_from_mapping                                            protocol settings from YAML
    evaluate, simulate_streams, markdown_table, summary, SCENARIOS   simulation of the evaluation
"""

from ._cost import ShadowCostModel
from ._plan import AgentProfile, PlanResult, simulate_plan
from ._protocol import PHASES, MigrationProtocol, ProtocolSettings
from ._quality import DIMENSIONS, AgentAnswer, PairScores, QualityAggregator, sql_grade, sql_safety_violation
from ._router import DualServeRouter, RouterStats, http_agent
from ._settings_file import settings_from_mapping
from ._sequential import BettingEProcess, ESRDetector, WaldSPRT, holm, simes_global
from ._simulation import HARMFUL, SCENARIOS, evaluate, markdown_table, simulate_streams, summary

__all__ = [
    "DIMENSIONS",
    "HARMFUL",
    "PHASES",
    "SCENARIOS",
    "AgentAnswer",
    "AgentProfile",
    "BettingEProcess",
    "DualServeRouter",
    "ESRDetector",
    "MigrationProtocol",
    "PairScores",
    "PlanResult",
    "ProtocolSettings",
    "QualityAggregator",
    "RouterStats",
    "ShadowCostModel",
    "WaldSPRT",
    "evaluate",
    "holm",
    "http_agent",
    "markdown_table",
    "settings_from_mapping",
    "simes_global",
    "simulate_plan",
    "simulate_streams",
    "sql_grade",
    "sql_safety_violation",
    "summary",
]

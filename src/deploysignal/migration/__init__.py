"""Paired migration of an AI agent: dual-serve router, quality aggregator, sequential tests, phased protocol.

Public API::

    BettingEProcess, ESRDetector, WaldSPRT, holm, simes_global      sequential tests
    AgentAnswer, PairScores, QualityAggregator, sql_grade, sql_safety_violation   quality signals
    MigrationProtocol, ProtocolSettings, PHASES                      phased migration
    DualServeRouter, RouterStats, http_agent                         asyncio dual-serve router
    ShadowCostModel                                                  shadow-fraction cost model
    evaluate, simulate_streams, markdown_table, summary, SCENARIOS   simulation of the evaluation
"""

from ._cost import ShadowCostModel
from ._protocol import PHASES, MigrationProtocol, ProtocolSettings
from ._quality import DIMENSIONS, AgentAnswer, PairScores, QualityAggregator, sql_grade, sql_safety_violation
from ._router import DualServeRouter, RouterStats, http_agent
from ._sequential import BettingEProcess, ESRDetector, WaldSPRT, holm, simes_global
from ._simulation import HARMFUL, SCENARIOS, evaluate, markdown_table, simulate_streams, summary

__all__ = [
    "DIMENSIONS",
    "HARMFUL",
    "PHASES",
    "SCENARIOS",
    "AgentAnswer",
    "BettingEProcess",
    "DualServeRouter",
    "ESRDetector",
    "MigrationProtocol",
    "PairScores",
    "ProtocolSettings",
    "QualityAggregator",
    "RouterStats",
    "ShadowCostModel",
    "WaldSPRT",
    "evaluate",
    "holm",
    "http_agent",
    "markdown_table",
    "simes_global",
    "simulate_streams",
    "sql_grade",
    "sql_safety_violation",
    "summary",
]

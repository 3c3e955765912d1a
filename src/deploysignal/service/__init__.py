"""HTTP service (FastAPI): analyses, durable ingest, verdicts, SSE, audit, Argo / Flagger / Kayenta adapters."""

from ._app import create_app, openapi_spec
from ._engine import AnalysisEngine, TickIn, TickResult, VoidIn
from ._kayenta import execution_status, kayenta_router
from ._manager import AnalysisManager
from ._settings import ServiceSettings, TokenEntry, hash_token

__all__ = ["AnalysisEngine", "AnalysisManager", "ServiceSettings", "TickIn", "TickResult", "TokenEntry", "VoidIn", "create_app", "execution_status", "hash_token", "kayenta_router", "openapi_spec"]

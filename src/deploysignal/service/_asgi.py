"""ASGI factory for ``uvicorn --factory deploysignal.service._asgi:app_from_env`` (multi-worker serve).

Reads ``DEPLOYSIGNAL_SERVICE_SETTINGS`` (JSON of :class:`ServiceSettings`), set by ``deploysignal serve``.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from ._app import create_app
from ._settings import ServiceSettings

__all__ = ["app_from_env"]


def app_from_env() -> FastAPI:
    raw = os.environ.get("DEPLOYSIGNAL_SERVICE_SETTINGS", "{}")
    return create_app(ServiceSettings.model_validate_json(raw))

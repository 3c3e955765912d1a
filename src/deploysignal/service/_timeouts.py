"""Stalled connections: a client must send a whole request (headers and body) within a deadline.

uvicorn (0.55) times out only idle keep-alive connections (``timeout_keep_alive``, 5 s by default): a
client that opens a connection and sends nothing, or half a request line, or headers announcing a body
it never sends, held a connection and its buffers for as long as it liked. :func:`protocol_class`
gives uvicorn's httptools protocol a deadline per request: from the connection's first moment (and from
the first byte of each further request on it) the client has ``timeout`` seconds to complete the
request; the deadline ends when the last body byte arrives, so the time the service takes to answer,
and long responses (server-sent events), are not limited. A request not complete by then is answered
``408`` (JSON, ``Connection: close``) and the connection closed; if a response had already begun (the
service may refuse a request before reading its body) the connection is only closed.

``deploysignal serve --request-timeout`` (default 30 s) sets it; ``--timeout-keep-alive`` (default 5 s)
is uvicorn's idle limit between requests.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["protocol_class"]


def protocol_class(timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's ``http`` protocol (httptools) with a ``timeout``-second deadline per request."""
    body = json.dumps({"detail": f"request not received within {timeout:g} s (headers and body); the connection is closed"}).encode()
    answer = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)

    class DeadlineProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            cycle = getattr(self, "cycle", None)
            if cycle is None or not cycle.response_started:
                self.transport.write(answer)
            self.transport.close()

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            self._arm()
            super().on_message_begin()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

    DeadlineProtocol.__name__ = DeadlineProtocol.__qualname__ = f"DeadlineProtocol{timeout:g}s"
    return DeadlineProtocol

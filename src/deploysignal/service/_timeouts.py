"""Connection timeouts for ``deploysignal serve`` that uvicorn does not apply itself.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` seconds, but arms that timer
only once a response is complete: a connection that opens and never sends a complete request head
(request line and headers), or trickles it byte by byte, is held open for ever. The protocol built by
:class:`HeadTimeoutProtocol` closes such a connection ``seconds`` after it opened or after its last
response completed, unless a request head has arrived meanwhile (a request in progress is never cut:
its body is bounded by ``BodyLimit``'s ``body_timeout``, its handling by the service's own waits).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

__all__ = ["HEADER_TIMEOUT_ENV", "PROTOCOL", "HeadTimeoutProtocol"]

#: seconds for a request head; read when a connection opens (``serve --header-timeout`` sets it, and
#: worker processes inherit it)
HEADER_TIMEOUT_ENV = "DEPLOYSIGNAL_HEADER_TIMEOUT"
#: what ``uvicorn.run(http=...)`` takes (an import string: worker processes import it themselves)
PROTOCOL = "deploysignal.service._timeouts:HeadTimeoutProtocol"

_base: Any = AutoHTTPProtocol  # httptools when installed, else h11: what uvicorn's "auto" picks


class HeadTimeoutProtocol(_base):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol with a request-head timeout (``$DEPLOYSIGNAL_HEADER_TIMEOUT`` seconds,
    default 10): see the module docstring."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._head_timeout = float(os.environ.get(HEADER_TIMEOUT_ENV, "10"))
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if getattr(self, "_head_timer", None) is not None:
            self._head_timer.cancel()  # type: ignore[union-attr]
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return  # a request head arrived: the request is in progress
        if not self.transport.is_closing():
            self.transport.close()

"""uvicorn's h11 protocol with a deadline on request *headers* (slow-header senders are cut off).

uvicorn bounds the idle time between two requests of a keep-alive connection (``timeout_keep_alive``) and
the size of an incomplete request head (``h11_max_incomplete_event_size``), but a connection that sends its
request line and headers one byte at a time -- or nothing at all -- is kept open for ever. Such connections
never reach the application (no admission slot is taken), yet they hold a socket each. This subclass closes a
connection whose request head is not complete ``header_timeout_s`` seconds after the connection opened or
after the first byte of the next request arrived. Request *bodies* are bounded by
:class:`cspon_rs.api.concurrency.Admission` (idle timeout, overall deadline, minimum rate).
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["protocol_with_header_timeout"]


class _HeaderDeadlineH11(H11Protocol):
    """H11Protocol that closes the connection when a request head takes longer than ``header_timeout_s``."""

    header_timeout_s: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._arm()  # first byte of a further request on a keep-alive connection
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self._head_timer is not None and self.conn.their_state is not h11.IDLE:
            self._head_timer.cancel()  # the head is complete: the body has its own deadlines
            self._head_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._deadline)

    def _deadline(self) -> None:
        self._head_timer = None
        # IDLE on their side = the request line and headers have not all arrived yet
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closing a connection whose request headers took over %.0f s", self.header_timeout_s)
            self.transport.close()


def protocol_with_header_timeout(header_timeout_s: float) -> type[H11Protocol]:
    """An h11 protocol class for ``uvicorn.run(http=...)`` with that header deadline (seconds)."""
    return type("GuardedH11Protocol", (_HeaderDeadlineH11,), {"header_timeout_s": float(header_timeout_s)})

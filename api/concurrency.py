"""Bounded request concurrency: at most N requests inside the application at once, the rest wait in line.

Why: a sync endpoint holds its database connection from its first query until the request ends, and
FastAPI needs a *second* worker thread afterwards to validate the response. With more requests in flight
than pooled connections, every thread could end up waiting for a connection held by a request that waits
for a thread -- the deadlock seen with 41 clients (``QueuePool limit ... reached``, then 500s). Admitting at
most ``limit`` requests, with the pool sized ``limit + threads``, makes a pool wait impossible: excess
requests queue here, on the event loop, and are answered later instead of failing.

Static files (``/static/``) bypass the line (they touch no database), and so does ``/api/v1/health`` (one
short read, so liveness is answered while requests queue). A slow upload holds its place in line while its
body streams in.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["InFlightLimit"]


class InFlightLimit:
    """Pure ASGI middleware admitting at most ``limit`` concurrent HTTP requests (FIFO wait, no rejection)."""

    def __init__(self, app: ASGIApp, limit: int, bypass_prefixes: tuple[str, ...] = ("/static/",)) -> None:
        self.app = app
        self.limit = limit
        self.bypass = bypass_prefixes
        self._sem: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(self.bypass):
            await self.app(scope, receive, send)
            return
        if self._sem is None:  # created inside the running loop
            self._sem = asyncio.Semaphore(self.limit)
        async with self._sem:
            await self.app(scope, receive, send)

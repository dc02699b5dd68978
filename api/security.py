"""Response security headers (Content-Security-Policy et al.) and access-log redaction of secrets.

The policy allows only same-origin scripts (no inline script, no ``eval``), same-origin or ``data:`` /
``blob:`` images (map tiles and chips drawn from fetched blobs), no plugins and no framing. Inline *styles*
are allowed because Leaflet positions map panes and markers with style attributes. The interactive API docs
(``/api/v1/docs``, FastAPI's Swagger UI from its CDN with one inline bootstrap script) get their own,
looser policy; nothing else does.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSP", "DOCS_CSP", "install_security_headers", "redact_access_log", "redact_query"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "worker-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)

_SECRET_PARAM = re.compile(
    r"(?i)([?&](?:token|access_token|api_key|apikey|auth|authorization|csrf_token|session)=)[^&#\s]*"
)


def redact_query(path: str) -> str:
    """``path`` with the values of token-like query parameters replaced by ``***``."""
    return _SECRET_PARAM.sub(r"\1***", path)


def install_security_headers(app: FastAPI, *, docs_path: str) -> None:
    """Add CSP, ``nosniff``, ``Referrer-Policy`` and ``X-Frame-Options`` to every HTTP response."""
    app.add_middleware(_SecurityHeaders, docs_path=docs_path)


class _SecurityHeaders:
    """Pure ASGI middleware (no per-request task like ``BaseHTTPMiddleware``): adds headers on start."""

    def __init__(self, app: ASGIApp, docs_path: str) -> None:
        self.app = app
        self.docs_path = docs_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = DOCS_CSP if scope.get("path") == self.docs_path else CSP

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in (
                    ("Content-Security-Policy", policy),
                    ("X-Content-Type-Options", "nosniff"),
                    ("Referrer-Policy", "same-origin"),
                    ("X-Frame-Options", "DENY"),
                ):
                    if name not in headers:
                        headers.append(name, value)
            await send(message)

        await self.app(scope, receive, _send)


class _RedactFilter(logging.Filter):
    """Rewrites uvicorn access-log records so a token in a query string is never written."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) and "=" in a else a for a in args)
        elif isinstance(record.msg, str):
            record.msg = redact_query(record.msg)
        return True


def redact_access_log() -> None:
    """Install the redaction filter on ``uvicorn.access`` (idempotent; run at start-up, after logging set-up)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactFilter) for f in logger.filters):
        logger.addFilter(_RedactFilter())

"""Map library exceptions to JSON HTTP errors (never a 500 for bad user input)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cspon_rs.errors import (
    ConflictError,
    CsponError,
    InputFileError,
    InvalidTransitionError,
    NotFoundError,
)

__all__ = ["install_error_handlers"]

_log = logging.getLogger("cspon_rs.api")


def _body(exc: BaseException, status_code: int) -> JSONResponse:
    return JSONResponse(
        status_code=status_code,
        content={
            "detail": [{"loc": [], "msg": str(exc), "type": type(exc).__name__}],
            "error": type(exc).__name__,
        },
    )


def status_for(exc: BaseException) -> int:
    """HTTP status for a library exception."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, InvalidTransitionError):
        return 422
    if isinstance(exc, InputFileError):
        return 422
    if isinstance(exc, ValueError | LookupError):
        return 422
    if isinstance(exc, CsponError):
        return 400
    return 500


def install_error_handlers(app: FastAPI) -> None:
    """Register handlers: NotFound→404, Conflict→409, InvalidTransition/input/value errors→422."""

    async def _cspon(_request: Request, exc: Exception) -> JSONResponse:
        return _body(exc, status_for(exc))

    async def _value(_request: Request, exc: Exception) -> JSONResponse:
        return _body(exc, 422)

    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            status_code=500, content={"detail": "internal server error", "error": "InternalError"}
        )

    app.add_exception_handler(CsponError, _cspon)
    app.add_exception_handler(ValueError, _value)
    app.add_exception_handler(Exception, _unexpected)

"""Map library exceptions to JSON HTTP errors (never a 500 for bad user input)."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cspon_rs.errors import (
    ConflictError,
    CsponError,
    InputFileError,
    InvalidTransitionError,
    NotFoundError,
)

__all__ = ["install_error_handlers"]

_log = logging.getLogger("cspon_rs.api")


#: An absolute POSIX path of two or more segments (not an API route): shown as ``…/<last segment>``.
_ABS_PATH = re.compile(r"(?<![\w.:/~-])/(?!api/)(?:[^\s'\"()<>,;:/]+/)+([^\s'\"()<>,;:/]*)")


def public_text(text: str) -> str:
    """``text`` with every absolute server path cut to its last segment (``/srv/data/x/a.tif`` → ``…/a.tif``):
    error messages name the file without telling how the server's disks are laid out."""
    return _ABS_PATH.sub(lambda m: f"…/{m.group(1)}", text)


def _public_detail(detail: Any) -> Any:
    if isinstance(detail, str):
        return public_text(detail)
    if isinstance(detail, list):
        return [{**d, "msg": public_text(d["msg"])} if isinstance(d, dict) and isinstance(d.get("msg"), str)
                else d for d in detail]
    return detail


def _body(exc: BaseException, status_code: int) -> JSONResponse:
    return JSONResponse(
        status_code=status_code,
        content={
            "detail": [{"loc": [], "msg": public_text(str(exc)), "type": type(exc).__name__}],
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


#: Longest echo of a rejected input in a 422 body (a 100 KB field must not come back whole).
MAX_ECHO = 200


def short_echo(value: Any) -> Any:
    """``value`` itself when short, else its first :data:`MAX_ECHO` characters and its length."""
    text = value if isinstance(value, str) else json.dumps(jsonable_encoder(value), ensure_ascii=False, default=str)
    return value if len(text) <= MAX_ECHO else f"{text[:MAX_ECHO]}… ({len(text)} characters)"


def install_error_handlers(app: FastAPI) -> None:
    """Register handlers: NotFound→404, Conflict→409, InvalidTransition/input/value errors→422."""

    async def _cspon(_request: Request, exc: Exception) -> JSONResponse:
        return _body(exc, status_for(exc))

    async def _value(_request: Request, exc: Exception) -> JSONResponse:
        return _body(exc, 422)

    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        from cspon_rs.store.db import is_locked_error

        if is_locked_error(exc):  # the 30 s busy timeout ran out: nothing was written, the client may retry
            _log.warning("database busy on %s %s: %s", request.method, request.url.path, exc)
            return JSONResponse(
                status_code=503,
                content={"detail": [{"loc": [], "msg": "database busy; nothing was changed, retry shortly",
                                     "type": "database_busy"}], "error": "DatabaseBusy"},
                headers={"Retry-After": "5"},
            )
        _log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            status_code=500, content={"detail": "internal server error", "error": "InternalError"}
        )

    async def _validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [{**e, "input": short_echo(e["input"])} if "input" in e else dict(e) for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})

    async def _http(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code in (204, 304) or exc.status_code < 400:
            return Response(status_code=exc.status_code, headers=exc.headers)
        return JSONResponse(status_code=exc.status_code, content={"detail": _public_detail(exc.detail)},
                            headers=exc.headers)

    async def _bomb(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=413, content={
            "detail": [{"loc": [], "msg": f"image too large to decode: {exc}", "type": "DecompressionBombError"}],
            "error": "DecompressionBombError"})

    from PIL import Image

    app.add_exception_handler(Image.DecompressionBombError, _bomb)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(CsponError, _cspon)
    app.add_exception_handler(ValueError, _value)
    app.add_exception_handler(Exception, _unexpected)

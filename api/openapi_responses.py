"""Every status code a route can answer, documented in the OpenAPI spec (issue #22: 133 undocumented codes).

Some answers come from outside the route's own code, the same for every route: the admission middleware
(``408`` slow body, ``413`` too large, ``429`` too many bodies or uploads, ``503`` line full or uploads busy,
``400`` a bad ``Content-Length``), authentication (``401``), roles and county scope (``403``) and validation
(``422``), the store's busy timeout (``503``), and ``404`` (any store look-up may find nothing; another county's
ids answer the same). Others follow from what a route is: ``409`` for a write (stale ``expected_version``, second
verification, refused promotion), ``413``/``415`` for uploads. :func:`document_error_responses` adds these to
every route under ``/api/v1`` after the routers are included, with one shared error schema, unless the route
documents the code itself (``responses=`` on the route wins).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

__all__ = ["ErrorItem", "ErrorOut", "add_error_responses", "document_error_responses"]


class ErrorItem(BaseModel):
    """One problem: where (``loc``, e.g. ``["body", "permits_path"]``), what (``msg``) and its kind."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """An error answer: ``detail`` lists the problems (a plain text for a few generic answers); ``error`` names
    the library exception when there is one."""

    model_config = ConfigDict(extra="allow")

    detail: list[ErrorItem] | str
    error: str | None = None


_REF = {"$ref": "#/components/schemas/ErrorOut"}


def _doc(text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": _REF}}}


#: Answers any route under /api/v1 can give, whatever it does.
COMMON: dict[str, dict[str, Any]] = {
    "400": _doc("malformed request (e.g. a Content-Length that is not a number)"),
    "408": _doc("the request body did not arrive in time; the connection is closed"),
    "413": _doc("request body larger than the service accepts"),
    "422": _doc("invalid input; detail names the field (loc) and the problem (msg)"),
    "429": _doc("too many request bodies or uploads in flight from this client or user; see Retry-After"),
    "503": _doc("the service is busy (admission line full, uploads busy, database busy); see Retry-After"),
}
AUTH = {
    "401": _doc("missing, unknown or revoked token / session"),
    "403": _doc("role not allowed, another county, or a missing CSRF header with a session cookie"),
}
NOT_FOUND = {"404": _doc("not found (or outside your county: the same answer)")}
CONFLICT = {"409": _doc("conflict: stale expected_version, a second verification, or a refused change")}
UPLOAD = {"415": _doc("file type not accepted (checked by its first bytes)")}


def add_error_responses(spec: dict[str, Any], prefix: str = "/api/v1") -> dict[str, Any]:
    """``spec`` with the error answers of every operation under ``prefix`` added (see module docs); codes an
    operation documents itself are kept as they are."""
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    schema = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    components["ErrorOut"] = schema
    for path, operations in spec.get("paths", {}).items():
        if not path.startswith(prefix):
            continue
        for method, op in operations.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            extra = dict(COMMON)
            if not path.endswith("/health"):  # every other route needs a token, a cookie or (session) both
                extra.update(AUTH)
                extra.update(NOT_FOUND)  # any store look-up (a warning, a period's rows) may find nothing
            if "{" in path:
                extra.update(NOT_FOUND)
            if method.lower() not in ("get", "head", "options"):
                extra.update(CONFLICT)
                extra.update(NOT_FOUND)
                if "multipart/form-data" in (op.get("requestBody") or {}).get("content", {}):
                    extra.update(UPLOAD)
            for code, doc in extra.items():
                op["responses"].setdefault(code, doc)
    return spec


def document_error_responses(app: FastAPI, prefix: str = "/api/v1") -> None:
    """Make ``app.openapi()`` return the spec with :func:`add_error_responses` applied."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_error_responses(default(), prefix)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

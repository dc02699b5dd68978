"""FastAPI dependencies: settings, DB session, the calling user and role / region checks."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from cspon_rs.api.settings import ServeSettings
from cspon_rs.store.api_crud import user_for_token
from cspon_rs.store.api_models import ApiUser

__all__ = [
    "AdminUser",
    "CurrentUser",
    "SessionDep",
    "SettingsDep",
    "ensure_county",
    "error_detail",
    "not_found",
    "require_roles",
    "user_for_cookie",
]

_bearer = HTTPBearer(auto_error=False, description="Token printed by `cspon-rs users add`.")


def error_detail(field: str, msg: str, where: str = "body") -> list[dict[str, object]]:
    """A ``detail`` list shaped like FastAPI's validation errors: names the field and the problem."""
    return [{"loc": [where, field], "msg": msg, "type": "value_error"}]


def not_found(field: str, what: str) -> HTTPException:
    """The one 404 of a resource that is missing *or* outside the caller's county: the same body either way,
    so an answer never tells another county's ids from absent ones."""
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=error_detail(field, f"no such {what}", "path"))


def get_settings(request: Request) -> ServeSettings:
    """The service settings stored on the app."""
    settings: ServeSettings = request.app.state.settings
    return settings


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_cleanup_limiter: anyio.CapacityLimiter | None = None


def _cleanup() -> anyio.CapacityLimiter:
    """Threads that only end sessions: never shared with request work, so a session holding the SQLite
    write lock is always released, even while every request thread waits for that lock."""
    global _cleanup_limiter
    if _cleanup_limiter is None:
        _cleanup_limiter = anyio.CapacityLimiter(16)
    return _cleanup_limiter


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request; rolled back on error, always closed.

    GET/HEAD/OPTIONS get a read session (SQLite: deferred ``BEGIN``, so they never wait for a writer);
    other methods a write session (SQLite: ``BEGIN IMMEDIATE``, writers queue instead of failing half-way).
    The rollback / close runs on its own small thread pool: when a handler raises inside a transaction,
    the lock it holds is released at once instead of after a free request thread (which, under load,
    are all waiting for that very lock -- the deadlock of 41 concurrent clients).
    """
    state = request.app.state
    factory = state.read_sessionmaker if request.method in _SAFE_METHODS else state.sessionmaker
    session: Session = factory()  # no I/O until first use
    try:
        yield session
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(session.rollback, limiter=_cleanup())
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(session.close, limiter=_cleanup())


SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _unauthorized(msg: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail=error_detail("Authorization", msg, "header"),
        headers={"WWW-Authenticate": "Bearer"},
    )


def user_for_cookie(request: Request, session: Session, value: str) -> ApiUser | None:
    """The active user of a ``cspon_session`` cookie value whose signature and expiry hold, else ``None``."""
    from cspon_rs.api.session_cookie import parse_cookie, read_cookie

    parsed = parse_cookie(value)
    if parsed is None:
        return None
    user = session.get(ApiUser, parsed[0])
    if user is None or not user.active:
        return None
    if read_cookie(request.app.state.session_key, value, user.token_hash) is None:
        return None
    return user


def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiUser:
    """The caller: ``Authorization: Bearer <token>`` (scripts) or the ``cspon_session`` cookie (browser).

    With the cookie, POST/PUT/PATCH/DELETE also need ``X-CSRF-Token`` equal to the session's CSRF token
    (403 otherwise). A token in the query string is never accepted. The user is looked up in a short read
    session of its own (never the request's write session: on SQLite that would take the write lock).
    """
    from cspon_rs.api.session_cookie import COOKIE_NAME, CSRF_HEADER, csrf_for

    bearer = credentials is not None and credentials.scheme.lower() == "bearer" and credentials.credentials
    cookie = request.cookies.get(COOKIE_NAME)
    if not bearer and not cookie:
        raise _unauthorized(
            "missing bearer token (send 'Authorization: Bearer <token>', or sign in: POST /api/v1/session)"
        )
    session: Session = request.app.state.read_sessionmaker()
    try:
        if bearer:
            assert credentials is not None
            user = user_for_token(session, credentials.credentials)
        else:
            user = user_for_cookie(request, session, str(cookie))
        session.commit()
    finally:
        session.close()
    if user is not None and user.role != "admin" and user.county_code is None:
        # made before counties were required: seeing every county is the admin role's alone
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=error_detail(
                "county_code",
                f"user {user.name!r} ({user.role}) has no county; an admin must recreate it with one",
                "header",
            ),
        )
    if bearer:
        if user is None:
            raise _unauthorized("unknown or revoked token")
        return user
    assert cookie is not None
    if user is None:
        raise _unauthorized("session expired or revoked (sign in again: POST /api/v1/session)")
    if request.method in _UNSAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode("utf-8"), csrf_for(request.app.state.session_key, cookie).encode()):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=error_detail(
                    CSRF_HEADER,
                    f"missing or wrong {CSRF_HEADER} header (send the csrf_token from GET /api/v1/session)",
                    "header",
                ),
            )
    return user


CurrentUser = Annotated[ApiUser, Depends(current_user)]


def _caller_known_sync(request: Request) -> bool:
    from cspon_rs.api.session_cookie import COOKIE_NAME

    auth = request.headers.get("authorization", "")
    session: Session = request.app.state.read_sessionmaker()
    try:
        if auth[:7].lower() == "bearer " and auth[7:].strip():
            user = user_for_token(session, auth[7:].strip())
        elif request.cookies.get(COOKIE_NAME):
            user = user_for_cookie(request, session, str(request.cookies[COOKIE_NAME]))
        else:
            user = None
        session.commit()
    finally:
        session.close()
    return user is not None


async def caller_is_known(scope: MutableMapping[str, Any]) -> bool:
    """True when the request carries a valid token or session (checked before a large body is read)."""
    request = Request(scope)
    try:
        return await anyio.to_thread.run_sync(_caller_known_sync, request, limiter=_cleanup())
    except Exception:  # an unreadable credential (e.g. bytes that are not UTF-8) is not a known caller
        return False


def require_roles(*roles: str) -> Callable[[ApiUser], ApiUser]:
    """Dependency factory: the current user; 403 unless their role is in ``roles`` (admin always passes)."""
    allowed = set(roles) | {"admin"}

    def _check(user: CurrentUser) -> ApiUser:
        if user.role not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=error_detail(
                    "role",
                    f"role {user.role!r} may not do this (needs one of {', '.join(sorted(allowed))})",
                    "header",
                ),
            )
        return user

    return _check


AdminUser = Annotated[ApiUser, Depends(require_roles("admin"))]


def ensure_county(user: ApiUser, county_code: str | None, field: str = "county_code") -> None:
    """403 if a county-bound user names a county other than their own."""
    if user.county_code is not None and county_code is not None and county_code != user.county_code:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=error_detail(
                field,
                f"user {user.name!r} is limited to county {user.county_code}, not {county_code}",
                "query",
            ),
        )

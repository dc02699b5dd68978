"""FastAPI dependencies: settings, DB session, the calling user and role / region checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

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
    "require_roles",
]

_bearer = HTTPBearer(auto_error=False, description="Token printed by `cspon-rs users add`.")


def error_detail(field: str, msg: str, where: str = "body") -> list[dict[str, object]]:
    """A ``detail`` list shaped like FastAPI's validation errors: names the field and the problem."""
    return [{"loc": [where, field], "msg": msg, "type": "value_error"}]


def get_settings(request: Request) -> ServeSettings:
    """The service settings stored on the app."""
    settings: ServeSettings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; rolled back on error, always closed."""
    session: Session = request.app.state.sessionmaker()
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


def current_user(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiUser:
    """The user whose bearer token came with the request; 401 if none or unknown."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=error_detail(
                "Authorization", "missing bearer token (send 'Authorization: Bearer <token>')", "header"
            ),
            headers={"WWW-Authenticate": "Bearer"},
        )
    user = user_for_token(session, credentials.credentials)
    # End the read transaction now: SQLite BEGIN IMMEDIATE would otherwise hold the lock during uploads.
    session.commit()
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=error_detail("Authorization", "unknown or revoked token", "header"),
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


CurrentUser = Annotated[ApiUser, Depends(current_user)]


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

"""Ending a user's access: deactivate the user, or revoke its token (``cspon-rs users deactivate|revoke``).

Both take effect on the next request: the service looks the token up on every request and signs browser
sessions over the user's token hash, so a replaced hash ends every session too. Columns of revision
``0009_service_limits``.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from cspon_rs.errors import NotFoundError
from cspon_rs.store.api_crud import hash_token
from cspon_rs.store.api_models import ApiUser, utcnow

__all__ = ["deactivate_user", "find_user", "revoke_token"]


def find_user(session: Session, name: str | None = None, token: str | None = None) -> ApiUser:
    """The user named ``name``, or the owner of ``token``.

    Raises:
        NotFoundError: No such user, or no user holds that token (already revoked or mistyped).
    """
    if token is not None:
        user = session.scalar(select(ApiUser).where(ApiUser.token_hash == hash_token(token)))
        if user is None:
            raise NotFoundError("no user holds that token (already revoked, or mistyped)")
        return user
    user = session.scalar(select(ApiUser).where(ApiUser.name == name))
    if user is None:
        raise NotFoundError(f"no user named {name!r} (see GET /api/v1/users)")
    return user


def deactivate_user(session: Session, user: ApiUser) -> ApiUser:
    """Switch ``user`` off (its token and sessions are refused from now on) and commit."""
    user.active = False
    user.deactivated_at = utcnow()
    session.commit()
    return user


def revoke_token(session: Session, user: ApiUser, *, reissue: bool = False) -> str | None:
    """Replace ``user``'s token hash: the old token and its browser sessions stop working; commit.

    Returns:
        The new token when ``reissue`` (shown once, only its hash is stored), else ``None`` (the user then has
        no usable token until the next revoke with ``reissue``).
    """
    token = secrets.token_urlsafe(32)
    # without reissue the stored hash is of a token nobody was shown: nothing can match it
    user.token_hash = hash_token(token)
    user.token_revoked_at = utcnow()
    session.commit()
    return token if reissue else None

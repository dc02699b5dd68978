"""Browser sign-in: trade a token for an HttpOnly session cookie plus a CSRF token.

* ``POST /session`` ``{"token": "...", "remember": false}`` -- checks the token, sets ``cspon_session``
  (HttpOnly, SameSite=Strict, Path=/, Secure on https; Max-Age 30 days with ``remember``, else a browser
  session cookie) and returns ``{"csrf_token", "user"}``;
* ``GET /session`` -- the same body for the cookie's session (a reloaded page gets its CSRF token back);
* ``DELETE /session`` -- clears the cookie (no check: signing out is always allowed).

Scripts keep using ``Authorization: Bearer``; see :mod:`cspon_rs.api.session_cookie` for the format.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, Field

from cspon_rs.api.deps import SessionDep, error_detail, user_for_cookie
from cspon_rs.api.schemas import UserOut
from cspon_rs.api.session_cookie import COOKIE_NAME, REMEMBER_S, SESSION_S, csrf_for, issue_cookie
from cspon_rs.store.api_crud import user_for_token

__all__ = ["SessionIn", "SessionOut", "router"]

router = APIRouter(prefix="/session", tags=["session"])


class SessionIn(BaseModel):
    """A token to sign in with (as printed by ``cspon-rs users add``)."""

    model_config = {"extra": "forbid"}

    token: str = Field(min_length=1, max_length=512)
    remember: bool = Field(default=False, description="keep the session 30 days instead of until the browser closes")


class SessionOut(BaseModel):
    """The signed-in user and the CSRF token to send as ``X-CSRF-Token`` on POST/PUT/PATCH/DELETE."""

    csrf_token: str
    user: UserOut


def _set_cookie(request: Request, response: Response, value: str, *, remember: bool) -> None:
    response.set_cookie(
        COOKIE_NAME,
        value,
        max_age=REMEMBER_S if remember else None,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


@router.post("", response_model=SessionOut, summary="Sign in: token -> HttpOnly session cookie")
def sign_in(body: SessionIn, request: Request, response: Response, session: SessionDep) -> SessionOut:
    """Check the token, set the ``cspon_session`` cookie and return the CSRF token and the user."""
    user = user_for_token(session, body.token)
    session.commit()
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail=error_detail("token", "unknown or revoked token")
        )
    key: bytes = request.app.state.session_key
    value = issue_cookie(key, user.id, user.token_hash, REMEMBER_S if body.remember else SESSION_S)
    _set_cookie(request, response, value, remember=body.remember)
    response.headers["Cache-Control"] = "no-store"
    return SessionOut(csrf_token=csrf_for(key, value), user=UserOut.model_validate(user))


@router.get("", response_model=SessionOut, summary="The current browser session and its CSRF token")
def current_session(request: Request, response: Response, session: SessionDep) -> SessionOut:
    """Same body as sign-in, for the cookie sent with the request (401 without a valid session cookie)."""
    value = request.cookies.get(COOKIE_NAME)
    user = user_for_cookie(request, session, value) if value else None
    session.commit()
    if value is None or user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=error_detail(COOKIE_NAME, "no valid browser session (sign in: POST /api/v1/session)", "cookie"),
        )
    response.headers["Cache-Control"] = "no-store"
    return SessionOut(csrf_token=csrf_for(request.app.state.session_key, value), user=UserOut.model_validate(user))


@router.delete("", status_code=status.HTTP_204_NO_CONTENT, summary="Sign out (clear the session cookie)")
def sign_out(request: Request) -> Response:
    """Clear the cookie. Needs no valid session, so a stale cookie can always be dropped."""
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(
        COOKIE_NAME, path="/", secure=request.url.scheme == "https", httponly=True, samesite="strict"
    )
    return response

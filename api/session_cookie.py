"""Browser sessions: a signed ``cspon_session`` cookie and its CSRF token (nothing new is stored).

The web pages exchange a user's token once (``POST /api/v1/session``) for an HttpOnly cookie, so injected
script can never read a credential. The cookie value is ``<user id>.<expiry unix s>.<nonce>.<signature>``;
the signature is an HMAC-SHA256 under the service's session key over those fields **and the user's
current token hash**, so rotating or revoking the token (or deactivating the user) ends every session.
The CSRF token is a second HMAC over the cookie value: the page gets it in the JSON body (never from the
cookie) and sends it back as ``X-CSRF-Token`` on unsafe methods.

The session key is ``ServeSettings.session_secret`` when set (several web processes must share it), else
a random key kept in ``<data_dir>/session.key`` (mode 0600, made on first use).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cspon_rs.api.settings import ServeSettings

__all__ = [
    "COOKIE_NAME",
    "CSRF_HEADER",
    "REMEMBER_S",
    "SESSION_S",
    "SessionClaims",
    "csrf_for",
    "issue_cookie",
    "read_cookie",
    "session_key",
]

COOKIE_NAME = "cspon_session"
CSRF_HEADER = "X-CSRF-Token"
#: Lifetime of a "remember me" session (seconds, also the cookie's Max-Age).
REMEMBER_S = 30 * 24 * 3600
#: Server-side lifetime of a browser-session cookie (no Max-Age; the browser drops it on exit).
SESSION_S = 12 * 3600
_KEY_FILE = "session.key"


@dataclass(frozen=True)
class SessionClaims:
    """What a valid cookie says: whose session it is and until when (unix seconds)."""

    user_id: int
    expires: int


def session_key(settings: ServeSettings) -> bytes:
    """The HMAC key: ``settings.session_secret`` or ``<data_dir>/session.key`` (created, mode 0600)."""
    if settings.session_secret:
        return str(settings.session_secret).encode("utf-8")
    path = Path(settings.data_dir) / _KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = secrets.token_hex(32)
    tmp = path.with_name(f".{_KEY_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(fresh)
    try:
        os.link(tmp, path)  # first writer wins; a racing process reads the winner's key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())


def _mac(key: bytes, message: str) -> str:
    digest = hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def issue_cookie(key: bytes, user_id: int, token_hash: str, lifetime_s: int) -> str:
    """A signed cookie value for ``user_id`` valid ``lifetime_s`` seconds, bound to its ``token_hash``."""
    expires = int(time.time()) + lifetime_s
    nonce = secrets.token_urlsafe(12)
    payload = f"{user_id}.{expires}.{nonce}"
    return f"{payload}.{_mac(key, f'{payload}.{token_hash}')}"


def parse_cookie(value: str) -> tuple[int, int, str] | None:
    """``(user_id, expires, payload)`` of a well-formed cookie value (signature not checked), else ``None``."""
    parts = value.split(".")
    if len(parts) != 4 or not value.isascii() or not parts[0].isdigit() or not parts[1].isdigit() \
            or len(parts[0]) > 10 or len(parts[1]) > 12:
        return None  # (non-ASCII: '²'.isdigit() is true but int('²') fails; compare_digest refuses non-ASCII)
    return int(parts[0]), int(parts[1]), ".".join(parts[:3])


def read_cookie(key: bytes, value: str, token_hash: str) -> SessionClaims | None:
    """The claims of ``value`` when its signature matches ``token_hash`` and it has not expired."""
    parsed = parse_cookie(value)
    if parsed is None:
        return None
    user_id, expires, payload = parsed
    signature = value.rsplit(".", 1)[1]
    if not hmac.compare_digest(signature.encode("utf-8"), _mac(key, f"{payload}.{token_hash}").encode("ascii")):
        return None
    if expires < time.time():
        return None
    return SessionClaims(user_id=user_id, expires=expires)


def csrf_for(key: bytes, cookie_value: str) -> str:
    """The CSRF token of a session cookie (derived, so nothing is stored)."""
    return _mac(key, f"csrf.{cookie_value}")

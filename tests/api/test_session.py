"""Browser sessions: HttpOnly cookie + CSRF header, no query-string tokens, CSP on pages and API."""

from __future__ import annotations

from contextlib import closing

import httpx
from apitest_support import Server, add_user


def _sign_in(server: Server, token: str, remember: bool = False) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(base_url=server.base, timeout=60.0)
    r = client.post("/api/v1/session", json={"token": token, "remember": remember})
    return client, r


def test_session_cookie_flags_body_and_reload(server: Server) -> None:
    token = add_user(server.db_url, "sess-bureau", "bureau", "810000")
    client, r = _sign_in(server, token)
    with closing(client):
        assert r.status_code == 200, r.text
        body = r.json()
        me = httpx.get(f"{server.base}/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}).json()
        assert body["user"] == me and len(body["csrf_token"]) >= 32
        cookie = r.headers["set-cookie"]
        attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
        assert cookie.startswith("cspon_session=") and {"httponly", "path"} <= attrs
        assert "samesite=strict" in cookie.lower() and "max-age" not in attrs and "secure" not in attrs
        assert token not in cookie
        # a reloaded page gets the same CSRF token back; the cookie alone authenticates reads
        again = client.get("/api/v1/session")
        assert again.status_code == 200 and again.json() == body
        assert client.get("/api/v1/users/me").json() == me
        # the /api/session alias answers the same
        assert client.get("/api/session").json() == body
    _c, remembered = _sign_in(server, token, remember=True)
    _c.close()
    assert "max-age=2592000" in remembered.headers["set-cookie"].lower()
    # behind a TLS-terminating proxy on loopback (uvicorn trusts its X-Forwarded-Proto) the cookie is Secure
    tls = httpx.post(f"{server.base}/api/v1/session", json={"token": token},
                     headers={"X-Forwarded-Proto": "https"})
    assert tls.status_code == 200 and "; secure" in tls.headers["set-cookie"].lower()


def test_cookie_writes_need_the_csrf_header(server: Server) -> None:
    admin = add_user(server.db_url, "sess-admin", "admin")
    client, r = _sign_in(server, admin)
    csrf = r.json()["csrf_token"]
    with closing(client):
        new_user = {"name": "sess-made", "role": "bureau", "county_code": "810000"}
        missing = client.post("/api/v1/users", json=new_user)
        assert missing.status_code == 403 and "X-CSRF-Token" in missing.text
        wrong = client.post("/api/v1/users", json=new_user, headers={"X-CSRF-Token": csrf[:-2] + "xx"})
        assert wrong.status_code == 403
        ok = client.post("/api/v1/users", json=new_user, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 201, ok.text
        # a forged / tampered cookie is 401, bearer callers need no CSRF header
        value = client.cookies["cspon_session"]
        forged = httpx.get(
            f"{server.base}/api/v1/users/me", cookies={"cspon_session": "1" + value[1:] + "x"}, timeout=30
        )
        assert forged.status_code == 401
        bearer = httpx.post(
            f"{server.base}/api/v1/users",
            json={"name": "sess-made-2", "role": "bureau", "county_code": "810000"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert bearer.status_code == 201
        out = client.delete("/api/v1/session")
        assert out.status_code == 204 and 'cspon_session=""' in out.headers["set-cookie"]
        assert client.get("/api/v1/users/me").status_code == 401
        assert client.get("/api/v1/session").status_code == 401


def test_bad_sign_in_and_revoked_user(server: Server) -> None:
    import sqlite3

    assert httpx.post(f"{server.base}/api/v1/session", json={"token": "nope"}).status_code == 401
    assert httpx.post(f"{server.base}/api/v1/session", json={"token": "x", "extra": 1}).status_code == 422
    token = add_user(server.db_url, "sess-revoked", "field", "810000", "t9")
    client, _r = _sign_in(server, token)
    with closing(client):
        assert client.get("/api/v1/users/me").status_code == 200
        with sqlite3.connect(server.db_path) as con:
            con.execute("UPDATE api_users SET active = 0 WHERE name = 'sess-revoked'")
        assert client.get("/api/v1/users/me").status_code == 401


def test_query_string_token_is_refused_and_not_logged(server: Server) -> None:
    token = add_user(server.db_url, "sess-query", "bureau", "810000")
    for path in ("/api/v1/users/me", "/api/v1/warnings"):
        r = httpx.get(f"{server.base}{path}", params={"token": token})
        assert r.status_code == 401, r.text
    r = httpx.get(f"{server.base}/api/v1/users/me", params={"access_token": token})
    assert r.status_code == 401
    log = server.log_path.read_text(errors="replace")
    assert "/api/v1/users/me?token=***" in log  # the request was logged, its token was not
    assert token not in log


def test_content_security_policy_on_pages_and_api(server: Server) -> None:
    for path in ("/", "/field", "/api/v1/health", "/static/js/common.js"):
        csp = httpx.get(f"{server.base}{path}").headers.get("content-security-policy", "")
        directives = {d.strip().split(" ")[0]: d.strip() for d in csp.split(";")}
        assert directives["default-src"] == "default-src 'self'", (path, csp)
        assert directives["script-src"] == "script-src 'self'"
        assert directives["object-src"] == "object-src 'none'"
        assert directives["frame-ancestors"] == "frame-ancestors 'none'"
        assert directives["img-src"] == "img-src 'self' data: blob:"
        assert directives["worker-src"] == "worker-src 'self'"
    page = httpx.get(f"{server.base}/").text
    assert "<script>" not in page and " onclick=" not in page  # nothing the policy would block

"""Admission after the body (issue #22): slow senders take no slot and are cut off; /health sees saturation.

A real ``cspon-rs serve`` with 4 admission slots and short timeouts; attackers are raw sockets that send a
request's headers and then nothing.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apitest_support import Server, add_user, seed_warnings

IDLE_S = 4.0
HEADER_S = 2.0


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("admission")
    config = root / "serve.yaml"
    config.write_text(
        "threads: 4\nper_user: 4\nqueue: 400\nworker_poll_s: 0.3\n"
        f"body_idle_timeout_s: {IDLE_S}\nbody_timeout_s: 8\nheader_timeout_s: {HEADER_S}\n"
        "saturated_after_s: 0.3\nreaders_per_client: 60\n"
    )
    srv = Server(root / "cspon.db", root / "data", root / "serve.log", ["--config", str(config)]).start()
    seed_warnings(srv.db_url, "810000", "2018Q1", 30)
    yield srv
    srv.stop()


def _connect(srv: Server, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    sock.sendall(head)
    return sock


def _headers_only_post(srv: Server, length: int = 200, token: str | None = None) -> socket.socket:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return _connect(srv, (f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
                          f"Content-Length: {length}\r\n\r\n").encode())


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except TimeoutError:
        return data + b"<still open>"


def test_45_bodiless_posts_take_no_slot_and_get_408(small_server: Server) -> None:
    token = add_user(small_server.db_url, "adm-bureau", "bureau", county="810000")
    attackers = [_headers_only_post(small_server) for _ in range(45)]
    try:
        time.sleep(0.5)  # all 45 are now waiting for their bodies
        t0 = time.monotonic()
        with small_server.client(token) as c:
            for _ in range(3):
                r = c.get("/warnings", params={"limit": 5}, timeout=IDLE_S * 0.75)
                assert r.status_code == 200, r.text
            health = c.get("/health").json()
        assert time.monotonic() - t0 < IDLE_S * 0.75  # answered while every attacker still held its socket
        assert health["admission"]["lanes"]["api"]["queued"] == 0, health
        assert health["admission"]["reading_bodies"] >= 45, health
        answers = [_read_all(s, IDLE_S + 10) for s in attackers]
    finally:
        for s in attackers:
            s.close()
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0][:300]
    assert all(not a.endswith(b"<still open>") for a in answers)  # and the connection was closed


def test_slow_header_sender_is_disconnected(small_server: Server) -> None:
    sock = _connect(small_server, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")  # the head never ends
    t0 = time.monotonic()
    try:
        assert _read_all(sock, HEADER_S + 8) == b""
    finally:
        sock.close()
    assert time.monotonic() - t0 < HEADER_S + 5


def test_large_body_without_token_refused_before_reading(small_server: Server) -> None:
    sock = _connect(small_server, (b"POST /api/v1/scenes/upload HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Type: multipart/form-data; boundary=xx\r\n"
                                   b"Content-Length: 50000000\r\n\r\n"))
    try:
        answer = _read_all(sock, IDLE_S - 1)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:300]


def test_stalled_upload_of_a_user_is_cut_off(small_server: Server) -> None:
    token = add_user(small_server.db_url, "adm-res", "researcher", county="810000")
    sock = _connect(small_server, (f"POST /api/v1/scenes/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                   f"{token}\r\nContent-Type: multipart/form-data; boundary=xx\r\n"
                                   "Content-Length: 50000000\r\n\r\n--xx\r\n").encode())
    try:
        answer = _read_all(sock, IDLE_S + 10)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert not answer.endswith(b"<still open>")


def test_too_many_slow_bodies_from_one_client_get_429(small_server: Server) -> None:
    attackers = [_headers_only_post(small_server) for _ in range(60)]
    time.sleep(1.5)  # these 60 are now slow bodies of one address: the next ones are refused
    attackers += [_headers_only_post(small_server) for _ in range(6)]
    try:
        answers = [_read_all(s, 1.0) for s in attackers]
    finally:
        for s in attackers:
            s.close()
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 429")]
    assert len(refused) >= 6, [a[:40] for a in answers]


def test_health_reports_saturation(small_server: Server) -> None:
    token = add_user(small_server.db_url, "adm-flood", "bureau", county="810000")
    stop = threading.Event()

    def flood() -> None:
        with httpx.Client(base_url=f"{small_server.base}/api/v1", timeout=120,
                          headers={"Authorization": f"Bearer {token}"}) as c:
            while not stop.is_set():  # an export takes long enough to hold the slots on a fast machine too
                c.get("/exports/warnings.xlsx", params={"period": "2018Q1"})

    threads = [threading.Thread(target=flood) for _ in range(24)]
    for t in threads:
        t.start()
    seen: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            body = httpx.get(f"{small_server.base}/api/v1/health", timeout=30).json()
            if body["admission"]["saturated"]:
                seen.append(body)
                break
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert seen and seen[0]["status"] == "degraded", "never saturated"
    # once the flood's last requests have drained (seconds on a loaded machine), saturation clears
    deadline = time.monotonic() + 15
    while True:
        after = httpx.get(f"{small_server.base}/api/v1/health", timeout=30).json()
        if after["admission"]["saturated"] is False or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert after["admission"]["saturated"] is False, after

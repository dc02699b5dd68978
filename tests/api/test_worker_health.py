"""The job worker is supervised: killed, it is restarted; /health reports its liveness and the queue."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import httpx
import pytest
from apitest_support import Server


def _health(srv: Server) -> dict[str, Any]:
    r = httpx.get(f"{srv.base}/api/v1/health", timeout=30)
    assert r.status_code == 200
    return r.json()


def _until(srv: Server, pred: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body = _health(srv)
    while time.monotonic() < deadline:
        body = _health(srv)
        if pred(body):
            return body
        time.sleep(0.3)
    raise AssertionError(f"health never matched: {body}")


@pytest.fixture()
def srv(tmp_path: Any) -> Any:
    server = Server(tmp_path / "cspon.db", tmp_path / "data", tmp_path / "serve.log").start()
    yield server
    server.stop()


def test_killed_worker_is_restarted_and_health_says_so(srv: Server) -> None:
    first = _until(srv, lambda b: b["worker"]["alive"])
    assert first["status"] == "ok" and first["worker"]["restarts"] == 0
    assert first["queue"] == {"queued": 0, "running": 0, "oldest_queued_age_s": None}
    old_pid = first["worker"]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    after = _until(srv, lambda b: b["worker"]["restarts"] == 1 and b["worker"]["alive"])
    assert after["worker"]["pid"] != old_pid and after["status"] == "ok"
    assert "restarting" in srv.log_path.read_text(errors="replace")


def test_health_is_degraded_without_a_live_worker(tmp_path: Any) -> None:
    server = Server(tmp_path / "cspon.db", tmp_path / "data", tmp_path / "serve.log", ["--no-worker"]).start()
    try:
        body = _health(server)
        assert body["status"] == "degraded" and body["database"] is True
        assert body["worker"]["alive"] is False and body["worker"]["last_beat_age_s"] is None
        # a stale heartbeat of a process that is gone is not a live worker either
        (server.data_dir / "worker.heartbeat").write_text(f'{{"pid": {2**22 + 7}, "at": {time.time() - 3600}}}')
        body = _health(server)
        assert body["worker"]["alive"] is False and body["worker"]["last_beat_age_s"] >= 3600
        assert body["status"] == "degraded"
    finally:
        server.stop()

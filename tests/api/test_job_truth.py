"""Job truth: kill -9 at several points, cancel before/after the store stage -- the final state says
exactly what stayed committed, and the rows agree with it (each store stage is one transaction)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from apitest_support import HONGKONG, Server, add_user


def _rows(db: Path, job_id: int, period: str) -> dict[str, int]:
    """What the store holds from job ``job_id`` (history names the job) and for ``period``."""
    with sqlite3.connect(db) as con:
        by = f"job {job_id}"
        created = con.execute(
            "SELECT count(*) FROM warning_history WHERE by = ? AND event = 'created'", (by,)).fetchone()[0]
        merged = con.execute(
            "SELECT count(*) FROM warning_history WHERE by = ? AND event = 'seen_again'", (by,)).fetchone()[0]
        warnings = con.execute("SELECT count(*) FROM warnings WHERE period = ?", (period,)).fetchone()[0]
        patches = con.execute("SELECT count(*) FROM patches WHERE period = ?", (period,)).fetchone()[0]
    return {"created": created, "merged": merged, "warnings": warnings, "patches": patches}


def _job_row(db: Path, job_id: int) -> tuple[str, float, str | None]:
    with sqlite3.connect(db, timeout=30) as con:
        state, progress, committed = con.execute(
            "SELECT state, progress, committed FROM api_jobs WHERE id = ?", (job_id,)).fetchone()
    return str(state), float(progress), committed


def _proc(server: Server, module: str) -> psutil.Process:
    assert server.proc is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for child in psutil.Process(server.proc.pid).children(recursive=True):
            try:
                if module in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)
    raise AssertionError(f"no {module} process")


def _final(c: httpx.Client, job_id: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never finished")


def _assert_truthful(job: dict[str, Any], rows: dict[str, int]) -> None:
    committed = job["committed"]
    if committed is None:
        assert "Nothing was written to the warning store" in job["error"], job["error"]
        assert rows == {"created": 0, "merged": 0, "warnings": 0, "patches": 0}, rows
    else:
        assert "Committed before it ended" in (job["error"] or "Committed before it ended"), job
        assert rows["created"] == committed["created"] == rows["warnings"], (rows, committed)
        assert rows["merged"] == committed["merged"] and rows["patches"] == committed["patches"], (rows, committed)
        assert rows["created"] + rows["patches"] > 0


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not (HONGKONG / "before_20160927.tif").exists():
        pytest.skip(f"bundled demo data not found: {HONGKONG}")
    root = tmp_path_factory.mktemp("truth")
    shutil.copytree(HONGKONG, root / "shared" / "hk")
    (root / "serve.yaml").write_text(f"scene_roots: [{root / 'shared'}]\nworker_poll_s: 0.2\n")
    server = Server(root / "cspon.db", root / "data", root / "serve.log", ["--config", str(root / "serve.yaml")])
    yield server.start()
    server.stop()


def _submit(c: httpx.Client, srv: Server, period: str) -> int:
    hk = srv.data_dir.parent / "shared" / "hk"
    scene = c.post("/scenes", json={"name": period, "before_path": str(hk / "before_20160927.tif"),
                                    "after_path": str(hk / "after_20180323.tif"), "county_code": "810000"})
    assert scene.status_code == 201, scene.text
    r = c.post("/jobs", json={"scene_id": scene.json()["id"], "period": period, "county_code": "810000",
                              "permits_path": str(hk / "permits.gpkg"),
                              "control_lines_path": str(hk / "control_lines.gpkg"), "checkpoint": "spectral"})
    assert r.status_code == 202, r.text
    return int(r.json()["id"])


def test_kill9_and_cancel_at_several_points(srv: Server) -> None:
    token = add_user(srv.db_url, "truth-res", "researcher", "810000")
    db = srv.db_path
    with srv.client(token) as c:
        # 1. kill -9 the job process during detection: nothing committed, and the state says so
        job_id = _submit(c, srv, "2017Q1")
        while _job_row(db, job_id)[1] < 0.02:
            time.sleep(0.02)
        os.kill(_proc(srv, "cspon_rs.api.jobrunner").pid, signal.SIGKILL)
        job = _final(c, job_id)
        assert job["state"] == "failed" and job["committed"] is None, job
        _assert_truthful(job, _rows(db, job_id, "2017Q1"))

        # 2. kill -9 the job process right after its store stage committed (while it writes its files)
        job_id = _submit(c, srv, "2017Q2")
        runner = _proc(srv, "cspon_rs.api.jobrunner")
        while (row := _job_row(db, job_id))[2] is None and row[0] == "running":
            time.sleep(0.01)
        assert row[0] == "running", f"the job ended before the kill point: {row}"
        # a cancel after the store stage committed is refused: it could not undo the committed rows
        late = c.post(f"/jobs/{job_id}/cancel")
        assert late.status_code == 409 and "already committed" in late.text, late.text
        os.kill(runner.pid, signal.SIGKILL)
        job = _final(c, job_id)
        assert job["state"] == "failed" and job["committed"] is not None, job
        assert "exited with code -9" in job["error"] and "Committed before it ended" in job["error"], job
        _assert_truthful(job, _rows(db, job_id, "2017Q2"))

        # 3. kill -9 the WORKER while its job detects: the supervisor restarts it and fails the job truthfully
        job_id = _submit(c, srv, "2017Q3")
        while _job_row(db, job_id)[1] < 0.02:
            time.sleep(0.02)
        os.kill(_proc(srv, "cspon_rs.api.worker").pid, signal.SIGKILL)
        job = _final(c, job_id)
        assert job["state"] == "failed" and "interrupted" in job["error"], job
        _assert_truthful(job, _rows(db, job_id, "2017Q3"))

        # 4. cancel during detection: cancelled, nothing written
        job_id = _submit(c, srv, "2017Q4")
        while _job_row(db, job_id)[1] < 0.02:
            time.sleep(0.02)
        assert c.post(f"/jobs/{job_id}/cancel").status_code == 200
        job = _final(c, job_id)
        assert job["state"] == "cancelled", job
        _assert_truthful(job, _rows(db, job_id, "2017Q4"))

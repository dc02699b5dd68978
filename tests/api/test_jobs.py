"""Jobs run outside the request, report progress/log/errors, can be cancelled and survive a server kill."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from apitest_support import HONGKONG, Server, add_user


def _wait(c: httpx.Client, job_id: int, states: set[str], timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


def _hongkong_into(data_dir: Path) -> Path:
    """The demo pair in the server's configured scene root (``<data_dir>/../shared``)."""
    if not (HONGKONG / "before_20160927.tif").exists():
        pytest.skip(f"bundled demo data not found: {HONGKONG}")
    target = data_dir.parent / "shared" / "hk"
    if not target.exists():
        shutil.copytree(HONGKONG, target)
    return target


def _submit(
    c: httpx.Client, hk: Path, before: Path | None = None, vanish: bool = False, **extra: Any
) -> dict[str, Any]:
    scene = c.post(
        "/scenes",
        json={
            "name": "hk",
            "before_path": str(before or hk / "before_20160927.tif"),
            "after_path": str(hk / "after_20180323.tif"),
            "county_code": "810000",
        },
    )
    assert scene.status_code == 201, scene.text
    if vanish and before is not None:
        before.unlink()  # the image disappears between registration and the job
    body = {
        "scene_id": scene.json()["id"],
        "period": "2018Q1",
        "county_code": "810000",
        "permits_path": str(hk / "permits.gpkg"),
        "control_lines_path": str(hk / "control_lines.gpkg"),
        "checkpoint": "spectral",
        **extra,
    }
    r = c.post("/jobs", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["state"] in ("queued", "running")  # the worker may already have claimed it
    return dict(r.json())


def test_failed_job_says_why(server: Server) -> None:
    token = add_user(server.db_url, "res-fail", "researcher", "810000")
    hk = _hongkong_into(server.data_dir)
    broken = hk.parent / "broken_permits.gpkg"
    broken.write_text("this is not a geopackage")
    before = hk.parent / "vanishing_before.tif"
    shutil.copy(hk / "before_20160927.tif", before)
    with server.client(token) as c:
        # the scene's image disappears after registration: the job fails and says why
        job = _submit(c, hk, before=before, vanish=True)
        # a layer GDAL cannot read is refused at submission, naming the field
        r = c.post(
            "/jobs",
            json={
                "scene_id": job["scene_id"],
                "period": "2018Q1",
                "county_code": "810000",
                "permits_path": str(broken),
                "control_lines_path": str(hk / "control_lines.gpkg"),
            },
        )
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "permits_path", r.text
        done = _wait(c, job["id"], {"succeeded", "failed", "cancelled"})
        assert done["state"] == "failed", done
        assert "vanishing_before.tif" in done["error"], done
        assert "failed" in done["log"]
        assert c.get(f"/jobs/{job['id']}/log").text == done["log"]
        # finished jobs cannot be cancelled
        assert c.post(f"/jobs/{job['id']}/cancel").status_code == 409
        # other county cannot see it
    other = add_user(server.db_url, "res-other-county", "researcher", "320115")
    with server.client(other) as c2:
        assert c2.get(f"/jobs/{job['id']}").status_code == 404
        assert all(j["id"] != job["id"] for j in c2.get("/jobs").json())


def test_cancel_running_job(server: Server) -> None:
    token = add_user(server.db_url, "res-cancel", "researcher", "810000")
    hk = _hongkong_into(server.data_dir)
    with server.client(token) as c:
        job = _submit(c, hk)
        _wait(c, job["id"], {"running", "succeeded", "failed"})
        r = c.post(f"/jobs/{job['id']}/cancel")
        if r.status_code == 409:
            pytest.fail(
                f"job finished before it could be cancelled: {c.get('/jobs/' + str(job['id'])).json()}"
            )
        assert r.status_code == 200 and r.json()["cancel_requested"] is True
        done = _wait(c, job["id"], {"succeeded", "failed", "cancelled"}, timeout=60)
        assert done["state"] == "cancelled", done
        assert "cancel" in done["log"]


def test_job_state_survives_kill9(tmp_path: Path) -> None:
    (tmp_path / "serve.yaml").write_text(f"scene_roots: [{tmp_path / 'shared'}]\n")
    srv = Server(
        tmp_path / "cspon.db", tmp_path / "data", tmp_path / "serve.log", ["--config", str(tmp_path / "serve.yaml")]
    ).start()
    try:
        token = add_user(srv.db_url, "res-restart", "researcher", "810000")
        hk = _hongkong_into(srv.data_dir)
        with srv.client(token) as c:
            job = _submit(c, hk)
            running = _wait(c, job["id"], {"running", "succeeded", "failed"})
            assert running["state"] == "running", running
        server_pid = srv.proc.pid if srv.proc else -1
        children = psutil.Process(server_pid).children(recursive=True)
        srv.kill9()
        # the worker and the job process die with the server (no orphan keeps writing)
        _gone, alive = psutil.wait_procs(children, timeout=20)
        assert not alive, [p.pid for p in alive]
        srv.start()
        with srv.client(token) as c:
            after = c.get(f"/jobs/{job['id']}").json()
            assert after["state"] == "failed", after
            assert "interrupted" in (after["error"] or ""), after
            assert after["finished_at"] is not None
            # killed before its store step: no warning of that run exists, not even part of one
            assert (
                c.get("/warnings", params={"period": "2018Q1", "only_warnings": "false"}).json()["total"] == 0
            )
            # the restarted service still takes jobs
            again = _submit(c, hk)
            assert _wait(c, again["id"], {"running", "succeeded", "failed"})["state"] in {
                "running",
                "succeeded",
                "failed",
            }
    finally:
        srv.stop()

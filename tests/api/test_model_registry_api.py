"""The closed loop through the API: registry endpoints (list, promote refused/accepted/conflict, current,
rollback; roles and county scope), a job without a checkpoint runs the county's promoted model and every
warning it stores records that version; field verifications of those warnings export as labels."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pyogrio
import pytest
from apitest_support import HONGKONG, REPO, Server, add_user
from closed_loop_support import SHIPPED, derived_checkpoint, write_holdout

from cspon_rs.geo.files import file_sha256

COUNTY = "440305"  # used by no other API test
PARENT = SHIPPED["s2-rgbn"].with_suffix(".safetensors")


def _register(db_url: str, tmp: Path, name: str, *, f1: float, parent_f1: float, parent: Path = PARENT,
              source: str = "s2-rgbn", bump: float = 1e-3) -> tuple[int, Path]:
    """Register a real derived checkpoint with the real CLI, as a researcher would after a fine-tune."""
    ckpt = derived_checkpoint(tmp / name / "best", source=source, version=name, bump=bump)
    holdout = write_holdout(tmp / name / "holdout.json", candidate=f1, parent=parent_f1, parent_checkpoint=parent,
                            candidate_checkpoint=ckpt)
    proc = subprocess.run(
        [sys.executable, "-m", "cspon_rs.cli", "models", "register", "--db", db_url, "--county", COUNTY,
         "--holdout", str(holdout), "--by", "lab"],
        cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split("registered model ")[1].split()[0]), ckpt


def _wait(c: httpx.Client, job_id: int, timeout: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = c.get(f"/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_registry_endpoints_and_a_job_on_the_promoted_model(
    server: Server, admin_token: str, tmp_path: Path
) -> None:
    if not (HONGKONG / "before_20160927.tif").exists():
        pytest.skip(f"bundled demo data not found: {HONGKONG}")
    res = add_user(server.db_url, "reg-researcher", "researcher", COUNTY)
    other = add_user(server.db_url, "reg-researcher-other", "researcher", "320115")
    bureau = add_user(server.db_url, "reg-bureau", "bureau", COUNTY)
    field = add_user(server.db_url, "reg-field", "field", COUNTY, "reg-team")
    good, good_ckpt = _register(server.db_url, tmp_path, "good", f1=0.62, parent_f1=0.41)
    worse, _ = _register(server.db_url, tmp_path, "worse", f1=0.30, parent_f1=0.41, bump=5e-3)
    rgb, _ = _register(server.db_url, tmp_path, "rgb", f1=0.90, parent_f1=0.41, source="rgb")

    with server.client(res) as c, server.client(other) as o, server.client(bureau) as b:
        listed = c.get("/models", params={"county_code": COUNTY}).json()
        assert listed[0]["path"] == "spectral"
        versions = {m["version"]["id"]: m["version"] for m in listed if m["version"]}
        assert set(versions) == {good, worse, rgb}
        assert versions[good]["status"] == "registered" and versions[good]["candidate_figure"] == 0.62
        assert versions[good]["checkpoint_sha256"] == file_sha256(good_ckpt)
        # county scope: other counties see nothing of it; naming it is 403; roles: bureau may not promote
        assert not [m for m in o.get("/models").json() if m["version"] and m["version"]["county_code"] == COUNTY]
        assert o.get("/models", params={"county_code": COUNTY}).status_code == 403
        assert o.get(f"/models/{good}").status_code == 404
        assert o.post(f"/models/{good}/promote").status_code == 404
        assert o.post(f"/counties/{COUNTY}/models/rollback").status_code == 403
        assert b.post(f"/models/{good}/promote").status_code == 403
        assert c.get(f"/counties/{COUNTY}/models/current").status_code == 404

        # refusals: 409 with the reason (both figures / expected vs given bands) in the body
        r = c.post(f"/models/{worse}/promote")
        assert r.status_code == 409, r.text
        msg = r.json()["detail"][0]["msg"]
        assert "0.3000" in msg and "0.4100" in msg, msg
        r = c.post(f"/models/{rgb}/promote")
        assert r.status_code == 409 and "given ['R', 'G', 'B']" in r.json()["detail"][0]["msg"], r.text

        r = c.post(f"/models/{good}/promote", json={"expected_current_id": None})
        assert r.status_code == 200 and r.json()["status"] == "promoted", r.text
        assert r.json()["promoted_by"] == "reg-researcher"
        assert c.get(f"/counties/{COUNTY}/models/current").json()["id"] == good
        detail = c.get(f"/models/{good}").json()
        assert [e["event"] for e in detail["events"]] == ["registered", "promoted"]
        # someone promoted meanwhile: a decision based on "no current model" is a conflict
        child, _ = _register(server.db_url, tmp_path, "child", f1=0.7, parent_f1=0.62, parent=good_ckpt, bump=2e-3)
        r = c.post(f"/models/{child}/promote", json={"expected_current_id": None})
        assert r.status_code == 409 and "changed meanwhile" in r.json()["detail"][0]["msg"], r.text

        # a job that names no checkpoint runs the county's promoted model and says so
        hk = server.data_dir.parent / "shared" / "hk_registry"  # the configured scene root
        if not hk.exists():
            shutil.copytree(HONGKONG, hk)
        scene = c.post("/scenes", json={"name": "hk", "before_path": str(hk / "before_20160927.tif"),
                                        "after_path": str(hk / "after_20180323.tif"), "county_code": COUNTY,
                                        "before_date": "2016-09-27", "after_date": "2018-03-23"})
        assert scene.status_code == 201, scene.text
        job = c.post("/jobs", json={"scene_id": scene.json()["id"], "period": "2018Q1", "county_code": COUNTY,
                                    "permits_path": str(hk / "permits.gpkg"),
                                    "control_lines_path": str(hk / "control_lines.gpkg")})
        assert job.status_code == 202 and job.json()["params"]["checkpoint"] is None, job.text
        done = _wait(c, job.json()["id"])
        assert done["state"] == "succeeded", done
        assert f"county {COUNTY}'s promoted model version {good}" in done["log"], done["log"]
        model = done["result"]["model"]
        assert model["source"] == "county" and model["model_version_id"] == good
        assert model["model_sha256"] == file_sha256(good_ckpt)
        page = b.get("/warnings", params={"county_code": COUNTY, "limit": 5000}).json()
        assert page["total"] > 0
        assert {(w["model_version_id"], w["detector"], w["model_sha256"]) for w in page["items"]} == {
            (good, "s2-rgbn-effl0-siamunet@good", file_sha256(good_ckpt))}

        # field checks of two of them become labels naming that model version and the scene files
        wids = [w["id"] for w in page["items"][:2]]
        with server.client(field) as f:
            for wid, result in zip(wids, ("illegal", "false_change"), strict=True):
                version = b.post(f"/warnings/{wid}/assign", json={"team": "reg-team"}).json()["version"]
                r = f.post(f"/warnings/{wid}/verifications", data={"result": result, "expected_version": str(version),
                                                                    "reason": f"checked: {result}"})
                assert r.status_code == 201, r.text
        neg = b.get("/negatives.geojson", params={"county_code": COUNTY}).json()["features"]
        assert [n["properties"]["warning_id"] for n in neg] == [wids[1]]
        props = neg[0]["properties"]
        assert props["reason"] == "checked: false_change" and props["model_version_id"] == good
        assert props["scene_before"] == str((hk / "before_20160927.tif").resolve())
        assert props["scene_before_sha256"] == file_sha256(hk / "before_20160927.tif")
        out = tmp_path / "verified.gpkg"
        proc = subprocess.run(
            [sys.executable, "-m", "cspon_rs.cli", "labels", "export", "--db", server.db_url, "--county", COUNTY,
             "--out", str(out)],
            cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0 and "wrote 2 labels" in proc.stdout, proc.stdout + proc.stderr
        labels = pyogrio.read_dataframe(out).set_index("warning_id")
        assert labels.loc[wids[0], "label"] == 1 and labels.loc[wids[1], "label"] == 0
        assert set(labels["model_version_id"]) == {good}

        # roll back: the first promoted version replaced nothing, so the county goes back to the default
        back = c.post(f"/counties/{COUNTY}/models/rollback")
        assert back.status_code == 200, back.text
        assert back.json()["retired"]["id"] == good and back.json()["current"] is None
        assert c.get(f"/counties/{COUNTY}/models/current").status_code == 404
        assert c.post(f"/counties/{COUNTY}/models/rollback").status_code == 404

"""Counties stay apart: scenes and job inputs only from the caller's own uploads or configured roots."""

from __future__ import annotations

from pathlib import Path

from apitest_support import HONGKONG, Server, add_user, write_geotiff


def _upload_pair(c, tmp: Path, name: str, county: str) -> dict:
    before = write_geotiff(tmp / f"{name}_b.tif", seed=11)
    after = write_geotiff(tmp / f"{name}_a.tif", seed=12, shift=True)
    r = c.post(
        "/scenes/upload",
        data={"name": name, "county_code": county},
        files={"before": ("b.tif", before.read_bytes(), "image/tiff"), "after": ("a.tif", after.read_bytes())},
    )
    assert r.status_code == 201, r.text
    return r.json()


def _upload_layer(c, kind: str) -> str:
    gpkg = HONGKONG / f"{kind}.gpkg"
    r = c.post("/layers", data={"kind": kind}, files={"file": (gpkg.name, gpkg.read_bytes())})
    assert r.status_code == 201, r.text
    return str(r.json()["path"])


def test_other_county_uploads_and_job_outputs_are_not_inputs(server: Server, tmp_path: Path) -> None:
    sz = add_user(server.db_url, "iso-res-440300", "researcher", "440300")
    hk = add_user(server.db_url, "iso-res-810000", "researcher", "810000")
    # a job output of county 810000 (what the issue registered as another county's scene)
    output = write_geotiff(server.data_dir / "jobs" / "1" / "detect" / "change_prob.tif", seed=13)
    with server.client(sz) as c_sz, server.client(hk) as c_hk:
        scene_hk = _upload_pair(c_hk, tmp_path, "hk", "810000")
        permits_hk = _upload_layer(c_hk, "permits")
        lines_hk = _upload_layer(c_hk, "control_lines")
        # 440300 names 810000's uploaded images, by absolute and by data-relative path, and a job output
        rel = Path(scene_hk["before_path"]).resolve().relative_to(server.data_dir.resolve())
        for before in (scene_hk["before_path"], str(rel), "jobs/1/detect/change_prob.tif", str(output),
                       f"../../{rel}"):
            r = c_sz.post(
                "/scenes",
                json={"name": "steal", "before_path": before, "after_path": scene_hk["after_path"]},
            )
            assert r.status_code == 422, (before, r.text)
            assert r.json()["detail"][0]["loc"][-1] == "before_path"
        # 810000's own uploads work for 810000
        own = c_hk.post(
            "/scenes",
            json={"name": "own", "before_path": scene_hk["before_path"], "after_path": scene_hk["after_path"]},
        )
        assert own.status_code == 201 and own.json()["county_code"] == "810000", own.text
        # 440300 cannot run a job on 810000's scene (404, like a missing one) nor with its layers (422)
        scene_sz = _upload_pair(c_sz, tmp_path, "sz", "440300")
        base = {"period": "2018Q1", "checkpoint": "spectral"}
        r = c_sz.post("/jobs", json={**base, "scene_id": scene_hk["id"], "county_code": "440300",
                                     "permits_path": permits_hk, "control_lines_path": lines_hk})
        assert r.status_code == 404, r.text
        missing = c_sz.post("/jobs", json={**base, "scene_id": 999_999, "county_code": "440300",
                                           "permits_path": permits_hk, "control_lines_path": lines_hk})
        assert missing.status_code == 404 and missing.json() == r.json()
        r = c_sz.post("/jobs", json={**base, "scene_id": scene_sz["id"], "county_code": "440300",
                                     "permits_path": permits_hk, "control_lines_path": lines_hk})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "permits_path", r.text
        r = c_hk.post("/jobs", json={**base, "scene_id": scene_hk["id"], "county_code": "810000",
                                     "permits_path": permits_hk, "control_lines_path": lines_hk,
                                     "checkpoint": str(output)})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "checkpoint", r.text


def test_scene_and_job_counties_must_agree(server: Server, tmp_path: Path) -> None:
    admin = add_user(server.db_url, "iso-admin", "admin")
    with server.client(admin) as c:
        before = write_geotiff(tmp_path / "b.tif", seed=21)
        after = write_geotiff(tmp_path / "a.tif", seed=22)
        files = {"before": ("b.tif", before.read_bytes()), "after": ("a.tif", after.read_bytes())}
        nocounty = c.post("/scenes/upload", data={"name": "x"}, files=files)
        assert nocounty.status_code == 422 and "county_code" in nocounty.text
        scene = _upload_pair(c, tmp_path, "adm", "440300")
        r = c.post("/jobs", json={"scene_id": scene["id"], "county_code": "810000", "period": "2018Q1",
                                  "checkpoint": "spectral", "permits_path": _upload_layer(c, "permits"),
                                  "control_lines_path": _upload_layer(c, "control_lines")})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "county_code", r.text
        me = c.get("/users/me").json()["id"]
    # the refused upload (no county) was removed; the accepted pair is all that is on disk
    kept = sorted(p.name for p in (server.data_dir / "uploads" / f"u{me}" / "scenes").rglob("*.tif"))
    assert kept == ["after.tif", "before.tif"]

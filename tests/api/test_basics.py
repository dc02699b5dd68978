"""Health, authentication, roles, users, scenes, uploads and path safety against a real server."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from apitest_support import Server, add_user, write_geotiff


def test_health_needs_no_token(server: Server) -> None:
    r = httpx.get(f"{server.base}/api/v1/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["database"] is True


def test_every_other_endpoint_requires_a_token(server: Server) -> None:
    spec = httpx.get(f"{server.base}/api/v1/openapi.json").json()
    checked = 0
    with server.client() as anon, server.client("not-a-real-token") as bad:
        for path, methods in spec["paths"].items():
            if path.endswith(("/health", "/session")):  # sign-in itself: tests/api/test_session.py
                continue
            url = path.removeprefix("/api/v1").replace("{", "").replace("}", "")
            url = "/".join("1" if seg.endswith("_id") else seg for seg in url.split("/"))
            for method in methods:
                for client in (anon, bad):
                    r = client.request(method.upper(), url)
                    assert r.status_code == 401, (method, path, r.status_code, r.text)
                    assert "Authorization" in r.text
                    checked += 1
    assert checked >= 20


def test_users_admin_only_and_me(server: Server, admin_token: str) -> None:
    researcher = add_user(server.db_url, "res-users", "researcher", "810000")
    with server.client(admin_token) as admin, server.client(researcher) as res:
        created = admin.post("/users", json={"name": "bureau-x", "role": "bureau", "county_code": "810000"})
        assert created.status_code == 201, created.text
        token = created.json()["token"]
        assert len(token) >= 32
        listed = admin.get("/users").json()
        assert all("token" not in u and "token_hash" not in u for u in listed)
        assert res.post("/users", json={"name": "evil", "role": "admin"}).status_code == 403
        assert res.get("/users").status_code == 403
        bad = admin.post("/users", json={"name": "x", "role": "king"})
        assert bad.status_code == 422 and "role" in bad.text
        dup = {"name": "bureau-x", "role": "bureau", "county_code": "810000"}
        assert admin.post("/users", json=dup).status_code == 409
        teamless = admin.post("/users", json={"name": "f", "role": "field", "county_code": "810000"})
        assert teamless.status_code == 422 and "team" in teamless.text
        # every role but admin needs a county: "all counties" is the admin role, never a missing field
        countyless = admin.post("/users", json={"name": "nowhere", "role": "bureau"})
        assert countyless.status_code == 422 and "county_code" in countyless.text
        assert admin.post("/users", json={"name": "admin-2", "role": "admin"}).status_code == 201
    with server.client(token) as bureau:
        me = bureau.get("/users/me").json()
        assert me["role"] == "bureau" and me["county_code"] == "810000"
    # a non-admin user stored without a county (made before counties were required) sees nothing at all
    import sqlite3

    legacy = add_user(server.db_url, "legacy-bureau", "bureau", "810000")
    with sqlite3.connect(server.db_path) as con:
        con.execute("UPDATE api_users SET county_code = NULL WHERE name = 'legacy-bureau'")
    with server.client(legacy) as c:
        for path in ("/users/me", "/warnings", "/statistics"):
            r = c.get(path)
            assert r.status_code == 403 and "no county" in r.text, (path, r.text)


def test_tokens_are_stored_hashed(server: Server) -> None:
    import sqlite3

    token = add_user(server.db_url, "hash-check", "field", "810000", "t1")
    with sqlite3.connect(server.db_path) as con:
        rows = con.execute("SELECT token_hash FROM api_users WHERE name = 'hash-check'").fetchall()
        dump = "\n".join(con.iterdump())
    assert rows and rows[0][0] != token and len(rows[0][0]) == 64
    assert token not in dump


def test_register_scene_by_path_inside_and_outside(server: Server, tmp_path: Path) -> None:
    token = add_user(server.db_url, "res-scenes", "researcher", "810000")
    shared = server.data_dir.parent / "shared"  # the configured scene_roots folder
    before = write_geotiff(shared / "incoming" / "b.tif", seed=1)
    after = write_geotiff(shared / "incoming" / "a.tif", seed=2, shift=True)
    outside = write_geotiff(tmp_path / "outside.tif", seed=3)
    with server.client(token) as c:
        ok = c.post(
            "/scenes",
            json={
                "name": "s1",
                "before_path": str(before),
                "after_path": str(after),
                "before_date": "2016-09-27",
                "after_date": "2018-03-23",
            },
        )
        assert ok.status_code == 201, ok.text
        body = ok.json()
        assert body["county_code"] == "810000" and body["info"]["before"]["count"] == 4
        assert c.get(f"/scenes/{body['id']}").json()["name"] == "s1"
        for bad_path in (
            str(outside),
            "../../../etc/passwd",
            "incoming/../../" + outside.name,
            str(server.data_dir / "incoming" / ".." / ".." / "cspon.db"),
        ):
            r = c.post("/scenes", json={"name": "s2", "before_path": bad_path, "after_path": str(after)})
            assert r.status_code == 422, (bad_path, r.text)
            assert r.json()["detail"][0]["loc"][-1] == "before_path"
        missing = c.post(
            "/scenes", json={"name": "s3", "before_path": "incoming/nope.tif", "after_path": "x"}
        )
        assert missing.status_code == 422
        (shared / "incoming" / "fake.tif").write_text("not a tiff")
        fake = str(shared / "incoming" / "fake.tif")
        corrupt = c.post("/scenes", json={"name": "s4", "before_path": fake, "after_path": str(after)})
        assert corrupt.status_code == 422 and "before_path" in corrupt.text
        other = c.post(
            "/scenes",
            json={
                "name": "s5",
                "before_path": str(before),
                "after_path": str(after),
                "county_code": "320115",
            },
        )
        assert other.status_code == 403


def test_scene_upload_type_size_and_traversal(server: Server, tmp_path: Path) -> None:
    token = add_user(server.db_url, "res-upload", "researcher", "810000")
    before = write_geotiff(tmp_path / "b.tif", seed=4)
    after = write_geotiff(tmp_path / "a.tif", seed=5)
    evil_target = server.data_dir.parent / "evil.tif"
    with server.client(token) as c:
        r = c.post(
            "/scenes/upload",
            data={"name": "up"},
            files={
                "before": ("../../evil.tif", before.read_bytes(), "image/tiff"),
                "after": ("/etc/cron.d/evil.tif", after.read_bytes(), "image/tiff"),
            },
        )
        assert r.status_code == 201, r.text
        stored = Path(r.json()["before_path"]).resolve()
        assert stored.is_relative_to(server.data_dir.resolve())
        assert not evil_target.exists()
        assert Path(r.json()["after_path"]).resolve().is_relative_to(server.data_dir.resolve())
        png = c.post(
            "/scenes/upload",
            data={"name": "png"},
            files={
                "before": ("b.tif", b"\x89PNG\r\n\x1a\n" + b"0" * 100, "image/tiff"),
                "after": ("a.tif", after.read_bytes(), "image/tiff"),
            },
        )
        assert png.status_code == 415 and "before" in png.text
        big = c.post(
            "/scenes/upload",
            data={"name": "big"},
            files={
                "before": ("b.tif", b"II*\x00" + os.urandom(3_100_000), "image/tiff"),
                "after": ("a.tif", after.read_bytes(), "image/tiff"),
            },
        )
        assert big.status_code == 413
        far = write_geotiff(tmp_path / "far.tif", seed=6)
        import rasterio

        with rasterio.open(far, "r+") as ds:  # same grid, 1 degree east: no overlap with "before"
            ds.transform = ds.transform * ds.transform.translation(1 / ds.transform.a, 0)
        apart = c.post(
            "/scenes/upload",
            data={"name": "apart"},
            files={"before": ("b.tif", before.read_bytes(), "image/tiff"), "after": ("a.tif", far.read_bytes())},
        )
        assert apart.status_code == 422 and "overlap" in apart.text, apart.text
    leftovers = [p for p in server.data_dir.rglob("*.part")]
    assert leftovers == []
    # refused uploads leave nothing behind: only the accepted pair is on disk
    kept = sorted(p.name for p in stored.parents[2].rglob("*.tif"))
    assert kept == ["after.tif", "before.tif"], kept


def test_field_users_cannot_use_scenes_or_jobs(server: Server) -> None:
    token = add_user(server.db_url, "field-nojobs", "field", "810000", "team-a")
    with server.client(token) as c:
        assert c.get("/scenes").status_code == 403
        assert c.get("/jobs").status_code == 403
        assert c.post("/jobs", json={}).status_code in (403, 422)


@pytest.mark.parametrize(
    "body,field",
    [
        (
            {
                "scene_id": 1,
                "period": "2018 Q5",
                "county_code": "810000",
                "permits_path": "p",
                "control_lines_path": "c",
            },
            "period",
        ),
        (
            {
                "scene_id": 1,
                "period": "2018Q1",
                "county_code": "81",
                "permits_path": "p",
                "control_lines_path": "c",
            },
            "county_code",
        ),
        (
            {"scene_id": 1, "period": "2018Q1", "county_code": "810000", "control_lines_path": "c"},
            "permits_path",
        ),
        (
            {
                "scene_id": 1,
                "period": "2018Q1",
                "county_code": "810000",
                "permits_path": "p",
                "control_lines_path": "c",
                "bogus": 1,
            },
            "bogus",
        ),
    ],
)
def test_job_validation_names_the_field(
    server: Server, admin_token: str, body: dict[str, object], field: str
) -> None:
    with server.client(admin_token) as c:
        r = c.post("/jobs", json=body)
    assert r.status_code == 422
    assert any(field in d["loc"] for d in r.json()["detail"]), r.text


def test_malformed_bodies_are_4xx(server: Server, admin_token: str) -> None:
    with server.client(admin_token) as c:
        for path in ("/jobs", "/scenes", "/users"):
            for content in (b"{", b"[]", b"null", b"\xff\xfe", b'{"name": 5}'):
                r = c.post(path, content=content, headers={"Content-Type": "application/json"})
                assert 400 <= r.status_code < 500, (path, content, r.status_code)
        assert c.get("/jobs/abc").status_code == 422
        assert c.get("/jobs/99999").status_code == 404
        assert c.get("/jobs", params={"limit": -1}).status_code == 422
        # a 100 KB value is rejected without being echoed back whole
        huge = c.post("/users", json={"name": "x" * 100_000, "role": "bureau", "county_code": "440300"})
        assert huge.status_code == 422 and len(huge.content) < 2_000, len(huge.content)
        assert "100000 characters" in huge.text and "name" in huge.text


def test_layer_upload_and_models(server: Server, tmp_path: Path) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    token = add_user(server.db_url, "res-layers", "researcher", "810000")
    gpkg = tmp_path / "permits.gpkg"
    gpd.GeoDataFrame({"permit_no": ["P1"]}, geometry=[box(114.1, 22.3, 114.2, 22.4)], crs=4490).to_file(
        gpkg, layer="permits"
    )
    with server.client(token) as c:
        r = c.post(
            "/layers",
            data={"kind": "permits"},
            files={"file": ("../../escape.gpkg", gpkg.read_bytes(), "application/octet-stream")},
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["layers"] == ["permits"] and body["features"] == 1 and "4490" in (body["crs"] or "")
        assert Path(body["path"]).resolve().is_relative_to(server.data_dir.resolve())
        bad = c.post("/layers", data={"kind": "permits"}, files={"file": ("x.gpkg", b"not sqlite", "x/y")})
        assert bad.status_code == 415
        broken = c.post(
            "/layers",
            data={"kind": "permits"},
            files={"file": ("x.gpkg", b"SQLite format 3\x00" + b"\x00" * 200, "x/y")},
        )
        assert broken.status_code == 422 and "file" in broken.text
        assert (
            c.post("/layers", data={"kind": "roads"}, files={"file": ("x.gpkg", b"", "x/y")}).status_code
            == 422
        )
        models = c.get("/models").json()
        assert models[0]["path"] == "spectral"
    field = add_user(server.db_url, "field-layers", "field", "810000", "t")
    with server.client(field) as f:
        assert (
            f.post("/layers", data={"kind": "permits"}, files={"file": ("x.gpkg", b"", "x/y")}).status_code
            == 403
        )

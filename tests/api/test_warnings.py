"""Warnings: list/filters/pagination, GeoJSON, detail, assignment, lifecycle, verification with photos,
concurrent verifications, statistics, negatives."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from apitest_support import Server, add_user, jpeg_bytes, seed_warnings

COUNTY = "440300"


@pytest.fixture(scope="module")
def seeded(server: Server) -> dict[str, Any]:
    ids = seed_warnings(server.db_url, COUNTY, "2018Q1", 12, seed=1)
    return {
        "ids": ids,
        "bureau": add_user(server.db_url, "bureau-w", "bureau", COUNTY),
        "field": add_user(server.db_url, "field-w", "field", COUNTY, "team-w"),
        "field2": add_user(server.db_url, "field-w2", "field", COUNTY, "team-other"),
        "researcher": add_user(server.db_url, "res-w", "researcher", COUNTY),
    }


def test_list_filters_pagination_geojson(server: Server, seeded: dict[str, Any]) -> None:
    with server.client(seeded["bureau"]) as c:
        page = c.get("/warnings", params={"limit": 5}).json()
        assert page["total"] == 12 and len(page["items"]) == 5
        prios = [w["priority"] for w in page["items"]]
        assert prios == sorted(prios, reverse=True)
        rest = c.get("/warnings", params={"limit": 5, "offset": 10}).json()
        assert len(rest["items"]) == 2 and rest["total"] == 12
        cat = c.get("/warnings", params={"category": "少批多建"}).json()
        assert cat["total"] == 3 and {w["category"] for w in cat["items"]} == {"少批多建"}
        assert c.get("/warnings", params={"category": "exceeding_approval"}).json()["total"] == 3  # code = name
        bogus = c.get("/warnings", params={"category": "bogus"})
        assert bogus.status_code == 422 and "built_before_approval" in bogus.text, bogus.text
        town = c.get("/warnings", params={"township_code": f"{COUNTY}001"}).json()
        assert town["total"] == 6
        minp = c.get("/warnings", params={"min_priority": 50}).json()
        assert all(w["priority"] >= 50 for w in minp["items"])
        # bbox around the first three warnings only
        bbox = c.get("/warnings", params={"bbox": "114.099,22.29,114.1065,22.31"}).json()
        assert 1 <= bbox["total"] <= 3
        assert c.get("/warnings", params={"bbox": "1,2,3"}).status_code == 422
        assert "bbox" in c.get("/warnings", params={"bbox": "5,5,1,1"}).text
        assert c.get("/warnings", params={"status": "nonsense"}).status_code == 422
        gj = c.get("/warnings.geojson", params={"limit": 4})
        assert gj.headers["content-type"].startswith("application/geo+json")
        fc = gj.json()
        assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 4 and fc["numberMatched"] == 12
        assert fc["features"][0]["geometry"]["type"] == "Polygon"
        assert c.get("/warnings", params={"period": "2099Q1"}).json()["total"] == 0


def test_detail_assign_lifecycle(server: Server, seeded: dict[str, Any]) -> None:
    wid = seeded["ids"][0]
    with server.client(seeded["bureau"]) as c:
        d = c.get(f"/warnings/{wid}").json()
        assert d["id"] == wid and d["reasons"] and d["history"][0]["event"] == "created"
        assert d["geometry"]["type"] == "Polygon" and set(d["chip_urls"]) == {"before_after"}
        # seeded warnings have no stored scenes: the chip is a clean 404, not a 500
        assert c.get(d["chip_urls"]["before_after"].removeprefix("/api/v1")).status_code == 404
        assert c.get("/warnings/nope").status_code == 404
        bad = c.post(f"/warnings/{wid}/status", json={"to_status": "closed"})
        assert bad.status_code == 422 and "closed" in bad.text
        stale = c.post(
            f"/warnings/{wid}/assign", json={"team": "team-w", "expected_version": d["version"] + 5}
        )
        assert stale.status_code == 409
        ok = c.post(f"/warnings/{wid}/assign", json={"team": "team-w", "expected_version": d["version"]})
        assert ok.status_code == 200 and ok.json()["status"] == "assigned"
        assert c.post(f"/warnings/{wid}/assign", json={"team": ""}).status_code == 422
        for year in ("0118", "6735"):  # typos in a due date are refused, not stored
            bad = c.post(f"/warnings/{wid}/assign", json={"team": "team-w", "due_date": f"{year}-05-01"})
            assert bad.status_code == 422 and "due date" in bad.text, bad.text
    with server.client(seeded["researcher"]) as r:
        assert r.get(f"/warnings/{wid}").status_code == 200
        assert r.post(f"/warnings/{wid}/assign", json={"team": "x"}).status_code == 403
    with server.client(seeded["field"]) as f:
        assert f.post(f"/warnings/{wid}/assign", json={"team": "x"}).status_code == 403
        mine = f.get("/warnings").json()
        assert wid in {w["id"] for w in mine["items"]} and all(
            w["assigned_team"] == "team-w" for w in mine["items"]
        )
    with server.client(seeded["field2"]) as f2:
        assert f2.get(f"/warnings/{wid}").status_code == 404
        assert f2.get("/warnings").json()["total"] == 0


def _assign(server: Server, token: str, wid: str, team: str) -> int:
    with server.client(token) as c:
        r = c.post(f"/warnings/{wid}/assign", json={"team": team})
        assert r.status_code == 200, r.text
        return int(r.json()["version"])


def test_verification_with_photo_and_checks(server: Server, seeded: dict[str, Any]) -> None:
    wid = seeded["ids"][1]
    version = _assign(server, seeded["bureau"], wid, "team-w")
    photo = jpeg_bytes()
    with server.client(seeded["field"]) as f:
        form = {
            "result": "false_change",
            "expected_version": str(version),
            "actual_use": "耕地",
            "notes": "cloud shadow",
            "lon": "114.1031",
            "lat": "22.3021",
            "observed_at": "2018-04-02T10:00:00Z",
        }
        # wrong type (PDF disguised as .jpg), too big, lon without lat, bad result: nothing is written
        pdf = f.post(
            f"/warnings/{wid}/verifications",
            data=form,
            files=[("photos", ("x.jpg", b"%PDF-1.4 fake", "image/jpeg"))],
        )
        assert pdf.status_code == 415 and "photos" in pdf.text
        big = f.post(
            f"/warnings/{wid}/verifications",
            data=form,
            files=[("photos", ("big.jpg", b"\xff\xd8\xff" + b"0" * 250_000, "image/jpeg"))],
        )
        assert big.status_code == 413
        half = f.post(f"/warnings/{wid}/verifications", data={**form, "lat": ""})
        assert half.status_code == 422
        badres = f.post(f"/warnings/{wid}/verifications", data={**form, "result": "maybe"})
        assert badres.status_code == 422 and "result" in badres.text
        badlon = f.post(f"/warnings/{wid}/verifications", data={**form, "lon": "500"})
        assert badlon.status_code == 422 and "lon" in badlon.text
        assert f.get(f"/warnings/{wid}").json()["status"] == "assigned"
        ok = f.post(
            f"/warnings/{wid}/verifications",
            data=form,
            files=[("photos", ("../../../../etc/evil.jpg", photo, "image/jpeg"))],
        )
        assert ok.status_code == 201, ok.text
        body = ok.json()
        assert body["warning"]["status"] == "verified" and body["verification"]["result"] == "false_change"
        assert len(body["photos"]) == 1 and body["photos"][0]["size"] == len(photo)
        got = f.get(body["photos"][0]["url"].removeprefix("/api/v1"))
        assert got.status_code == 200 and got.content == photo
        again = f.post(f"/warnings/{wid}/verifications", data=form)
        assert again.status_code in (409, 422)
    stored = list((server.data_dir / "photos").rglob("*"))
    assert all(p.resolve().is_relative_to(server.data_dir.resolve()) for p in stored)
    assert not (server.data_dir.parent / "etc").exists() and not Path("/etc/evil.jpg").exists()
    with server.client(seeded["bureau"]) as c:
        d = c.get(f"/warnings/{wid}").json()
        assert d["status"] == "verified" and d["verifications"][0]["actual_use"] == "耕地"
        assert [h["event"] for h in d["history"]][-1] == "verified" and len(d["photos"]) == 1
        neg = c.get("/negatives.geojson").json()
        assert wid in {f_["properties"]["warning_id"] for f_ in neg["features"]}
        closed = c.post(f"/warnings/{wid}/status", json={"to_status": "closed", "why": "done"})
        assert closed.status_code == 200 and closed.json()["status"] == "closed"


def test_concurrent_verifications_one_wins(server: Server, seeded: dict[str, Any]) -> None:
    wid = seeded["ids"][2]
    version = _assign(server, seeded["bureau"], wid, "team-w")
    barrier = threading.Barrier(2)
    codes: list[int] = []

    def post(result: str) -> None:
        with server.client(seeded["field"]) as f:
            barrier.wait()
            r = f.post(
                f"/warnings/{wid}/verifications",
                data={"result": result, "expected_version": str(version)},
                files=[("photos", ("p.jpg", jpeg_bytes(seed=len(result)), "image/jpeg"))],
            )
            codes.append(r.status_code)

    threads = [threading.Thread(target=post, args=(res,)) for res in ("illegal", "legal")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(codes) == [201, 409], codes
    with server.client(seeded["bureau"]) as c:
        d = c.get(f"/warnings/{wid}").json()
    assert len(d["verifications"]) == 1 and len(d["photos"]) == 1
    assert d["verification_result"] == d["verifications"][0]["result"]
    assert d["photos"][0]["verification_id"] == d["verifications"][0]["id"]


def test_statistics(server: Server, seeded: dict[str, Any]) -> None:
    with server.client(seeded["bureau"]) as c:
        rows = c.get("/statistics", params={"by": ["category"]}).json()
        assert sum(r["count"] for r in rows) == 12
        assert all(r["area_mu"] == pytest.approx(r["area_m2"] / 666.667, rel=1e-3) for r in rows)
        town = c.get("/statistics", params=[("by", "period"), ("by", "township_code")]).json()
        assert {r["township_code"] for r in town} == {f"{COUNTY}000", f"{COUNTY}001"}
        assert c.get("/statistics", params={"by": "colour"}).status_code == 422
    with server.client(seeded["field"]) as f:
        assert f.get("/statistics").status_code == 403


def _unused(_: httpx.Response) -> None:  # keep httpx import for type hints in helpers
    pass


def test_patrol_and_exports(server: Server, seeded: dict[str, Any]) -> None:
    targets = seeded["ids"][3:7]
    for wid in targets:
        _assign(server, seeded["bureau"], wid, "team-p")
    field_p = add_user(server.db_url, "field-p", "field", COUNTY, "team-p")
    with server.client(field_p) as f:
        js = f.get("/patrols/team-p", params={"start_lon": 114.10, "start_lat": 22.30})
        assert js.status_code == 200, js.text
        body = js.json()
        assert sorted(s["id"] for s in body["stops"]) == sorted(targets) and body["length_m"] > 0
        gpx = f.get("/patrols/team-p", params={"start_lon": 114.10, "start_lat": 22.30, "format": "gpx"})
        assert gpx.status_code == 200 and b"<gpx" in gpx.content and gpx.content.count(b"<wpt") == 4
        kml = f.get("/patrols/team-p", params={"start_lon": 114.10, "start_lat": 22.30, "format": "kml"})
        assert kml.status_code == 200 and b"<kml" in kml.content
        kmz = f.get("/patrols/team-p", params={"start_lon": 114.10, "start_lat": 22.30, "format": "kmz"})
        assert kmz.status_code == 200 and kmz.headers["content-type"].startswith("application/vnd.google-earth.kmz")
        with zipfile.ZipFile(io.BytesIO(kmz.content)) as z:
            assert z.read("doc.kml").count(b"<Placemark") >= 4
        gj = f.get("/patrols/team-p", params={"start_lon": 114.10, "start_lat": 22.30, "format": "geojson"})
        assert gj.status_code == 200 and gj.json()["type"] == "FeatureCollection"
        assert f.get("/patrols/team-w", params={"start_lon": 114.1, "start_lat": 22.3}).status_code == 403
        assert f.get("/patrols/team-p", params={"start_lon": 200, "start_lat": 22.3}).status_code == 422
        assert f.get("/exports/warnings.xlsx", params={"period": "2018Q1"}).status_code == 403
    with server.client(seeded["bureau"]) as c:
        assert c.get("/patrols/nobody", params={"start_lon": 114.1, "start_lat": 22.3}).status_code == 404
        xlsx = c.get("/exports/warnings.xlsx", params={"period": "2018Q1"})
        assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
        import openpyxl

        sheet = openpyxl.load_workbook(io.BytesIO(xlsx.content)).worksheets[0]
        ids = {str(cell.value) for row in sheet.iter_rows() for cell in row if cell.value}
        assert set(seeded["ids"]) <= ids
        csv = c.get("/exports/warnings.csv", params={"period": "2018Q1"})
        assert csv.status_code == 200 and seeded["ids"][0] in csv.text
        gpkg = c.get("/exports/warnings.gpkg", params={"period": "2018Q1"})
        assert gpkg.status_code == 200 and gpkg.content[:16] == b"SQLite format 3\x00"
        assert c.get("/exports/warnings.pdf", params={"period": "2018Q1"}).status_code == 422
        assert c.get("/exports/warnings.csv", params={"period": "2099Q1"}).status_code == 404
    for _ in range(50):  # scratch files are removed by a background task after each response
        if not list((server.data_dir / "tmp").glob("*/*")):
            break
        time.sleep(0.1)
    assert not list((server.data_dir / "tmp").glob("*/*"))


def test_sql_count_matches_store_listing(server: Server, seeded: dict[str, Any]) -> None:
    from cspon_rs.api.db import make_engine, make_sessionmaker, session_scope
    from cspon_rs.store.crud import count_warnings, list_warnings

    combos: list[dict[str, Any]] = [
        {},
        {"county_code": COUNTY},
        {"county_code": COUNTY, "category": ["少批多建", "未批先建"]},
        {"county_code": COUNTY, "status": "assigned", "only_warnings": True},
        {"period": "2018Q1", "township_code": f"{COUNTY}001", "min_priority": 30.0},
        {"county_code": COUNTY, "bbox": (114.099, 22.29, 114.1065, 22.31)},
    ]
    engine = make_engine(server.db_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            for combo in combos:
                assert count_warnings(session, **combo) == len(
                    list_warnings(session, limit=None, **combo)
                ), combo
    finally:
        engine.dispose()

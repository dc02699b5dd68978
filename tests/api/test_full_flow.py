"""The whole service flow on the bundled Hong Kong pair, through HTTP only:
register the scene pair → run a detection + warning job → list warnings → field team fetches its patrol as
GPX → posts a verification with a photo → bureau sees status and statistics change → exports XLSX."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import pytest
from apitest_support import HONGKONG, Server, add_user, jpeg_bytes

COUNTY = "810000"


def test_full_flow_hongkong(tmp_path: Path) -> None:
    if not (HONGKONG / "before_20160927.tif").exists():
        pytest.skip(f"bundled demo data not found: {HONGKONG}")
    (tmp_path / "serve.yaml").write_text(f"scene_roots: [{tmp_path / 'shared'}]\n")
    srv = Server(
        tmp_path / "cspon.db", tmp_path / "data", tmp_path / "serve.log", ["--config", str(tmp_path / "serve.yaml")]
    ).start()
    try:
        hk = tmp_path / "shared" / "hk"
        shutil.copytree(HONGKONG, hk)
        admin = add_user(srv.db_url, "admin", "admin")
        with srv.client(admin) as c:
            tokens = {
                role: c.post(
                    "/users",
                    json={
                        "name": f"{role}-hk",
                        "role": role,
                        "county_code": COUNTY,
                        **({"team": "team-hk"} if role == "field" else {}),
                    },
                ).json()["token"]
                for role in ("researcher", "bureau", "field")
            }
        with srv.client(tokens["researcher"]) as res:
            scene = res.post(
                "/scenes",
                json={
                    "name": "Hong Kong 2016→2018",
                    "before_path": "hk/before_20160927.tif",
                    "after_path": "hk/after_20180323.tif",
                    "before_date": "2016-09-27",
                    "after_date": "2018-03-23",
                },
            ).json()
            job = res.post(
                "/jobs",
                json={
                    "scene_id": scene["id"],
                    "period": "2018Q1",
                    "county_code": COUNTY,
                    "permits_path": "hk/permits.gpkg",
                    "control_lines_path": "hk/control_lines.gpkg",
                    "townships_path": "hk/townships.gpkg",
                    "checkpoint": "default",
                },
            ).json()
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                state = res.get(f"/jobs/{job['id']}").json()
                if state["state"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(1)
            assert state["state"] == "succeeded", state
            assert state["progress"] == 1.0 and state["result"]["warnings"]["n_warnings"] > 0

        with srv.client(tokens["bureau"]) as bureau:
            page = bureau.get("/warnings", params={"period": "2018Q1", "limit": 3}).json()
            assert page["total"] > 0
            top = page["items"]
            detail = bureau.get(f"/warnings/{top[0]['id']}").json()
            assert detail["reasons"] and detail["history"]
            chip = bureau.get(detail["chip_urls"]["before_after"].removeprefix("/api/v1"))
            assert chip.status_code == 200 and chip.content[:8] == b"\x89PNG\r\n\x1a\n"
            stats_before = {
                r["status"]: r["count"] for r in bureau.get("/statistics", params={"by": "status"}).json()
            }
            for w in top:
                assert bureau.post(f"/warnings/{w['id']}/assign", json={"team": "team-hk"}).status_code == 200

        with srv.client(tokens["field"]) as field:
            gpx = field.get(
                "/patrols/team-hk", params={"start_lon": 114.17, "start_lat": 22.30, "format": "gpx"}
            )
            assert gpx.status_code == 200 and gpx.content.count(b"<wpt") == len(top)
            route = field.get("/patrols/team-hk", params={"start_lon": 114.17, "start_lat": 22.30}).json()
            first = route["stops"][0]
            v = field.post(
                f"/warnings/{first['id']}/verifications",
                data={
                    "result": "illegal",
                    "expected_version": str(first["version"]),
                    "actual_use": "厂房 factory",
                    "lon": str(first["centroid_lon"]),
                    "lat": str(first["centroid_lat"]),
                    "notes": "confirmed on site",
                },
                files=[("photos", ("site.jpg", jpeg_bytes(64), "image/jpeg"))],
            )
            assert v.status_code == 201, v.text

        with srv.client(tokens["bureau"]) as bureau:
            d = bureau.get(f"/warnings/{first['id']}").json()
            assert (
                d["status"] == "verified" and d["verification_result"] == "illegal" and len(d["photos"]) == 1
            )
            stats_after = {
                r["status"]: r["count"] for r in bureau.get("/statistics", params={"by": "status"}).json()
            }
            assert stats_after.get("verified", 0) == stats_before.get("verified", 0) + 1
            assert stats_after.get("assigned", 0) == len(top) - 1
            xlsx = bureau.get("/exports/warnings.xlsx", params={"period": "2018Q1"})
            assert xlsx.status_code == 200
            import openpyxl

            sheet = openpyxl.load_workbook(io.BytesIO(xlsx.content)).worksheets[0]
            assert sheet.max_row >= page["total"]
    finally:
        srv.stop()

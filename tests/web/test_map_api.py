"""The map endpoints over HTTP against the seeded server (no browser)."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from webtest_support import COUNTY, HONGKONG, PERIOD, TEAM, Seeded


def test_map_endpoints_need_a_token_and_respect_the_county(seeded: Seeded) -> None:
    base = f"/map/{COUNTY}/{PERIOD}"
    with seeded.server.client() as anon:
        assert anon.get(f"{base}/context").status_code == 401
        assert anon.get(f"{base}/imagery/after.png").status_code == 401
    with seeded.server.client(seeded.bureau_token) as c:
        ctx = c.get(f"{base}/context").json()
        (south, west), (north, east) = ctx["imagery"]["bounds"]
        png = c.get(f"{base}/imagery/before.png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        img = Image.open(io.BytesIO(png.content))
        assert img.mode == "RGBA" and max(img.size) <= 2048
        after = Image.open(io.BytesIO(c.get(f"{base}/imagery/after.png").content))
        assert after.size == img.size  # both dates on one grid
        import rasterio

        with rasterio.open(HONGKONG / "before_20160927.tif") as src:
            b = src.bounds
        assert west == pytest.approx(b.left, abs=1e-6) and north == pytest.approx(b.top, abs=1e-6)
        assert east == pytest.approx(b.right, abs=2e-4) and south == pytest.approx(b.bottom, abs=2e-4)
        lines = c.get(ctx["layers"]["control_lines"].removeprefix("/api/v1")).json()
        assert {f["properties"]["kind"] for f in lines["features"]} == {"YJJBNT", "STBHHX", "CZKFBJ"}
        assert c.get(f"/map/320115/{PERIOD}/context").status_code == 403
        assert c.get(f"{base}/imagery/after.png", params={"bands": "1,2,9"}).status_code == 422
    with seeded.server.client() as anon:
        page = anon.get(seeded.server.base + "/")
        assert page.status_code == 200 and "leaflet.js" in page.text
        assert anon.get(seeded.server.base + "/static/vendor/leaflet/LICENSE").status_code == 200


def test_periods_follow_the_users_scope(seeded: Seeded) -> None:
    with seeded.server.client(seeded.bureau_token) as c:
        periods = c.get("/map/periods").json()
    assert periods == [{"county_code": COUNTY, "period": PERIOD, "warnings": seeded.warning_count()}]
    with seeded.server.client(seeded.field_token) as c:
        periods = c.get("/map/periods").json()
    with seeded.db() as con:
        n_team = con.execute("SELECT count(*) FROM warnings WHERE is_warning = 1 AND assigned_team = ?",
                             (TEAM,)).fetchone()[0]
    # the seeded assignments at least (tests that ran before on the shared server may have assigned more)
    assert n_team >= len(seeded.assigned)
    assert periods == [{"county_code": COUNTY, "period": PERIOD, "warnings": n_team}]


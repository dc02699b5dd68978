"""A service job takes ``landuse_path``, resolved and checked like ``permits_path`` (the worker passes it to
``run_warning_pipeline``, whose land-class storage tests/rules/test_landuse.py covers)."""

from __future__ import annotations

import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from apitest_support import HONGKONG, Server, add_user
from shapely.geometry import box

COUNTY = "810099"  # a county of its own on the shared server


def _dltb(path: Path) -> Path:
    """A 三调-style DLTB over the bundled pair: 200 m cells of 耕地, 林地 and 建设用地 (EPSG:4490)."""
    from cspon_rs.geo.raster import grid_info

    info = grid_info(HONGKONG / "before_20160927.tif")
    minx, miny, maxx, maxy = gpd.GeoSeries([box(*info.bounds)], crs=info.crs).to_crs(4526).total_bounds
    cells, codes = [], []
    for i, x in enumerate(np.arange(minx - 200, maxx + 200, 200.0)):
        for j, y in enumerate(np.arange(miny - 200, maxy + 200, 200.0)):
            cells.append(box(x, y, x + 200, y + 200))
            codes.append(("0103", "0301", "0601")[(i + j) % 3])
    gpd.GeoDataFrame({"DLBM": codes}, geometry=cells, crs=4526).to_crs(4490).to_file(path, layer="DLTB",
                                                                                      driver="GPKG")
    return path


def test_job_takes_a_landuse_layer(server: Server) -> None:
    if not (HONGKONG / "before_20160927.tif").exists():
        pytest.skip(f"bundled demo data not found: {HONGKONG}")
    hk = server.data_dir.parent / "shared" / "hk_landuse"
    if not hk.exists():
        shutil.copytree(HONGKONG, hk)
    dltb = _dltb(hk / "dltb.gpkg")
    token = add_user(server.db_url, "res-landuse", "researcher", COUNTY)
    with server.client(token) as c:
        scene = c.post("/scenes", json={"name": "hk-lu", "before_path": str(hk / "before_20160927.tif"),
                                        "after_path": str(hk / "after_20180323.tif"), "county_code": COUNTY})
        assert scene.status_code == 201, scene.text
        body = {"scene_id": scene.json()["id"], "period": "2018Q1", "county_code": COUNTY,
                "permits_path": str(hk / "permits.gpkg"), "control_lines_path": str(hk / "control_lines.gpkg"),
                "checkpoint": "spectral"}
        bad = c.post("/jobs", json={**body, "landuse_path": str(hk / "permits_missing.gpkg")})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "landuse_path", bad.text
        r = c.post("/jobs", json={**body, "landuse_path": str(dltb)})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["params"]["landuse_path"] == str(dltb.resolve())  # resolved like permits_path
        c.post(f"/jobs/{job['id']}/cancel")  # the run itself (land class stored) is tested in tests/rules

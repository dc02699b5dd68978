"""Fixtures for export tests: classified warnings with ids, and a small before/after raster pair."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from cspon_rs.rules.engine import classify
from cspon_rs.rules.synthetic import LocalFrame, patches_frame

GRID = LocalFrame((114.0, 22.3), 4526)


@pytest.fixture
def grid() -> LocalFrame:
    return GRID


@pytest.fixture
def warnings() -> gpd.GeoDataFrame:
    """Five warnings (one on farmland) plus one legal patch, with ids like the store gives them."""
    return make_warnings()


def make_warnings() -> gpd.GeoDataFrame:
    """The rows of the ``warnings`` fixture (also for module-scoped fixtures)."""
    rects = [(0, 0, 100, 100), (300, 0, 60, 60), (0, 400, 80, 80), (500, 500, 120, 40), (900, 100, 50, 50),
             (1200, 0, 40, 40)]
    patches = patches_frame([GRID.rect(*r) for r in rects], GRID.crs, prob_mean=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    permits = gpd.GeoDataFrame(
        {"permit_no": ["OK-1"], "permit_type": ["land_supply"], "project": [None], "applicant": [None],
         "approved_on": [__import__("datetime").date(2024, 1, 1)], "expires_on": [None], "status": ["approved"]},
        geometry=[GRID.rect(1190, -10, 60, 60)], crs=GRID.crs,
    )
    control = gpd.GeoDataFrame({"kind": ["YJJBNT"], "valid_from": [None]}, geometry=[GRID.rect(280, -20, 100, 100)],
                               crs=GRID.crs)
    result = classify(patches, permits, control, t1="2025-03-01", t2="2025-09-01")
    result["warning_id"] = [f"510000-2025Q3-{i + 1:04d}" for i in range(len(result))]
    result["period"] = "2025Q3"
    result["county_code"] = "510000"
    return result


@pytest.fixture
def raster_pair(tmp_path: Path) -> tuple[Path, Path]:
    """Before: EPSG:4526 at 10 m; after: EPSG:4490 at a slightly different pixel size (warped on read)."""
    rng = np.random.default_rng(0)
    x0, y0 = GRID.x0 - 300, GRID.y0 + 1000
    width = height = 180
    before = tmp_path / "before.tif"
    data = (rng.normal(800, 60, size=(4, height, width))).clip(0, 4000).astype("uint16")
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 4, "dtype": "uint16",
               "crs": "EPSG:4526", "transform": from_origin(x0, y0, 10, 10), "nodata": 0}
    with rasterio.open(before, "w", **profile) as dst:
        dst.write(data)
    after = tmp_path / "after.tif"
    bounds = gpd.GeoSeries.from_xy([x0, x0 + width * 10], [y0 - height * 10, y0], crs=4526).to_crs(4490)
    minx, maxx = bounds.x.min(), bounds.x.max()
    miny, maxy = bounds.y.min(), bounds.y.max()
    w2, h2 = 170, 175
    bright = data.astype("float64")[:, :h2, :w2] * 1.3
    profile2 = {**profile, "width": w2, "height": h2, "crs": "EPSG:4490",
                "transform": from_origin(minx, maxy, (maxx - minx) / w2, (maxy - miny) / h2)}
    with rasterio.open(after, "w", **profile2) as dst:
        dst.write(bright.clip(1, 65535).astype("uint16"))
    return before, after

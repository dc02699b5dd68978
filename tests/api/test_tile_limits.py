"""Tile cost bounds (issue #22): zooms coarser than the file serves cheaply are refused naming the zoom; the
index says that zoom; overviews lower it; tiles render on their own bounded lane."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from apitest_support import REPO, Server, add_user
from rasterio.enums import Resampling
from rasterio.transform import from_origin

sys.path.insert(0, str(REPO / "tests" / "web"))
from webtest_support import _record_run_as_job

from cspon_rs.api.routers.tiles import cheap_min_zoom, native_zooms

COUNTY, PERIOD = "810000", "2018Q1"
MAX_READ = 512 * 512


def _scene(path: Path, seed: int, size: int = 2048, overviews: bool = False) -> Path:
    """A 3-band uint8 GeoTIFF, about 1 m pixels in Web Mercator near Hong Kong (no overviews by default)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 255, (3, size, size), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:3857", transform=from_origin(12_710_000, 2_560_000, 1.0, 1.0),
                       tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(data)
        if overviews:
            dst.build_overviews([2, 4, 8, 16], Resampling.average)
    return path


@pytest.fixture(scope="module")
def tile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    root = tmp_path_factory.mktemp("tiles")
    shared = root / "shared"
    shared.mkdir()
    _scene(shared / "before.tif", 1)
    _scene(shared / "after.tif", 2)
    config = root / "serve.yaml"
    config.write_text(f"scene_roots: ['{shared}']\ntile_max_read_px: {MAX_READ}\ntile_workers: 1\n")
    srv = Server(root / "cspon.db", root / "data", root / "serve.log", ["--config", str(config), "--no-worker"])
    srv.start()
    token = add_user(srv.db_url, "tiles-bureau", "bureau", COUNTY)
    with srv.client(token) as c:
        scene = c.post("/scenes", json={"name": "big", "before_path": "before.tif", "after_path": "after.tif",
                                        "county_code": COUNTY})
        assert scene.status_code == 201, scene.text
    _record_run_as_job(srv.db_url, scene.json()["id"], {}, root)
    yield srv, token
    srv.stop()


def test_cheap_zoom_follows_the_overviews(tmp_path: Path) -> None:
    bare = _scene(tmp_path / "bare.tif", 3)
    cog = _scene(tmp_path / "ovr.tif", 3, overviews=True)
    _lo, maxzoom = native_zooms(bare)
    # without overviews a tile may span at most 512 file pixels per axis: one zoom below the native one
    assert cheap_min_zoom(bare, MAX_READ) == maxzoom - 1
    # overviews down to 1/16 make every zoom down to the whole-file tile cheap (2048 / 16 = 128 px read)
    assert cheap_min_zoom(cog, MAX_READ) < maxzoom - 4
    assert cheap_min_zoom(bare, 64 * 1024**2) == 0  # a large budget serves everything


def test_low_zoom_tile_refused_naming_the_zoom(tile_server: tuple[Server, str]) -> None:
    srv, token = tile_server
    base = f"/map/{COUNTY}/{PERIOD}/tiles"
    with srv.client(token) as c:
        index = c.get(base)
        assert index.status_code == 200, index.text
        layer = index.json()["layers"]["before"]
        coarsest = layer["minzoom"]
        assert coarsest == layer["max_native_zoom"] - 1
        import morecantile

        tms = morecantile.tms.get("WebMercatorQuad")
        lon, lat = tms.lnglat(12_710_000 + 1024, 2_560_000 - 1024)
        low = tms.tile(lon, lat, coarsest - 3)
        refused = c.get(f"{base}/before/{low.z}/{low.x}/{low.y}.png")
        assert refused.status_code == 422, refused.text
        msg = refused.json()["detail"][0]["msg"]
        assert "coarsest zoom" in msg and f"request zoom {coarsest} or finer" in msg, msg
        ok = tms.tile(lon, lat, coarsest)
        served = c.get(f"{base}/before/{ok.z}/{ok.x}/{ok.y}.png")
        assert served.status_code == 200 and served.headers["content-type"] == "image/png"
        health = c.get("/health").json()
    assert health["admission"]["lanes"]["tiles"]["slots"] >= 1  # tiles came through their own lane

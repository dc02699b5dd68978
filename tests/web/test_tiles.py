"""XYZ tiles of the map router against the seeded server: scoping, caching headers, full-resolution pixels."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import morecantile
import numpy as np
import pytest
import rasterio
from PIL import Image
from webtest_support import COUNTY, HONGKONG, PERIOD, Seeded

from cspon_rs.api.routers.map import locate_scene
from cspon_rs.api.routers.tiles import TileCache

BASE = f"/map/{COUNTY}/{PERIOD}/tiles"
TMS = morecantile.tms.get("WebMercatorQuad")


def _png(content: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(content))
    assert img.mode == "RGBA" and img.size == (256, 256)
    return np.asarray(img)


def _expected_from_cog(path: Path, tile: morecantile.Tile, band: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Values of the file pixel under each tile pixel centre (nearest), and whether it lies inside the file."""
    bounds = TMS.xy_bounds(tile)
    step_x = (bounds.right - bounds.left) / 256
    step_y = (bounds.top - bounds.bottom) / 256
    xs = bounds.left + (np.arange(256) + 0.5) * step_x
    ys = bounds.top - (np.arange(256) + 0.5) * step_y
    gx, gy = np.meshgrid(xs, ys)
    with rasterio.open(path) as src:
        from rasterio.warp import transform as warp

        lon, lat = warp("EPSG:3857", src.crs, gx.ravel().tolist(), gy.ravel().tolist())
        rows, cols = rasterio.transform.rowcol(src.transform, lon, lat)
        rows, cols = np.asarray(rows).reshape(256, 256), np.asarray(cols).reshape(256, 256)
        inside = (rows >= 0) & (rows < src.height) & (cols >= 0) & (cols < src.width)
        data = src.read(band)
    values = np.zeros((256, 256), dtype=data.dtype)
    values[inside] = data[rows[inside], cols[inside]]
    return values, inside


def test_tile_index_lists_the_layers_of_the_job(seeded: Seeded) -> None:
    with seeded.server.client() as anon:
        assert anon.get(BASE).status_code == 401
        assert anon.get(f"{BASE}/before/14/0/0.png").status_code == 401
    with seeded.server.client(seeded.bureau_token) as c:
        index = c.get(BASE).json()
        ctx = c.get(f"/map/{COUNTY}/{PERIOD}/context").json()
    assert ctx["tiles_url"] == f"/api/v1{BASE}"
    assert set(index["layers"]) == {"before", "after", "prob", "mask"}
    with rasterio.open(HONGKONG / "before_20160927.tif") as src:
        b = src.bounds
    (south, west), (north, east) = index["bounds"]
    assert west == pytest.approx(b.left, abs=1e-6) and north == pytest.approx(b.top, abs=1e-6)
    assert east == pytest.approx(b.right, abs=1e-6) and south == pytest.approx(b.bottom, abs=1e-6)
    assert index["layers"]["before"]["date"] == "2016-09-27"
    assert index["layers"]["before"]["url"].endswith("/before/{z}/{x}/{y}.png")


def test_tiles_respect_county_bounds_and_cache_headers(seeded: Seeded) -> None:
    with seeded.server.client(seeded.bureau_token) as c:
        maxz = c.get(BASE).json()["layers"]["before"]["max_native_zoom"]
        with rasterio.open(HONGKONG / "before_20160927.tif") as src:
            lon, lat = (src.bounds.left + src.bounds.right) / 2, (src.bounds.top + src.bounds.bottom) / 2
        t = TMS.tile(lon, lat, maxz)
        url = f"{BASE}/after/{t.z}/{t.x}/{t.y}.png"
        first = c.get(url)
        assert first.status_code == 200 and first.headers["content-type"] == "image/png"
        assert "max-age" in first.headers["cache-control"] and first.headers["etag"]
        again = c.get(url, headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304
        # another county: refused before anything is read
        assert c.get(f"/map/320115/{PERIOD}/tiles/after/{t.z}/{t.x}/{t.y}.png").status_code == 403
        # far away from the scene (Beijing) / beyond the tile matrix / above the served zooms
        far = TMS.tile(116.4, 39.9, maxz)
        assert c.get(f"{BASE}/after/{far.z}/{far.x}/{far.y}.png").status_code == 404
        assert c.get(f"{BASE}/after/3/9/0.png").status_code == 404
        deep = TMS.tile(lon, lat, maxz + 5)
        assert c.get(f"{BASE}/after/{deep.z}/{deep.x}/{deep.y}.png").status_code == 404
        assert c.get(f"{BASE}/bogus/{t.z}/{t.x}/{t.y}.png").status_code == 422


def test_tile_at_full_zoom_matches_the_cog_pixels(seeded: Seeded) -> None:
    with seeded.server.client(seeded.bureau_token) as c:
        index = c.get(BASE).json()
        z = index["layers"]["before"]["max_native_zoom"] + 1
        mask_path = Path(seeded.server.db_path).parent / "run" / "mask.tif"
        with rasterio.open(mask_path) as src:
            rows, cols = np.nonzero(src.read(1) == 1)
            k = len(rows) // 2
            lon, lat = src.xy(int(rows[k]), int(cols[k]))
        t = TMS.tile(lon, lat, z)
        mask_tile = _png(c.get(f"{BASE}/mask/{t.z}/{t.x}/{t.y}.png").content)
        before_tile = _png(c.get(f"{BASE}/before/{t.z}/{t.x}/{t.y}.png").content)
    # mask: a tile pixel is drawn exactly where the file pixel under it is 1
    expected, inside = _expected_from_cog(mask_path, t)
    drawn = mask_tile[..., 3] > 0
    assert (expected == 1).sum() > 50
    agree = (drawn == ((expected == 1) & inside)).mean()
    assert agree > 0.995, agree
    # imagery: each tile pixel is the file pixel under it, through one monotonic stretch per band
    values, inside = _expected_from_cog(HONGKONG / "before_20160927.tif", t, band=1)
    red = before_tile[..., 0][inside].astype(int)
    src_vals = values[inside].astype(int)
    assert inside.mean() > 0.5 and np.ptp(src_vals) > 100
    order = np.argsort(src_vals, kind="stable")
    steps = np.diff(red[order])
    assert (steps >= 0).mean() > 0.99, (steps < 0).sum()
    # the same file value always gives the same tile value (no resampling mixed neighbours in)
    spread = [np.ptp(red[src_vals == v]) for v in np.unique(src_vals)[:200] if (src_vals == v).sum() > 1]
    assert spread and np.mean(np.asarray(spread) == 0) > 0.99


def test_scene_identity_finds_a_bare_name_only_with_the_right_checksum(tmp_path: Path) -> None:
    root = tmp_path / "scenes"
    (root / "2016").mkdir(parents=True)
    copy = root / "2016" / "before_20160927.tif"
    shutil.copy(HONGKONG / "before_20160927.tif", copy)
    sha = hashlib.sha256(copy.read_bytes()).hexdigest()
    found, why = locate_scene("before_20160927.tif", sha, [root])
    assert found == copy and why is None
    found, why = locate_scene("before_20160927.tif", "0" * 64, [root])
    assert found is None and why is not None and "before_20160927.tif" in why and "scene_roots" in why
    found, why = locate_scene(str(copy), sha, [])
    assert found == copy


def test_tile_cache_stays_within_its_byte_bound() -> None:
    cache = TileCache(max_bytes=1000)
    for i in range(50):
        cache.put(f"k{i}", bytes(100))
    assert cache.bytes <= 1000 and len(cache) == 10
    assert cache.get("k0") is None and cache.get("k49") == bytes(100)
    cache.put("big", bytes(5000))  # larger than the whole cache: not kept
    assert cache.get("big") is None and cache.bytes <= 1000


def test_both_dates_share_one_stretch(tmp_path: Path) -> None:
    """A scene that got brighter shows brighter in the after tile (per-date stretches would hide it)."""
    from rasterio.transform import from_origin

    from cspon_rs.api.routers.tiles import render_tile

    rng = np.random.default_rng(3)
    base = rng.integers(200, 1200, (3, 256, 256)).astype(np.uint16)
    tile = TMS.tile(114.17, 22.30, 15)
    bounds = TMS.xy_bounds(tile)
    transform = from_origin(bounds.left, bounds.top, (bounds.right - bounds.left) / 256,
                            (bounds.top - bounds.bottom) / 256)
    paths = []
    for name, data in (("before", base), ("after", base + 600)):
        paths.append(tmp_path / f"{name}.tif")
        with rasterio.open(paths[-1], "w", driver="GTiff", width=256, height=256, count=3, dtype="uint16",
                           crs="EPSG:3857", transform=transform) as dst:
            dst.write(data)
    before, after = paths
    shared = [_png(render_tile(p, name, tile.z, tile.x, tile.y, stretch_with=[other]))[..., :3].mean()
              for p, name, other in ((before, "before", after), (after, "after", before))]
    alone = [_png(render_tile(p, name, tile.z, tile.x, tile.y))[..., :3].mean()
             for p, name in ((before, "before"), (after, "after"))]
    assert shared[1] > shared[0] + 60  # +600 of a ~1900 wide common range is about +80 of 255
    assert abs(alone[1] - alone[0]) < 5  # the same picture twice: the change is normalised away

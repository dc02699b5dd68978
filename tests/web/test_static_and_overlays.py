"""Offline assets of the pages and the imagery overlays of the map router (no browser needed)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from cspon_rs.api.routers.map import cached_overlay, overlay_grid, render_overlay_png
from cspon_rs.api.web import STATIC_DIR
from cspon_rs.errors import BandMismatchError

PAGES = ("index.html", "field.html")
#: The only absolute URLs allowed in our own files: links a person may click (never loaded by the page).
ALLOWED_LINKS = ("https://uri.amap.com/marker",)


def test_pages_reference_only_shipped_files() -> None:
    for page in PAGES:
        html = (STATIC_DIR / page).read_text(encoding="utf-8")
        refs = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
        assert refs, page
        for ref in refs:
            assert (STATIC_DIR / ref.removeprefix("/static/")).is_file(), f"{page} references missing {ref}"
        assert not re.search(r'(?:src|href)="(?:https?:)?//', html), f"{page} loads something from outside"


def test_no_external_urls_in_our_scripts_and_styles() -> None:
    own = [p for p in STATIC_DIR.rglob("*")
           if p.suffix in {".js", ".css", ".html"} and "vendor" not in p.parts]
    assert len(own) >= 5
    for path in own:
        for url in re.findall(r"https?://[^\s\"')]+", path.read_text(encoding="utf-8")):
            assert url.startswith(ALLOWED_LINKS), f"{path.name}: external URL {url}"


def test_leaflet_popups_and_tooltips_get_dom_nodes_not_html_strings() -> None:
    """Leaflet parses a string given to bindTooltip/bindPopup/setContent as HTML: data (permit names from
    uploaded files, warning ids) must go in as DOM nodes built by Cspon.h, whose text is never parsed."""
    own = [p for p in STATIC_DIR.rglob("*.js") if "vendor" not in p.parts]
    calls = 0
    for path in own:
        text = path.read_text()
        for m in re.finditer(r"\.(bindTooltip|bindPopup|setContent|setTooltipContent)\(\s*([^,)]{0,20})", text):
            calls += 1
            assert m.group(2).startswith(("C.h(", "Cspon.h(")), f"{path.name}: {m.group(0)!r} passes a string"
        assert ".innerHTML" not in text, f"{path.name} assigns innerHTML"
    assert calls >= 2


def test_vendored_leaflet_is_the_recorded_version_with_licence() -> None:
    vendor = STATIC_DIR / "vendor"
    readme = (vendor / "README.md").read_text(encoding="utf-8")
    header = (vendor / "leaflet" / "leaflet.js").read_text(encoding="utf-8")[:200]
    version = re.search(r"Leaflet (\d+\.\d+\.\d+)", header)
    assert version is not None and f"| Leaflet | {version.group(1)} |" in readme
    assert "BSD 2-Clause" in (vendor / "leaflet" / "LICENSE").read_text(encoding="utf-8")
    css = (vendor / "leaflet" / "leaflet.css").read_text(encoding="utf-8")
    for image in re.findall(r"url\((images/[^)]+)\)", css):
        assert (vendor / "leaflet" / image).is_file(), image


def _utm_scene(path: Path, *, seed: int, nodata_corner: bool = True) -> Path:
    """A 4-band uint16 GeoTIFF in UTM 50N (EPSG:32650, 10 m) with a nodata corner."""
    rng = np.random.default_rng(seed)
    data = rng.integers(500, 3000, size=(4, 80, 100), dtype=np.uint16)
    if nodata_corner:
        data[:, :20, :20] = 0
    with rasterio.open(path, "w", driver="GTiff", width=100, height=80, count=4, dtype="uint16",
                       crs="EPSG:32650", transform=from_origin(400_000, 3_500_000, 10, 10), nodata=0) as dst:
        dst.write(data)
    return path


def test_overlay_is_warped_to_web_mercator_with_matching_latlon_bounds(tmp_path: Path) -> None:
    from rasterio.warp import transform_bounds

    scene = _utm_scene(tmp_path / "a.tif", seed=1)
    grid = overlay_grid(scene, max_size=64)
    assert max(grid.width, grid.height) <= 64
    (south, west), (north, east) = grid.bounds_latlon
    w, s, e, n = transform_bounds("EPSG:32650", "EPSG:4326", 400_000, 3_499_200, 401_000, 3_500_000)
    # the Mercator rectangle encloses the (slightly rotated) UTM footprint, and not by much
    assert west <= w and east >= e and south <= s and north >= n
    assert (east - west) < 1.1 * (e - w) and (north - south) < 1.1 * (n - s)
    png = render_overlay_png(scene, tmp_path / "a.png", grid)
    rgba = np.asarray(Image.open(png))
    assert rgba.shape == (grid.height, grid.width, 4)
    assert rgba[2, 2, 3] == 0, "nodata corner must be transparent"
    inside = rgba[grid.height // 2, grid.width // 2]
    assert inside[3] == 255
    opaque = rgba[..., 3] == 255
    assert rgba[..., 0][opaque].min() == 0 and rgba[..., 0][opaque].max() == 255  # 2-98 % stretch
    with pytest.raises(BandMismatchError, match="bands"):
        render_overlay_png(scene, tmp_path / "bad.png", grid, bands=(1, 2, 5))


def test_both_dates_share_one_grid_and_the_cache_follows_the_files(tmp_path: Path) -> None:
    before = _utm_scene(tmp_path / "before.tif", seed=1)
    after = tmp_path / "after.tif"
    # the after date on a different grid (shifted origin, 12 m pixels)
    rng = np.random.default_rng(2)
    with rasterio.open(after, "w", driver="GTiff", width=90, height=70, count=4, dtype="uint16",
                       crs="EPSG:32650", transform=from_origin(399_950, 3_500_050, 12, 12), nodata=0) as dst:
        dst.write(rng.integers(500, 3000, size=(4, 70, 90), dtype=np.uint16))
    cache = tmp_path / "cache"
    png_b, grid_b = cached_overlay(before, after, "before", cache, max_size=128)
    png_a, grid_a = cached_overlay(before, after, "after", cache, max_size=128)
    assert grid_a.bounds_latlon == grid_b.bounds_latlon
    assert Image.open(png_a).size == Image.open(png_b).size == (grid_b.width, grid_b.height)
    first = png_a.read_bytes()
    # served from the cache: same file, not rewritten
    mtime = png_a.stat().st_mtime_ns
    again, _ = cached_overlay(before, after, "after", cache, max_size=128)
    assert again == png_a and again.stat().st_mtime_ns == mtime
    # a replaced after image is rendered again under a new key
    time.sleep(0.01)
    with rasterio.open(after, "r+") as dst:
        dst.write(np.full((4, 70, 90), 1000, dtype=np.uint16) + np.arange(90, dtype=np.uint16)[None, None, :])
    renewed, _ = cached_overlay(before, after, "after", cache, max_size=128)
    assert renewed != png_a and renewed.read_bytes() != first
    assert not list(cache.glob(".tmp-*")), "temporary files left behind"


def test_sources_come_from_the_job_else_from_the_patches_and_conventional_layers(tmp_path: Path) -> None:
    import datetime as dt

    import geopandas as gpd
    from shapely.geometry import box

    from cspon_rs.api.db import ensure_schema, make_engine, make_sessionmaker, session_scope
    from cspon_rs.api.routers.map import resolve_sources
    from cspon_rs.store.api_crud import claim_next_job, create_job, create_scene, finish_job
    from cspon_rs.store.models import Patch

    url = f"sqlite:///{tmp_path / 'store.db'}"
    ensure_schema(url)
    folder = tmp_path / "scene"
    folder.mkdir()
    before = _utm_scene(folder / "before.tif", seed=1)
    after = _utm_scene(folder / "after.tif", seed=2)
    gpd.GeoDataFrame({"PZWH": ["x"]}, geometry=[box(0, 0, 1, 1)], crs=4326).to_file(folder / "permits.gpkg")
    engine = make_engine(url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            assert resolve_sources(session, "810000", "2018Q1").before is None
            session.add(Patch(period="2018Q1", county_code="810000", patch_id="p1", area_m2=10.0,
                              t1=dt.date(2016, 9, 27), t2=dt.date(2018, 3, 23), scene_before=str(before),
                              scene_after=str(after), geometry_wkt="POLYGON ((0 0, 1 0, 1 1, 0 0))"))
            session.commit()
            src = resolve_sources(session, "810000", "2018Q1")
            assert (src.job_id, src.before, src.after) == (None, before, after)
            assert (src.before_date, src.after_date) == ("2016-09-27", "2018-03-23")
            assert src.permits == folder / "permits.gpkg"
            assert src.control_lines is None and src.townships is None
            assert resolve_sources(session, "810000", "2018Q2").before is None

            other = tmp_path / "other"
            other.mkdir()
            scene = create_scene(session, name="s", before_path=str(other / "b.tif"),
                                 after_path=str(other / "a.tif"), before_date=None, after_date=None,
                                 county_code="810000", info={})
            job = create_job(session, scene_id=scene.id, period="2018Q1", county_code="810000",
                             params={"permits_path": str(other / "p.gpkg"),
                                     "control_lines_path": str(other / "c.gpkg")})
            assert claim_next_job(session) is not None
            src = resolve_sources(session, "810000", "2018Q1")
            assert src.job_id is None, "a running job is not a source"
            finish_job(session, job.id, "succeeded", result={})
            src = resolve_sources(session, "810000", "2018Q1")
            assert (src.job_id, src.scene_id) == (job.id, scene.id)
            assert (src.before, src.permits, src.control_lines) == (other / "b.tif", other / "p.gpkg",
                                                                   other / "c.gpkg")
            assert src.townships is None
    finally:
        engine.dispose()


def test_overlay_cache_keeps_a_bounded_number_of_renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cspon_rs.api.routers import map as map_router

    monkeypatch.setattr(map_router, "OVERLAY_CACHE_FILES", 3)
    before = _utm_scene(tmp_path / "before.tif", seed=1)
    after = _utm_scene(tmp_path / "after.tif", seed=2)
    cache = tmp_path / "cache"
    for size in (64, 80, 96, 112, 128):
        png, _ = cached_overlay(before, after, "after", cache, max_size=size)
        assert png.is_file()
    assert len(list(cache.glob("*.png"))) == 3 and len(list(cache.glob("*.json"))) == 3


def test_cli_made_warnings_find_their_scenes_by_stored_identity(tmp_path: Path) -> None:
    """Patches store the scene's absolute path + sha256; rows stored by bare file name are found under the
    service's roots when the checksum matches, and named in a note when not."""
    import datetime as dt
    import hashlib

    from cspon_rs.api.db import ensure_schema, make_engine, make_sessionmaker, session_scope
    from cspon_rs.api.routers.map import resolve_sources
    from cspon_rs.store.models import Patch

    url = f"sqlite:///{tmp_path / 'store.db'}"
    ensure_schema(url)
    root = tmp_path / "scenes"
    (root / "hk").mkdir(parents=True)
    before = _utm_scene(root / "hk" / "before_x.tif", seed=1)
    after = _utm_scene(root / "hk" / "after_x.tif", seed=2)
    sha = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (before, after)}
    engine = make_engine(url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            session.add(Patch(period="2018Q1", county_code="810000", patch_id="p1", area_m2=10.0,
                              t1=dt.date(2016, 9, 27), t2=dt.date(2018, 3, 23), scene_before="before_x.tif",
                              scene_after="after_x.tif", scene_before_sha256=sha[before],
                              scene_after_sha256=sha[after], geometry_wkt="POLYGON ((0 0, 1 0, 1 1, 0 0))"))
            session.commit()
            found = resolve_sources(session, "810000", "2018Q1", roots=[root])
            assert (found.before, found.after, found.notes) == (before, after, [])
            lost = resolve_sources(session, "810000", "2018Q1", roots=[tmp_path / "elsewhere"])
            assert lost.before == Path("before_x.tif") and any("before_x.tif" in n for n in lost.notes)
            # same name, other content: refused (the checksum is the identity)
            with rasterio.open(after, "r+") as dst:
                dst.write(np.full((4, 80, 100), 7, dtype=np.uint16))
            changed = resolve_sources(session, "810000", "2018Q1", roots=[root])
            assert changed.before == before and changed.after == Path("after_x.tif") and changed.notes
    finally:
        engine.dispose()


def test_pages_run_under_a_strict_csp_and_the_field_app_is_a_pwa() -> None:
    """No inline scripts or event handlers (``script-src 'self'``); the manifest and the service worker's
    app shell name files that ship."""
    import json

    for page in PAGES:
        html = (STATIC_DIR / page).read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"{page}: inline script"
        assert not re.search(r"\son[a-z]+\s*=", html), f"{page}: inline event handler"
        assert "javascript:" not in html
    field = (STATIC_DIR / "field.html").read_text(encoding="utf-8")
    assert '<link rel="manifest" href="/static/manifest.webmanifest">' in field
    manifest = json.loads((STATIC_DIR / "manifest.webmanifest").read_text(encoding="utf-8"))
    assert manifest["start_url"] == "/field" and manifest["display"] == "standalone"
    for icon in manifest["icons"]:
        assert (STATIC_DIR / icon["src"].removeprefix("/static/")).is_file()
    shell = re.findall(r'"(/[^"]*)"', (STATIC_DIR / "sw.js").read_text(encoding="utf-8").split("];")[0])
    assert "/field" in shell
    for ref in re.findall(r'(?:src|href)="(/static/[^"]+)"', field):
        assert ref in shell, f"{ref} is used by /field but not kept for offline use"
    for ref in shell:
        if ref.startswith("/static/"):
            assert (STATIC_DIR / ref.removeprefix("/static/")).is_file(), ref

"""Map endpoints of the review page: the imagery and layers behind a county's warnings of one period.

The review map (``/``, see ``docs/web.md``) draws warnings over the project's own imagery -- no tiles from the internet.
For a county and period the *sources* are found like this:

1. the latest **succeeded job** of that county and period gives the scene pair (``api_scenes``) and the
   permit / control-line / township layers it ran with;
2. failing that (warnings written by ``cspon-rs warn`` / ``cspon-rs demo`` outside the service), the scene
   identity recorded on the stored change patches (absolute path + sha256; bare file names of older rows
   are looked up under the service's ``data_dir`` / ``scene_roots``) gives the imagery, and layers with
   the conventional names :data:`CONVENTIONAL_LAYERS` (``permits.gpkg``, ``control_lines.gpkg``,
   ``townships.gpkg``) lying next to the before scene are used when present (``data_samples/hongkong``).

The map draws the imagery as XYZ tiles (:mod:`cspon_rs.api.routers.tiles`, full resolution at any zoom);
the single-PNG overlay below stays as a fallback. It is rendered once per scene, date and size into
``<data_dir>/cache/map/`` as an RGBA PNG warped to Web Mercator (EPSG:3857, the CRS Leaflet draws in),
so that ``L.imageOverlay`` with the returned lat/lon bounds lines up exactly; both dates are warped onto
the *same* grid (the before scene's footprint). Bands are contrast-stretched per band between the 2nd and
98th percentile of valid pixels (:func:`cspon_rs.geo.stretch.common_stretch`, the stretch of every picture).

All endpoints need a bearer token of any role; county-bound users only see their county.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from dataclasses import field as dc_field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from cspon_rs.api.deps import CurrentUser, SessionDep, SettingsDep, ensure_county, error_detail
from cspon_rs.api.schemas import WarningOut
from cspon_rs.store.api_models import ApiUser, Job, Scene

__all__ = [
    "CONVENTIONAL_LAYERS",
    "MAP_CRS",
    "LayerKind",
    "MapContext",
    "MapSources",
    "OverlayGrid",
    "locate_scene",
    "overlay_grid",
    "render_overlay_png",
    "resolve_sources",
    "router",
]

router = APIRouter(prefix="/map", tags=["map"])

#: CRS the overlays are warped to (Leaflet's default map CRS).
MAP_CRS = "EPSG:3857"
LayerKind = Literal["permits", "control_lines", "townships"]
#: File names looked for next to the before scene when no job names the layers.
CONVENTIONAL_LAYERS: dict[str, str] = {
    "permits": "permits.gpkg", "control_lines": "control_lines.gpkg", "townships": "townships.gpkg",
}
Which = Literal["before", "after"]

_COUNTY = r"^[0-9]{6}$"
_PERIOD = r"^[0-9]{4}([Qq][1-4]|[Hh][12]|-[01][0-9])?$"
CountyPath = Annotated[str, PathParam(pattern=_COUNTY, description="6-digit county code")]
PeriodPath = Annotated[str, PathParam(pattern=_PERIOD, description="period label, e.g. 2018Q1")]


# --------------------------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class OverlayGrid:
    """Target grid of an overlay in :data:`MAP_CRS`.

    Attributes:
        transform: Affine transform of the PNG (metres, EPSG:3857).
        width: PNG width in pixels.
        height: PNG height in pixels.
        bounds_latlon: ``((south, west), (north, east))`` in degrees (EPSG:4326), as Leaflet wants them.
    """

    transform: Any
    width: int
    height: int
    bounds_latlon: tuple[tuple[float, float], tuple[float, float]]


def overlay_grid(reference: str | Path, max_size: int = 2048) -> OverlayGrid:
    """Web-Mercator grid covering ``reference`` at about its own resolution, at most ``max_size`` px a side.

    Args:
        reference: Raster whose footprint the overlay covers (the scene's before date).
        max_size: Longest side of the PNG in pixels (the grid is coarsened to fit).
    """
    from rasterio.transform import Affine
    from rasterio.warp import calculate_default_transform, transform_bounds

    from cspon_rs.geo.raster import open_raster

    with open_raster(reference) as src:
        transform, width, height = calculate_default_transform(
            src.crs, MAP_CRS, src.width, src.height, *src.bounds
        )
    assert width is not None and height is not None
    scale = max(width, height) / max_size
    if scale > 1:
        width, height = max(1, math.ceil(width / scale)), max(1, math.ceil(height / scale))
        transform = transform * Affine.scale(scale, scale)
    left, top = transform * (0, 0)
    right, bottom = transform * (width, height)
    west, south, east, north = transform_bounds(MAP_CRS, "EPSG:4326", left, bottom, right, top)
    return OverlayGrid(transform, int(width), int(height), ((south, west), (north, east)))


def render_overlay_png(
    source: str | Path,
    out_png: str | Path,
    grid: OverlayGrid,
    *,
    bands: tuple[int, int, int] = (1, 2, 3),
    percentiles: tuple[float, float] = (2.0, 98.0),
) -> Path:
    """Warp three bands of ``source`` onto ``grid`` and write a contrast-stretched RGBA PNG.

    Pixels outside the source or equal to its nodata value are transparent. The PNG is written to a
    temporary name and renamed, so a reader never sees half a file.

    Args:
        source: Any georeferenced raster rasterio opens (GeoTIFF/COG), any CRS.
        out_png: Where to write the PNG.
        grid: Target grid from :func:`overlay_grid`.
        bands: 1-based band numbers shown as red, green, blue (``(1, 2, 3)`` for the B04,B03,B02,B08
            stacks of the demo).
        percentiles: Lower and upper percentile of the linear stretch, per band.

    Raises:
        BandMismatchError: A band number is larger than the band count of ``source``.
    """
    from PIL import Image
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    from cspon_rs.errors import BandMismatchError
    from cspon_rs.geo.raster import open_raster

    out_png = Path(out_png)
    with open_raster(source) as src:
        if max(bands) > src.count or min(bands) < 1:
            raise BandMismatchError(f"{source}: bands {bands} requested for the overlay, file has "
                                    f"{src.count}; pass bands=... within 1..count")
        with WarpedVRT(src, crs=MAP_CRS, transform=grid.transform, width=grid.width, height=grid.height,
                       resampling=Resampling.bilinear, add_alpha=True) as vrt:
            rgb = vrt.read(list(bands))
            alpha = vrt.read(vrt.count)
    valid = alpha > 0
    if src.nodata is not None:
        valid &= ~np.all(rgb == src.nodata, axis=0)
    from cspon_rs.geo.stretch import common_stretch

    (rgb8,) = common_stretch([np.where(valid, rgb, np.nan)], low=percentiles[0], high=percentiles[1])
    rgba = np.dstack([rgb8, np.where(valid, 255, 0).astype(np.uint8)])
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=out_png.parent)
    os.close(fd)
    try:
        Image.fromarray(rgba, mode="RGBA").save(tmp, format="PNG", optimize=False)
        os.replace(tmp, out_png)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_png


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def cached_overlay(
    before: Path, after: Path, which: Which, cache_dir: Path, *, max_size: int = 2048,
    bands: tuple[int, int, int] = (1, 2, 3),
) -> tuple[Path, OverlayGrid]:
    """PNG of one date of a scene pair on the before scene's Web-Mercator grid, rendered once and cached.

    The cache key covers both files (path, size, modification time), the date, size and bands, so a
    replaced GeoTIFF is re-rendered.
    """
    key = "|".join([_file_key(before), _file_key(after), which, str(max_size), ",".join(map(str, bands))])
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    png = cache_dir / f"{digest}.png"
    meta = cache_dir / f"{digest}.json"
    if png.exists() and meta.exists():
        info = json.loads(meta.read_text())
        (s, w), (n, e) = info["bounds_latlon"]
        from rasterio.transform import Affine

        grid = OverlayGrid(Affine(*info["transform"][:6]), info["width"], info["height"], ((s, w), (n, e)))
        return png, grid
    grid = overlay_grid(before, max_size)
    render_overlay_png(before if which == "before" else after, png, grid, bands=bands)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=cache_dir)
    with os.fdopen(fd, "w") as fh:
        json.dump({"transform": list(grid.transform), "width": grid.width, "height": grid.height,
                   "bounds_latlon": grid.bounds_latlon, "source": key}, fh)
    os.replace(tmp, meta)
    _prune(cache_dir, OVERLAY_CACHE_FILES)
    return png, grid


#: Most overlays kept in ``<data_dir>/cache/map`` (each distinct size/bands is one); the oldest go first.
OVERLAY_CACHE_FILES = 32


def _prune(cache_dir: Path, keep: int) -> None:
    """Delete the least recently written overlays beyond ``keep`` (PNG and its JSON together)."""
    pngs = sorted(cache_dir.glob("[0-9a-f]*.png"), key=lambda q: q.stat().st_mtime_ns, reverse=True)
    for old in pngs[keep:]:
        for path in (old, old.with_suffix(".json")):
            path.unlink(missing_ok=True)  # another request may have pruned it first


# ------------------------------------------------------------------------------------------- sources


@dataclass
class MapSources:
    """Where the imagery and layers of one county and period come from (server-side paths)."""

    county_code: str
    period: str
    job_id: int | None = None
    scene_id: int | None = None
    scene_name: str | None = None
    before: Path | None = None
    after: Path | None = None
    before_date: str | None = None
    after_date: str | None = None
    permits: Path | None = None
    control_lines: Path | None = None
    townships: Path | None = None
    #: The detection's ``change_prob.tif`` / ``change_mask.tif`` when a job's output folder has them.
    prob: Path | None = None
    mask: Path | None = None
    #: Why something could not be found (shown on the page).
    notes: list[str] = dc_field(default_factory=list)


#: Names of the detection rasters looked for in a job's output folder (``detect/`` first).
PROB_NAMES = ("detect/change_prob.tif", "change_prob.tif", "prob.tif")
MASK_NAMES = ("detect/change_mask.tif", "change_mask.tif", "mask.tif")
_SHA_CACHE: dict[str, str] = {}


def _sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime)."""
    key = _file_key(path)
    found = _SHA_CACHE.get(key)
    if found is None:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        found = _SHA_CACHE[key] = digest.hexdigest()
    return found


def locate_scene(stored: str, sha256: str | None, roots: list[Path]) -> tuple[Path | None, str | None]:
    """The file a patch's stored scene identity names, or ``(None, why)``.

    Args:
        stored: The stored scene path: absolute (revision 0003 on) or a bare file name (older rows).
        sha256: The stored checksum, when recorded; a file whose content differs is refused.
        roots: Folders searched (non-recursively, then one level down) for a bare file name, e.g.
            the service's ``data_dir`` and ``scene_roots``.
    """
    path = Path(stored)
    candidates: list[Path] = []
    if path.is_absolute():
        candidates.append(path)
    for root in roots:
        candidates += [root / path.name, *sorted(root.glob(f"*/{path.name}"))]
    for candidate in candidates:
        if not candidate.is_file():
            continue
        if sha256 and _sha256(candidate) != sha256:
            continue
        return candidate, None
    why = f"scene {stored} is not on this server" + (f" (sha256 {sha256[:12]}…)" if sha256 else "")
    if not path.is_absolute():
        why += "; it was stored by file name only: put it under data_dir or a scene_roots folder"
    return None, why


def resolve_sources(
    session: Session, county_code: str, period: str, *, roots: list[Path] | None = None,
) -> MapSources:
    """Find the scene pair, detection rasters and layers behind the warnings of ``county_code`` / ``period``.

    The latest succeeded job of that county and period wins (scene, layers, and ``change_prob.tif`` /
    ``change_mask.tif`` from its output folder); otherwise the scene identity recorded on the stored change
    patches (absolute path + sha256, see :func:`locate_scene`) is used, with the :data:`CONVENTIONAL_LAYERS`
    found next to the before scene.

    Args:
        roots: Folders where scenes stored by bare file name may be found (the service's allowed roots).
    """
    found = MapSources(county_code=county_code, period=period)
    job = session.scalars(
        select(Job)
        .where(Job.county_code == county_code, Job.period == period, Job.state == "succeeded",
               Job.kind != "report")  # a report job (POST /exports/report-jobs) has no scene or layers
        .order_by(Job.finished_at.desc(), Job.id.desc())
        .limit(1)
    ).first()
    if job is not None:
        found.job_id = job.id
        params = dict(job.params or {})
        for kind in ("permits", "control_lines", "townships"):
            value = params.get(f"{kind}_path")
            if value:
                setattr(found, kind, Path(value))
        out_dir = (job.result or {}).get("out_dir")
        if out_dir:
            for kind, names in (("prob", PROB_NAMES), ("mask", MASK_NAMES)):
                hit = next((Path(out_dir) / n for n in names if (Path(out_dir) / n).is_file()), None)
                setattr(found, kind, hit)
        if job.scene_id is not None:
            scene = session.get(Scene, job.scene_id)
            if scene is not None:
                found.scene_id, found.scene_name = scene.id, scene.name
                found.before, found.after = Path(scene.before_path), Path(scene.after_path)
                found.before_date, found.after_date = scene.before_date, scene.after_date
    if found.before is None:
        from cspon_rs.store.models import Patch

        patch = session.scalars(
            select(Patch)
            .where(Patch.county_code == county_code, Patch.period == period, Patch.scene_before.is_not(None),
                   Patch.scene_after.is_not(None))
            .order_by(Patch.id.desc())
            .limit(1)
        ).first()
        if patch is not None and patch.scene_before and patch.scene_after:
            before, why_b = locate_scene(patch.scene_before, patch.scene_before_sha256, roots or [])
            after, why_a = locate_scene(patch.scene_after, patch.scene_after_sha256, roots or [])
            found.notes += [w for w in (why_b, why_a) if w]
            # Unresolved names are kept as stored so the messages below name them.
            found.before = before or Path(patch.scene_before)
            found.after = after or Path(patch.scene_after)
            found.before_date = patch.t1.isoformat() if patch.t1 else None
            found.after_date = patch.t2.isoformat() if patch.t2 else None
            for kind, name in CONVENTIONAL_LAYERS.items():
                candidate = found.before.parent / name
                if candidate.is_file():
                    setattr(found, kind, candidate)
    return found


# ---------------------------------------------------------------------------------------------- schemas


class MapImagery(BaseModel):
    """Before/after overlays of a county and period (PNG URLs need the bearer token too)."""

    scene_id: int | None
    name: str | None
    before_date: str | None
    after_date: str | None
    #: ``[[south, west], [north, east]]`` in degrees, for ``L.imageOverlay``.
    bounds: list[list[float]]
    before_url: str
    after_url: str


class MapPeriod(BaseModel):
    """A county and period that has warnings."""

    county_code: str
    period: str
    warnings: int


class MapContext(BaseModel):
    """Everything the review map needs besides the warnings themselves."""

    county_code: str
    period: str
    job_id: int | None
    imagery: MapImagery | None
    #: kind -> GeoJSON URL, for the layers that are known.
    layers: dict[str, str]
    #: URL of the tile index (``GET`` it for the XYZ layers: before, after, prob, mask).
    tiles_url: str | None = None
    #: Why imagery or layers are missing (shown on the page).
    notes: list[str]


# -------------------------------------------------------------------------------------------- endpoints


def _visible(user: ApiUser, county_code: str) -> None:
    ensure_county(user, county_code)


@router.get("/periods", response_model=list[MapPeriod], summary="Counties and periods that have warnings")
def periods(user: CurrentUser, session: SessionDep) -> list[MapPeriod]:
    """Newest period first; county-bound users see their county only, field users their team's warnings."""
    from cspon_rs.store.models import WarningRecord as W

    query = select(W.county_code, W.period, func.count()).where(W.is_warning.is_(True)).group_by(
        W.county_code, W.period)
    if user.county_code is not None:
        query = query.where(W.county_code == user.county_code)
    if user.role == "field":  # field teams see only what is assigned to them (as in GET /warnings)
        query = query.where(W.assigned_team == user.team) if user.team else query.where(W.id.is_(None))
    rows = session.execute(query).all()
    out = [MapPeriod(county_code=c, period=p, warnings=int(n)) for c, p, n in rows]
    out.sort(key=lambda r: (r.period, r.county_code), reverse=True)
    return out


@router.get("/{county_code}/{period}/context", response_model=MapContext,
            summary="Imagery and layers behind a county's warnings of one period")
def context(
    county_code: CountyPath, period: PeriodPath, user: CurrentUser, session: SessionDep, settings: SettingsDep,
) -> MapContext:
    """Resolved from the latest succeeded job of that county and period (see the module docs)."""
    _visible(user, county_code)
    src = resolve_sources(session, county_code, period, roots=settings.allowed_roots())
    base = f"/api/v1/map/{county_code}/{period}"
    notes: list[str] = list(src.notes)
    imagery: MapImagery | None = None
    if src.before is not None and src.after is not None:
        try:
            grid = overlay_grid(src.before)
        except Exception as exc:  # missing / unreadable scene: the map still works without imagery
            notes.append(f"imagery unavailable: {exc}")
        else:
            (s, w), (n, e) = grid.bounds_latlon
            imagery = MapImagery(scene_id=src.scene_id, name=src.scene_name, before_date=src.before_date,
                                 after_date=src.after_date, bounds=[[s, w], [n, e]],
                                 before_url=f"{base}/imagery/before.png",
                                 after_url=f"{base}/imagery/after.png")
    else:
        notes.append("no scene known for this period (no succeeded job, no patches with scene paths)")
    layers = {kind: f"{base}/layers/{kind}.geojson" for kind in ("permits", "control_lines", "townships")
              if getattr(src, kind) is not None}
    if not layers:
        notes.append("no permit / control-line layers known (they come from the job that made the warnings, "
                     "or permits.gpkg / control_lines.gpkg next to the before scene)")
    return MapContext(county_code=county_code, period=period, job_id=src.job_id, imagery=imagery,
                      layers=layers, tiles_url=f"{base}/tiles" if imagery is not None else None, notes=notes)


@router.get("/{county_code}/{period}/imagery/{which}.png", summary="Before or after image as a PNG overlay",
            response_class=FileResponse, responses={200: {"content": {"image/png": {}}}})
def imagery(
    county_code: CountyPath,
    period: PeriodPath,
    which: Which,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    max_size: Annotated[int, Query(ge=64, le=8192, description="longest side in pixels")] = 2048,
    bands: Annotated[str, Query(pattern=r"^[0-9]+,[0-9]+,[0-9]+$",
                                description="R,G,B band numbers (1-based)")] = "1,2,3",
) -> FileResponse:
    """RGBA PNG on Web Mercator; the lat/lon bounds come from the ``context`` endpoint."""
    _visible(user, county_code)
    src = resolve_sources(session, county_code, period, roots=settings.allowed_roots())
    if src.before is None or src.after is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=error_detail(
            "period", f"no scene known for county {county_code}, period {period}", "path"))
    for path, field in ((src.before, "before"), (src.after, "after")):
        if not path.is_file():
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=error_detail(
                "period", f"the {field} scene of county {county_code}, period {period} is no longer on the "
                f"server: {path}", "path"))
    rgb = tuple(int(b) for b in bands.split(","))
    png, grid = cached_overlay(src.before, src.after, which, settings.data_dir / "cache" / "map",
                               max_size=max_size, bands=(rgb[0], rgb[1], rgb[2]))
    (s, w), (n, e) = grid.bounds_latlon
    return FileResponse(png, media_type="image/png", headers={
        "Cache-Control": "private, max-age=3600", "X-Bounds": json.dumps([[s, w], [n, e]])})


def _layer_geojson(kind: LayerKind, path: Path) -> dict[str, Any]:
    from cspon_rs.rules.inputs import load_control_lines, load_permits, load_townships

    if kind == "permits":
        gdf = load_permits(path)
    elif kind == "control_lines":
        gdf = load_control_lines(path)
    else:
        gdf = load_townships(path)
    gdf = gdf.to_crs("EPSG:4326")
    for column in gdf.columns:
        if column != gdf.geometry.name and gdf[column].dtype == object:
            gdf[column] = gdf[column].map(lambda v: v.isoformat() if hasattr(v, "isoformat") else v)
    data: dict[str, Any] = json.loads(gdf.to_json(na="null", drop_id=True))
    return data


@router.get("/{county_code}/{period}/layers/{kind}.geojson", summary="Permits, control lines or townships",
            responses={200: {"content": {"application/geo+json": {}}}})
def layer(
    county_code: CountyPath, period: PeriodPath, kind: LayerKind, user: CurrentUser, session: SessionDep,
    settings: SettingsDep,
) -> JSONResponse:
    """GeoJSON in EPSG:4326 with the canonical fields (``kind`` on control lines: YJJBNT/STBHHX/CZKFBJ)."""
    _visible(user, county_code)
    src = resolve_sources(session, county_code, period, roots=settings.allowed_roots())
    path: Path | None = getattr(src, kind)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=error_detail(
            "kind", f"no {kind} layer known for county {county_code}, period {period}", "path"))
    return JSONResponse(_cached_layer(kind, _file_key(path), str(path)), media_type="application/geo+json")


@lru_cache(maxsize=32)
def _cached_layer(kind: LayerKind, key: str, path: str) -> dict[str, Any]:
    """The layer's GeoJSON, read once per file version (``key``: path, size, mtime) and process."""
    return _layer_geojson(kind, Path(path))


# ------------------------------------------------------------------------- warnings at county scale
#: Polygons are sent while a view holds at most this many warnings; more are sent as points.
MAX_POLYGONS = 3000
#: Most warnings one features request returns (highest priority first); ``truncated`` says when cut.
MAX_FEATURES = 20000


class MapFacet(BaseModel):
    """One filter value with its count."""

    value: str
    name: str | None = None
    count: int


class MapSummary(BaseModel):
    """What the review map needs before it draws: total, extent and the filter choices with counts."""

    county_code: str
    period: str
    total: int
    #: ``[[south, west], [north, east]]`` of all the warnings (Leaflet order), ``null`` when none.
    bounds: list[list[float]] | None
    categories: list[MapFacet]
    statuses: list[MapFacet]
    townships: list[MapFacet]
    landuse: list[MapFacet] = []


def _warning_scope(
    user: ApiUser, county_code: str, period: str, *, category: str | None = None, status: str | None = None,
    township_code: str | None = None, landuse: str | None = None,
) -> list[Any]:
    """Clauses for the warnings of a county and period that ``user`` may see, with the map's filters."""
    from cspon_rs.api.routers.warnings import _categories
    from cspon_rs.store.models import WarningRecord as W

    clauses: list[Any] = [W.county_code == county_code, W.period == period, W.is_warning.is_(True)]
    if user.role == "field":  # as GET /warnings: a field team sees its assigned warnings only
        clauses.append(W.assigned_team == user.team if user.team else W.id.is_(None))
    cats = _categories([category]) if category else None
    if cats:
        clauses.append(W.category.in_(cats))
    if status:
        clauses.append(W.status == status)
    if township_code:
        clauses.append(or_(W.township_code == township_code,
                           and_(W.township_code.is_(None), W.township_name == township_code)))
    if landuse == "cropland":
        clauses.append(W.cropland_m2 > 0)
    elif landuse:
        clauses.append(W.landuse_main.like(f"{landuse[:2]}%"))
    return clauses


CategoryQuery = Annotated[str | None, Query(max_length=64, description="category code or 中文 name")]
StatusQuery = Annotated[str | None, Query(max_length=32, description="status, e.g. new")]
TownshipQuery = Annotated[str | None, Query(max_length=64, description="township code (or name when it has none)")]
LanduseQuery = Annotated[str | None, Query(max_length=16, description="'cropland' or a GB/T 21010 class, e.g. 01")]


@router.get("/{county_code}/{period}/summary", response_model=MapSummary,
            summary="Total, extent and filter choices of a county's warnings of one period")
def summary(county_code: CountyPath, period: PeriodPath, user: CurrentUser, session: SessionDep) -> MapSummary:
    """One grouped query: the review map's filters and its first view, without loading any warning."""
    from cspon_rs.store.models import WarningRecord as W

    _visible(user, county_code)
    scope = _warning_scope(user, county_code, period)
    total, minx, miny, maxx, maxy = session.execute(
        select(func.count(), func.min(W.minx), func.min(W.miny), func.max(W.maxx), func.max(W.maxy)).where(*scope)
    ).one()
    facets: dict[str, list[MapFacet]] = {}
    for name, columns in (("categories", (W.category,)), ("statuses", (W.status,)),
                          ("townships", (W.township_code, W.township_name))):
        rows = session.execute(select(*columns, func.count()).where(*scope).group_by(*columns)).all()
        facets[name] = sorted(
            (MapFacet(value=str(r[0] if r[0] is not None else (r[1] if len(r) > 2 else "") or ""),
                      name=(r[1] if len(r) > 2 else None), count=int(r[-1])) for r in rows),
            key=lambda f: f.value)
    lands: dict[str, int] = {}
    for main, n in session.execute(select(W.landuse_main, func.count()).where(*scope).group_by(W.landuse_main)):
        if main:
            lands[str(main)[:2]] = lands.get(str(main)[:2], 0) + int(n)
    cropland = int(session.execute(select(func.count()).where(*scope, W.cropland_m2 > 0)).scalar_one())
    facets["landuse"] = ([MapFacet(value="cropland", count=cropland)] if cropland else []) + [
        MapFacet(value=k, count=v) for k, v in sorted(lands.items())]
    bounds = [[miny, minx], [maxy, maxx]] if total else None
    return MapSummary(county_code=county_code, period=period, total=int(total), bounds=bounds, **facets)


@router.get("/{county_code}/{period}/features", summary="Warnings inside a map view, compact (EPSG:4326)",
            responses={200: {"content": {"application/json": {}}}})
def features(
    county_code: CountyPath,
    period: PeriodPath,
    user: CurrentUser,
    session: SessionDep,
    bbox: Annotated[str, Query(description="min_lon,min_lat,max_lon,max_lat (EPSG:4326)")],
    category: CategoryQuery = None,
    status_: Annotated[str | None, Query(alias="status", max_length=32)] = None,
    township_code: TownshipQuery = None,
    landuse: LanduseQuery = None,
    max_polygons: Annotated[int, Query(ge=0, le=MAX_POLYGONS)] = MAX_POLYGONS,
) -> Response:
    """The warnings whose bounding box meets ``bbox``, highest priority first, with the few properties the
    map draws (``id``, ``c`` category, ``s`` status, ``r`` field result, ``p`` priority). Up to
    ``max_polygons`` in the view they come as outlines (``g``: GeoJSON geometry, 6 decimals, ~0.1 m);
    more come as points (``pt``: [lon, lat], the representative point), at most :data:`MAX_FEATURES`.
    Everything else of a warning is in ``GET /warnings/{id}`` when it is clicked."""
    import shapely

    from cspon_rs.api.routers.warnings import _bbox
    from cspon_rs.store.models import WarningRecord as W

    _visible(user, county_code)
    minx, miny, maxx, maxy = _bbox(bbox)  # type: ignore[misc]
    scope = [*_warning_scope(user, county_code, period, category=category, status=status_,
                             township_code=township_code, landuse=landuse),
             W.maxx >= minx, W.minx <= maxx, W.maxy >= miny, W.miny <= maxy]
    total = int(session.execute(select(func.count()).where(*scope)).scalar_one())
    polygons = total <= max_polygons
    columns = [W.id, W.category, W.status, W.verification_result, W.priority]
    columns += [W.geometry_wkt] if polygons else [W.centroid_lon, W.centroid_lat]
    rows = session.execute(
        select(*columns).where(*scope).order_by(W.priority.desc(), W.id).limit(MAX_FEATURES)).all()
    parts: list[str] = []
    if polygons and rows:
        geoms = shapely.from_wkt([r[5] for r in rows])
        geoms = shapely.transform(geoms, lambda xy: np.round(xy, 6))
        shapes = shapely.to_geojson(geoms)
    for k, r in enumerate(rows):
        head = {"id": r[0], "c": r[1], "s": r[2], "r": r[3], "p": round(float(r[4] or 0.0), 2)}
        text = json.dumps(head, ensure_ascii=False)[:-1]
        if polygons:
            parts.append(f'{text},"g":{shapes[k]}}}')
        else:
            parts.append(f'{text},"pt":[{r[5]:.6f},{r[6]:.6f}]}}')
    body = (f'{{"total":{total},"mode":"{"polygons" if polygons else "points"}",'
            f'"truncated":{"true" if total > len(rows) else "false"},"features":[{",".join(parts)}]}}')
    return Response(body, media_type="application/json")


class MapListPage(BaseModel):
    """One page of the review map's list (highest priority first)."""

    items: list[WarningOut]
    total: int
    limit: int
    offset: int


@router.get("/{county_code}/{period}/list", response_model=MapListPage,
            summary="The review map's warning list, one page, with the map's filters")
def warning_list(
    county_code: CountyPath,
    period: PeriodPath,
    user: CurrentUser,
    session: SessionDep,
    category: CategoryQuery = None,
    status_: Annotated[str | None, Query(alias="status", max_length=32)] = None,
    township_code: TownshipQuery = None,
    landuse: LanduseQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> MapListPage:
    """Same rows as ``GET /warnings`` (list-view fields), filtered like ``features``."""
    from cspon_rs.api.routers.warnings import warning_out
    from cspon_rs.store.models import WarningRecord as W

    _visible(user, county_code)
    scope = _warning_scope(user, county_code, period, category=category, status=status_,
                           township_code=township_code, landuse=landuse)
    rows = list(session.scalars(select(W).where(*scope).order_by(W.priority.desc(), W.id).limit(limit)
                                .offset(offset)))
    total = offset + len(rows) if len(rows) < limit else int(
        session.execute(select(func.count()).where(*scope)).scalar_one())
    return MapListPage(items=[warning_out(r) for r in rows], total=total, limit=limit, offset=offset)

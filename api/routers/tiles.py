"""XYZ map tiles (Web Mercator, 256 px PNG) of a county's scenes, change probability and change mask.

``GET /api/v1/map/{county}/{period}/tiles/{layer}/{z}/{x}/{y}.png`` with ``layer`` one of

* ``before`` / ``after`` -- bands 1,2,3 of the scene pair (B04,B03,B02 of the demo stacks), linearly
  stretched per band between the 2nd and 98th percentile of low-resolution previews of *both* dates together
  (:func:`cspon_rs.geo.stretch.stretch_limits`, the limits chips and quicklook use), so a tile looks the same
  whichever zoom it was cut at and a brightness change between the dates stays visible;
* ``prob`` -- the detection's ``change_prob.tif`` (0..1, float32), coloured with the ``magma`` colour map,
  transparent below 0.05 and at nodata;
* ``mask`` -- the detection's ``change_mask.tif`` (1 = change) in red, everything else transparent.

Tiles are cut from the files with rio-tiler on the ``WebMercatorQuad`` tile matrix set (morecantile), which
reads from the GeoTIFF's internal overviews when there are any (COG), so a county-sized scene is served at
any zoom without reading it whole. ``GET .../tiles`` says which layers exist, their zoom range and URL
templates. Which files belong to a county and period is decided by :func:`cspon_rs.api.routers.map.resolve_sources`
(the latest succeeded job, else the scene identity stored on the change patches: absolute path + sha256).

Rendered tiles are kept in a process-wide LRU cache bounded by bytes (:data:`TILE_CACHE_BYTES`, env
``CSPON_TILE_CACHE_BYTES``) and sent with ``Cache-Control: private, max-age=86400`` and an ``ETag`` that
changes when a source file changes. Same auth and county scoping as the other map endpoints: a county-bound
user asking for another county gets 403; a tile outside the scene is 404.

Cost bounds (issue #22: z 0 of a county scene ran 6 min of CPU and grew the server by 3.6 GiB): a tile may read
at most ``tile_max_read_px`` source pixels per band (serve setting), so zooms coarser than
:func:`cheap_min_zoom` (which depends on the file's overviews) are refused with ``422`` naming the coarsest
zoom served, and ``GET .../tiles`` gives that zoom as ``minzoom``. Tiles render on a bounded pool
(:class:`TileRenderer`, ``tile_workers`` threads) in their own admission lane, with a wait and a render
budget (``503`` + ``Retry-After`` beyond); a request whose client disconnected while it waited renders nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from cspon_rs.api.deps import CurrentUser, SessionDep, SettingsDep, ensure_county, error_detail
from cspon_rs.api.routers.map import CountyPath, MapSources, PeriodPath, resolve_sources
from cspon_rs.api.settings import ServeSettings

__all__ = [
    "TILE_CACHE_BYTES",
    "TileCache",
    "TileLayer",
    "TileRenderer",
    "TilesOut",
    "cheap_min_zoom",
    "render_tile",
    "router",
]

router = APIRouter(prefix="/map", tags=["map"])

TileLayer = Literal["before", "after", "prob", "mask"]
#: Upper bound of the in-process tile cache in bytes (PNG bytes), 64 MiB unless ``CSPON_TILE_CACHE_BYTES``.
TILE_CACHE_BYTES = int(os.environ.get("CSPON_TILE_CACHE_BYTES", str(64 * 1024 * 1024)))
#: Zoom levels served above the file's native zoom (pixels drawn as blocks, never resampled away).
OVERZOOM = 2
TILESIZE = 256
_MASK_RGBA = (255, 40, 40, 170)
_PROB_FLOOR = 0.05
_HTTP_CACHE = "private, max-age=86400"
#: Quality of the lossy WebP imagery tiles (``.webp``; masks and probability stay PNG).
WEBP_QUALITY = 70


class TileCache:
    """Thread-safe LRU of rendered tiles, bounded by the total size of the stored bytes.

    Args:
        max_bytes: Largest total size kept; the least recently used tiles are dropped beyond it.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= len(old)
            self._items[key] = value
            self.bytes += len(value)
            while self.bytes > self.max_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._items)


_CACHE = TileCache(TILE_CACHE_BYTES)
_STRETCH: dict[str, list[tuple[float, float]]] = {}
_STRETCH_LOCK = threading.Lock()


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _stretch_for(paths: Sequence[Path]) -> list[tuple[float, float]]:
    """Per-band limits of bands 1..3 shared by both dates (``stretch_limits`` of the chips and quicklook),
    from a ≤1024 px preview of each file; cached per file versions."""
    from rio_tiler.io import Reader

    from cspon_rs.geo.stretch import stretch_limits

    key = "|".join(_file_key(p) for p in paths)
    with _STRETCH_LOCK:
        found = _STRETCH.get(key)
    if found is not None:
        return found
    previews = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in paths:
            with Reader(str(path)) as reader:
                preview = reader.preview(indexes=(1, 2, 3), max_size=1024)
            previews.append(np.where(preview.mask > 0, np.ma.getdata(preview.data), np.nan))
    out = stretch_limits(previews)
    with _STRETCH_LOCK:
        _STRETCH[key] = out
    return out


def native_zooms(path: Path) -> tuple[int, int]:
    """``(minzoom, maxzoom)`` of ``path`` on WebMercatorQuad as rio-tiler computes them (maxzoom: native);
    remembered per file version, so a tile request does not open the file once more just to check its zoom."""
    return _native_zooms(_file_key(path), str(path))


@lru_cache(maxsize=256)
def _native_zooms(key: str, path: str) -> tuple[int, int]:
    from rio_tiler.io import Reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Reader(path) as reader:
            return int(reader.minzoom), int(reader.maxzoom)


def cheap_min_zoom(path: Path, max_read_px: int) -> int:
    """Coarsest zoom at which one tile of ``path`` reads at most ``max_read_px`` source pixels per band.

    A tile at zoom ``z`` spans ``256 × 2^(maxzoom - z)`` file pixels per axis (at most the whole file); GDAL
    reads it from the finest overview whose decimation does not exceed that span, so a file without overviews
    is cheap only a few zooms below its native one, a COG with overviews down to its thumbnail at any zoom.
    Remembered per file version.
    """
    return _cheap_min_zoom(_file_key(path), str(path), int(max_read_px))


@lru_cache(maxsize=256)
def _cheap_min_zoom(key: str, path: str, max_read_px: int) -> int:
    import rasterio

    _lo, maxzoom = _native_zooms(key, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as src:
            width, height = src.width, src.height
            factors = sorted({1, *src.overviews(1)})
    best = maxzoom
    for z in range(maxzoom, -1, -1):
        span = TILESIZE * 2 ** (maxzoom - z)
        dec = max(f for f in factors if f <= max(1, span // TILESIZE))
        read = (min(span, width) / dec) * (min(span, height) / dec)
        if read > max_read_px:
            break
        best = z
    return best


def render_tile(
    path: Path, layer: TileLayer, z: int, x: int, y: int, stretch_with: Sequence[Path] = (),
    fmt: Literal["png", "webp"] = "png",
) -> bytes:
    """One 256 px PNG tile of ``path`` for ``layer`` (see the module docs for the styling); imagery
    (``before``/``after``) also as lossy WebP with a lossless alpha channel (``fmt="webp"``, quality
    :data:`WEBP_QUALITY`, about a fifth of the PNG: what the field app downloads for offline use).

    Imagery is stretched with limits shared with ``stretch_with`` (the other date), so a real brightness
    change stays visible when the reviewer switches dates.

    At and above the native zoom pixels are taken by nearest neighbour, so every tile pixel is a file
    pixel; below it overviews are averaged by rio-tiler/GDAL.

    Raises:
        rio_tiler.errors.TileOutsideBounds: The tile does not touch the file.
    """
    from rio_tiler.colormap import cmap
    from rio_tiler.io import Reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Reader(str(path)) as reader:
            native = z >= reader.maxzoom
            resampling = "nearest" if native or layer == "mask" else "average"
            indexes = (1, 2, 3) if layer in ("before", "after") else (1,)
            img = reader.tile(x, y, z, tilesize=TILESIZE, indexes=indexes, resampling_method=resampling,
                              reproject_method="nearest")
    if layer in ("before", "after"):
        ranges = _stretch_for([path, *stretch_with])
        img = img.rescale(in_range=ranges)
        if fmt == "webp":
            return _webp(np.concatenate([np.ma.getdata(img.data).astype(np.uint8), img.mask[None].astype(np.uint8)]))
        rendered: bytes = img.render(img_format="PNG")
        return rendered
    band = np.ma.getdata(img.data[0]).astype("float64")
    valid = img.mask > 0
    if layer == "mask":
        on = valid & (band == 1)
        rgba = np.zeros((4, TILESIZE, TILESIZE), dtype=np.uint8)
        for i, v in enumerate(_MASK_RGBA):
            rgba[i][on] = v
    else:
        on = valid & (band >= _PROB_FLOOR) & (band <= 1.0)
        lut = np.array([cmap.get("magma")[i] for i in range(256)], dtype=np.uint8)  # (256, 4)
        idx = np.clip(np.round(band * 255), 0, 255).astype(np.int64)
        rgba = lut[idx].transpose(2, 0, 1).copy()
        rgba[3] = np.where(on, 200, 0).astype(np.uint8)
    return _png(rgba)


def _webp(rgba: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba.transpose(1, 2, 0)), mode="RGBA").save(
        buf, format="WEBP", quality=WEBP_QUALITY, method=4, alpha_quality=100)
    return buf.getvalue()


def _png(rgba: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba.transpose(1, 2, 0)), mode="RGBA").save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- endpoints


def layer_paths(src: MapSources) -> dict[str, Path]:
    """The files behind each tile layer that exist on this server (``before``/``after``/``prob``/``mask``)."""
    found: dict[str, Path] = {}
    for name in ("before", "after", "prob", "mask"):
        path: Path | None = getattr(src, name)
        if path is not None and path.is_file():
            found[name] = path
    return found


class TileLayerOut(BaseModel):
    """One tile layer: URL template (``{z}/{x}/{y}`` as Leaflet wants it) and zoom range."""

    url: str
    minzoom: int
    #: Native zoom of the file (tile pixel ≈ file pixel); tiles are served up to ``max_native_zoom + 2``.
    max_native_zoom: int
    date: str | None = None


class TilesOut(BaseModel):
    """The tile layers of a county and period."""

    county_code: str
    period: str
    #: ``[[south, west], [north, east]]`` of the before scene in degrees.
    bounds: list[list[float]] | None
    layers: dict[str, TileLayerOut]
    notes: list[str]


@router.get("/{county_code}/{period}/tiles", response_model=TilesOut,
            summary="Tile layers (imagery, change probability, change mask) of a county and period")
def tiles_index(
    county_code: CountyPath, period: PeriodPath, user: CurrentUser, session: SessionDep, settings: SettingsDep,
) -> TilesOut:
    """URL templates for ``L.tileLayer`` and the zoom range of each layer that exists on this server;
    ``minzoom`` is the coarsest zoom served (tiles below it would read too much of the file, see ``tile``)."""
    ensure_county(user, county_code)
    src = resolve_sources(session, county_code, period, roots=settings.allowed_roots())
    session.commit()
    base = f"/api/v1/map/{county_code}/{period}/tiles"
    layers: dict[str, TileLayerOut] = {}
    notes = list(src.notes)
    bounds: list[list[float]] | None = None
    for name, path in layer_paths(src).items():
        try:
            lo, hi = native_zooms(path)
        except Exception as exc:  # unreadable file: the map still works without this layer
            notes.append(f"{name}: unreadable ({exc})")
            continue
        date = src.before_date if name == "before" else src.after_date if name == "after" else None
        cheap = cheap_min_zoom(path, settings.tile_max_read_px)
        layers[name] = TileLayerOut(url=f"{base}/{name}/{{z}}/{{x}}/{{y}}.png", minzoom=max(0, lo - 2, cheap),
                                    max_native_zoom=hi, date=date)
        if name == "before":
            from rio_tiler.io import Reader

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Reader(str(path)) as reader:
                    w, s, e, n = reader.get_geographic_bounds("EPSG:4326")
            bounds = [[s, w], [n, e]]
    return TilesOut(county_code=county_code, period=period, bounds=bounds, layers=layers, notes=notes)


class TileRenderer:
    """A bounded pool that renders tiles: ``workers`` threads, a wait of at most ``wait_s`` for one and a
    render budget of ``budget_s`` that a client waits for (a render past it still finishes into the cache,
    but the pool stays bounded: a slot is freed only when its render ends). A request whose client has gone
    away while it waits for a thread is dropped before it renders anything."""

    def __init__(self, workers: int, wait_s: float, budget_s: float) -> None:
        import concurrent.futures

        self.pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="tile")
        self.workers = workers
        self.wait_s = wait_s
        self.budget_s = budget_s
        self._sem: asyncio.Semaphore | None = None

    async def run(self, request: Request, fn: Callable[[], bytes]) -> bytes | None:
        """``fn()`` on the pool; ``None`` when the client went away before it started. 503 when busy/slow."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.workers)
        sem = self._sem
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                await asyncio.wait_for(sem.acquire(), min(0.25, max(0.01, deadline - time.monotonic())))
                break
            except TimeoutError:
                if await request.is_disconnected():
                    return None
                if time.monotonic() >= deadline:
                    raise _busy(f"every tile renderer stayed busy for {self.wait_s:g} s") from None
        future = asyncio.get_running_loop().run_in_executor(self.pool, fn)
        future.add_done_callback(lambda _f: sem.release())
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.budget_s)
        except TimeoutError:
            raise _busy(f"the tile took over {self.budget_s:g} s to render; it is cached when done") from None


def _busy(msg: str) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=error_detail("z", f"{msg}; retry shortly",
                         "path"), headers={"Retry-After": "2"})


def _renderer(request: Request, settings: ServeSettings) -> TileRenderer:
    renderer: TileRenderer | None = getattr(request.app.state, "tile_renderer", None)
    if renderer is None:
        renderer = TileRenderer(settings.tile_workers, settings.tile_wait_s, settings.tile_budget_s)
        request.app.state.tile_renderer = renderer
    return renderer


_TILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "the tile"},
    304: {"description": "not modified (If-None-Match)"},
    404: {"description": "tile outside the raster, no such layer, or a zoom above max_native_zoom + 2"},
    422: {"description": "a zoom coarser than the raster serves cheaply (detail names the coarsest zoom), or "
          "bad path values"},
    503: {"description": "tile renderers busy or the render ran over its budget; retry after Retry-After"},
}


@router.get("/{county_code}/{period}/tiles/{layer}/{z}/{x}/{y}.png", summary="One XYZ tile (Web Mercator)",
            response_class=Response, responses=_TILE_RESPONSES)
@router.get("/{county_code}/{period}/tiles/{layer}/{z}/{x}/{y}.webp", response_class=Response,
            summary="One XYZ imagery tile (before/after) as WebP, about a fifth of the PNG (offline downloads)")
async def tile(
    county_code: CountyPath,
    period: PeriodPath,
    layer: TileLayer,
    z: Annotated[int, PathParam(ge=0, le=24)],
    x: Annotated[int, PathParam(ge=0)],
    y: Annotated[int, PathParam(ge=0)],
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """PNG with an alpha channel; 404 outside the scene or above ``max_native_zoom + 2``; 422 below the
    coarsest zoom the file serves cheaply (``minzoom`` of ``GET .../tiles``: at most ``tile_max_read_px``
    source pixels per tile); rendered on a bounded pool (503 when it stays busy)."""
    from rio_tiler.errors import TileOutsideBounds

    ensure_county(user, county_code)
    if x >= 2**z or y >= 2**z:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=error_detail(
            "x", f"tile {z}/{x}/{y} does not exist (x and y must be below 2^z)", "path"))

    def sources() -> MapSources:
        found = resolve_sources(session, county_code, period, roots=settings.allowed_roots())
        session.commit()
        return found

    src = await run_in_threadpool(sources)
    paths = layer_paths(src)
    path = paths.get(layer)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=error_detail(
            "layer", f"no {layer} raster known on this server for county {county_code}, period {period}"
            + (f" ({'; '.join(src.notes)})" if src.notes else ""), "path"))
    partner = [paths[d] for d in ("before", "after") if layer in ("before", "after") and d != layer and d in paths]
    fmt: Literal["png", "webp"] = "webp" if request.url.path.endswith(".webp") else "png"
    if fmt == "webp" and layer not in ("before", "after"):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=error_detail(
            "layer", f"{layer} tiles are PNG only (WebP is for the before/after imagery)", "path"))
    key = f"{'|'.join(_file_key(p) for p in (path, *partner))}|{layer}|{z}/{x}/{y}" + ("|webp" if fmt == "webp" else "")
    etag = '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'
    headers = {"Cache-Control": _HTTP_CACHE, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    body = _CACHE.get(key)
    if body is None:
        _, maxzoom = await run_in_threadpool(native_zooms, path)
        if z > maxzoom + OVERZOOM:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=error_detail(
                "z", f"zoom {z} is above {maxzoom + OVERZOOM} (native zoom {maxzoom} + {OVERZOOM})", "path"))
        coarsest = await run_in_threadpool(cheap_min_zoom, path, settings.tile_max_read_px)
        if z < coarsest:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=error_detail(
                "z", f"zoom {z} is coarser than {coarsest}, the coarsest zoom the {layer} raster serves "
                f"(a tile below it would read over {settings.tile_max_read_px} pixels of the file; add overviews "
                f"with gdaladdo to serve coarser zooms); request zoom {coarsest} or finer", "path"))

        def render() -> bytes:
            out = render_tile(path, layer, z, x, y, stretch_with=partner, fmt=fmt)
            _CACHE.put(key, out)
            return out

        try:
            rendered = await _renderer(request, settings).run(request, render)
        except TileOutsideBounds:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=error_detail(
                "x", f"tile {z}/{x}/{y} lies outside the {layer} raster of county {county_code}", "path"),
                headers={"Cache-Control": _HTTP_CACHE}) from None
        if rendered is None:  # the client went away before its tile was rendered
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        body = rendered
    return Response(content=body, media_type=f"image/{fmt}", headers=headers)

"""Before/after image chips of warnings (PNG), for the list, the API and field teams.

For each warning only a window around the patch is read (``rasterio.windows.from_bounds``) from the
before scene and from the after scene warped on the fly onto the before grid
(:func:`cspon_rs.geo.raster.aligned_pair`). Both are contrast-stretched with the same 2-98 % percentiles
(so brightness differences stay visible), upscaled, drawn side by side with the patch outline (red) and
permit outlines (yellow), and written to a temporary name that is renamed into place.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
from PIL import Image, ImageDraw
from pyproj import CRS
from rasterio.windows import Window, from_bounds
from shapely.geometry.base import BaseGeometry
from tqdm import tqdm

from cspon_rs.errors import BandMismatchError
from cspon_rs.geo.raster import aligned_pair

__all__ = ["stretch_pair", "write_chips"]

_HEADER_PX = 22


def stretch_pair(before: np.ndarray, after: np.ndarray, *, low: float = 2.0, high: float = 98.0,
                 nodata: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stretch two ``(bands, h, w)`` arrays to uint8 with shared per-band percentiles.

    Returns:
        Two ``(h, w, bands)`` uint8 arrays.
    """
    out_a = np.zeros((*before.shape[1:], before.shape[0]), dtype=np.uint8)
    out_b = np.zeros((*after.shape[1:], after.shape[0]), dtype=np.uint8)
    for band in range(before.shape[0]):
        a = before[band].astype(np.float64)
        b = after[band].astype(np.float64)
        values = np.concatenate([a.ravel(), b.ravel()])
        values = values[np.isfinite(values)]
        if nodata is not None:
            values = values[values != nodata]
        if values.size == 0:
            continue
        lo, hi = np.percentile(values, [low, high])
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        out_a[..., band] = np.clip((a - lo) * scale, 0, 255).astype(np.uint8)
        out_b[..., band] = np.clip((b - lo) * scale, 0, 255).astype(np.uint8)
    return out_a, out_b


def _rings(geom: BaseGeometry) -> list[Any]:
    if geom.is_empty:
        return []
    if geom.geom_type == "Polygon":
        return [geom.exterior, *geom.interiors]
    if hasattr(geom, "geoms"):
        return [ring for part in geom.geoms for ring in _rings(part)]
    return [geom]


def _draw(image: Image.Image, geom: BaseGeometry, to_pixel: Any, colour: tuple[int, int, int], width: int) -> None:
    draw = ImageDraw.Draw(image)
    for ring in _rings(geom):
        coords = [to_pixel(x, y) for x, y in ring.coords]
        if len(coords) >= 2:
            draw.line(coords, fill=colour, width=width)


def _safe_name(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]+", "_", text)


def write_chips(
    warnings: gpd.GeoDataFrame,
    before: str | Path,
    after: str | Path,
    out_dir: str | Path,
    *,
    permits: gpd.GeoDataFrame | None = None,
    rgb_bands: tuple[int, int, int] = (1, 2, 3),
    margin: float = 0.5,
    min_size_px: int = 48,
    out_px: int = 256,
    progress: bool = True,
) -> dict[str, Path]:
    """Write one before/after PNG per warning, named ``<warning_id>.png``.

    Args:
        warnings: Warnings with ``warning_id`` (or ``source_key``); any CRS.
        before: Before scene (its grid is the reference).
        after: After scene (warped onto the before grid when needed).
        out_dir: Folder for the PNGs (created).
        permits: Permit polygons drawn in yellow when given (any CRS).
        rgb_bands: 1-based band numbers shown as red, green, blue (B04,B03,B02 = 1,2,3 for the
            cspon-rs 4-band stacks).
        margin: Extra context around the patch, as a fraction of its larger side.
        min_size_px: Smallest window side in source pixels.
        out_px: Side of each panel in the PNG.
        progress: Show a tqdm bar.

    Returns:
        Warning id → PNG path, for the warnings that intersect the scene.

    Raises:
        BandMismatchError: A band of ``rgb_bands`` does not exist in the scenes.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    ids = warnings["warning_id"] if "warning_id" in warnings.columns else warnings["source_key"]
    with aligned_pair(before, after) as (src_a, src_b):
        if max(rgb_bands) > src_a.count:
            raise BandMismatchError(f"{before}: has {src_a.count} bands, chips need bands {rgb_bands}")
        crs = CRS.from_user_input(src_a.crs)
        geoms = warnings.to_crs(crs).geometry
        permit_geoms = list(permits.to_crs(crs).geometry) if permits is not None and len(permits) else []
        full = Window(0, 0, src_a.width, src_a.height)
        res = max(abs(src_a.transform.a), abs(src_a.transform.e))
        iterator = tqdm(list(zip(ids, geoms, strict=True)), desc="chips", unit="chip", disable=not progress)
        for warning_id, geom in iterator:
            if geom is None or geom.is_empty:
                continue
            minx, miny, maxx, maxy = geom.bounds
            side = max(maxx - minx, maxy - miny, min_size_px * res)
            pad = side * margin + (side - min(maxx - minx, maxy - miny)) / 2
            cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
            half = side / 2 + pad / 2
            window = from_bounds(cx - half, cy - half, cx + half, cy + half, transform=src_a.transform)
            window = window.round_offsets().round_lengths()
            try:
                window = window.intersection(full)
            except Exception:  # rasterio WindowError: the warning lies outside the scene
                continue
            if window.width < 2 or window.height < 2:
                continue
            a = src_a.read(list(rgb_bands), window=window)
            b = src_b.read(list(rgb_bands), window=window)
            img_a, img_b = stretch_pair(a, b, nodata=src_a.nodata)
            scale = out_px / max(window.width, window.height)
            size = (max(1, round(window.width * scale)), max(1, round(window.height * scale)))
            win_transform = src_a.window_transform(window)
            inverse = ~win_transform

            def to_pixel(x: float, y: float, inv: Any = inverse, s: float = scale) -> tuple[float, float]:
                col, row = inv @ (x, y)
                return col * s, row * s

            panels = []
            for array in (img_a, img_b):
                panel = Image.fromarray(array, mode="RGB").resize(size, Image.Resampling.BILINEAR)
                for permit in permit_geoms:
                    if permit.intersects(geom.buffer(half * 2)):
                        _draw(panel, permit, to_pixel, (255, 220, 0), 2)
                _draw(panel, geom, to_pixel, (255, 40, 40), 2)
                panels.append(panel)
            canvas = Image.new("RGB", (size[0] * 2 + 6, size[1] + _HEADER_PX), (255, 255, 255))
            canvas.paste(panels[0], (0, _HEADER_PX))
            canvas.paste(panels[1], (size[0] + 6, _HEADER_PX))
            draw = ImageDraw.Draw(canvas)
            draw.text((4, 5), f"before  {warning_id}", fill=(0, 0, 0))
            draw.text((size[0] + 10, 5), "after", fill=(0, 0, 0))
            target = out / f"{_safe_name(str(warning_id))}.png"
            fd, tmp_name = tempfile.mkstemp(prefix=".chip.", suffix=".png", dir=out)
            os.close(fd)
            try:
                canvas.save(tmp_name, format="PNG")
                os.replace(tmp_name, target)
            finally:
                if os.path.exists(tmp_name):
                    os.unlink(tmp_name)
            written[str(warning_id)] = target
    return written

"""Before/after image chips of warnings (PNG), for the list, the report, the API and field teams.

For each warning only a window around the patch is read (``rasterio.windows.from_bounds``) from the
before scene and from the after scene warped on the fly onto the before grid
(:func:`cspon_rs.geo.raster.aligned_pair`). Both dates share one contrast stretch
(:func:`cspon_rs.geo.stretch.common_stretch`), so brightness differences stay visible. Each chip carries a
header (id, category in Chinese and English, area in m² and 亩, model confidence), the date of each
panel, a scale bar, a north arrow and a bilingual legend. The change patch is outlined in solid red;
permit polygons in dashed yellow -- for 批而不建 the warning *is* a permit, so it is drawn as a permit
(dashed yellow), never as change. Windows are at least ``min_extent_m`` wide so that patches of a few
pixels stay readable. Files are written under a temporary name and renamed into place (mode 0644).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo
from pyproj import CRS, Transformer
from rasterio.windows import Window, from_bounds
from shapely.geometry.base import BaseGeometry
from tqdm import tqdm

from cspon_rs.errors import BandMismatchError
from cspon_rs.exports.fileio import publish
from cspon_rs.exports.fonts import pil_font
from cspon_rs.geo.raster import aligned_pair
from cspon_rs.geo.stretch import common_stretch
from cspon_rs.rules.config import CATEGORY_ZH

__all__ = ["CHANGE_RGB", "PERMIT_RGB", "chip_metadata", "nice_length", "stretch_pair", "write_chips"]

#: Outline colour of the change patch (solid).
CHANGE_RGB = (255, 40, 40)
#: Outline colour of permit polygons (dashed).
PERMIT_RGB = (255, 220, 0)
_HEADER_PX = 62
_FOOTER_PX = 24
_GAP_PX = 6


def stretch_pair(before: np.ndarray, after: np.ndarray, *, low: float = 2.0, high: float = 98.0,
                 nodata: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stretch two ``(bands, h, w)`` arrays to ``(h, w, bands)`` uint8 with shared per-band percentiles."""
    a, b = common_stretch([before, after], low=low, high=high, nodata=nodata)
    return a, b


def nice_length(target: float) -> float:
    """The largest 1/2/5 × 10^k value not above ``target`` (> 0), for scale bars."""
    if target <= 0:
        return 0.0
    exponent = math.floor(math.log10(target))
    for step in (5.0, 2.0, 1.0):
        value = step * math.pow(10.0, exponent)
        if value <= target:
            return value
    return 5.0 * math.pow(10.0, exponent - 1)


def _rings(geom: BaseGeometry) -> list[Any]:
    if geom.is_empty:
        return []
    if geom.geom_type == "Polygon":
        return [geom.exterior, *geom.interiors]
    if hasattr(geom, "geoms"):
        return [ring for part in geom.geoms for ring in _rings(part)]
    return [geom]


def _draw(image: Image.Image, geom: BaseGeometry, to_pixel: Any, colour: tuple[int, int, int], width: int,
          *, dash: float = 0.0) -> None:
    draw = ImageDraw.Draw(image)
    for ring in _rings(geom):
        coords = [to_pixel(x, y) for x, y in ring.coords]
        if len(coords) < 2:
            continue
        if dash <= 0:
            draw.line(coords, fill=colour, width=width)
            continue
        on, left = True, dash
        for (x0, y0), (x1, y1) in itertools.pairwise(coords):
            length = math.hypot(x1 - x0, y1 - y0)
            pos = 0.0
            while pos < length:
                step = min(left, length - pos)
                if on:
                    t0, t1 = pos / length, (pos + step) / length
                    draw.line([(x0 + (x1 - x0) * t0, y0 + (y1 - y0) * t0), (x0 + (x1 - x0) * t1, y0 + (y1 - y0) * t1)],
                              fill=colour, width=width)
                pos += step
                left -= step
                if left <= 1e-9:
                    on, left = not on, dash
            if length == 0:
                continue


def _metres_per_unit(crs: CRS, lat: float) -> float:
    if crs.is_geographic:
        return 111_320.0 * max(math.cos(math.radians(lat)), 1e-6)
    return float(crs.axis_info[0].unit_conversion_factor) if crs.axis_info else 1.0


def _scale_bar(panel: Image.Image, metres_per_px: float) -> None:
    draw = ImageDraw.Draw(panel)
    width, height = panel.size
    length_m = nice_length(width * 0.3 * metres_per_px)
    if length_m <= 0:
        return
    px = length_m / metres_per_px
    x0, y0 = 8, height - 12
    draw.rectangle([x0 - 3, y0 - 16, x0 + px + 3, y0 + 6], fill=(255, 255, 255))
    draw.line([(x0, y0), (x0 + px, y0)], fill=(0, 0, 0), width=3)
    for x in (x0, x0 + px):
        draw.line([(x, y0 - 5), (x, y0 + 3)], fill=(0, 0, 0), width=2)
    label = f"{length_m / 1000:g} km" if length_m >= 1000 else f"{length_m:g} m"
    draw.text((x0 + 2, y0 - 16), label, fill=(0, 0, 0), font=pil_font(11))  # type: ignore[arg-type]


def _north_arrow(panel: Image.Image) -> None:
    draw = ImageDraw.Draw(panel)
    x, y = panel.size[0] - 16, 8
    draw.rectangle([x - 10, y - 4, x + 10, y + 32], fill=(255, 255, 255))
    draw.polygon([(x, y), (x - 7, y + 16), (x, y + 12)], fill=(0, 0, 0))
    draw.polygon([(x, y), (x + 7, y + 16), (x, y + 12)], outline=(0, 0, 0), fill=(255, 255, 255))
    draw.text((x - 4, y + 16), "N", fill=(0, 0, 0), font=pil_font(12))  # type: ignore[arg-type]


def _date_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "?"
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)[:10]


def _safe_name(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]+", "_", text)


def _row_value(row: Any, name: str) -> Any:
    return row[name] if name in row.index else None


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
    min_extent_m: float = 150.0,
    out_px: int = 256,
    progress: bool = True,
) -> dict[str, Path]:
    """Write one before/after PNG per warning, named ``<warning_id>.png``.

    Args:
        warnings: Warnings with ``warning_id`` (or ``source_key``), ``category`` and optionally ``area_m2``,
            ``area_mu``, ``confidence``, ``t1``, ``t2``; any CRS.
        before: Before scene (its grid is the reference).
        after: After scene (warped onto the before grid when needed).
        out_dir: Folder for the PNGs (created).
        permits: Permit polygons drawn dashed yellow when given (any CRS).
        rgb_bands: 1-based band numbers shown as red, green, blue (B04,B03,B02 = 1,2,3 for the
            cspon-rs 4-band stacks).
        margin: Extra context around the patch, as a fraction of its larger side.
        min_size_px: Smallest window side in source pixels.
        min_extent_m: Smallest window side in metres (tiny patches keep readable context).
        out_px: Side of each image panel in the PNG.
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
        frame = warnings.to_crs(crs)
        permit_geoms = list(permits.to_crs(crs).geometry) if permits is not None and len(permits) else []
        full = Window(0, 0, src_a.width, src_a.height)
        res = max(abs(src_a.transform.a), abs(src_a.transform.e))
        lat0 = 0.0
        if len(frame):
            minx0, miny0, maxx0, maxy0 = frame.total_bounds
            to_ll = Transformer.from_crs(crs, 4326, always_xy=True)
            lat0 = float(to_ll.transform((minx0 + maxx0) / 2, (miny0 + maxy0) / 2)[1])
        unit_m = _metres_per_unit(crs, lat0)
        rows = list(zip(ids, frame.iterrows(), strict=True))
        for warning_id, (_, row) in tqdm(rows, desc="chips", unit="chip", disable=not progress):
            geom = row.geometry
            if geom is None or geom.is_empty:
                continue
            minx, miny, maxx, maxy = geom.bounds
            side = max(maxx - minx, maxy - miny, min_size_px * res, min_extent_m / unit_m)
            half = side * (1 + margin) / 2
            cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
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
            inverse = ~src_a.window_transform(window)

            def to_pixel(x: float, y: float, inv: Any = inverse, s: float = scale) -> tuple[float, float]:
                col, r = inv @ (x, y)
                return col * s, r * s

            category = str(_row_value(row, "category") or "")
            is_permit_row = category == "approved_not_built"
            nearby = geom.buffer(half * 2)
            panels = []
            for array in (img_a, img_b):
                panel = Image.fromarray(array, mode="RGB").resize(size, Image.Resampling.BILINEAR)
                for permit in permit_geoms:
                    if permit.intersects(nearby):
                        _draw(panel, permit, to_pixel, PERMIT_RGB, 2, dash=7)
                if is_permit_row:
                    _draw(panel, geom, to_pixel, PERMIT_RGB, 3, dash=7)
                else:
                    _draw(panel, geom, to_pixel, CHANGE_RGB, 2)
                _scale_bar(panel, unit_m * res / scale)
                _north_arrow(panel)
                panels.append(panel)
            canvas = _compose(panels, size, warning_id, row, is_permit_row)
            target = out / f"{_safe_name(str(warning_id))}.png"
            fd, tmp_name = tempfile.mkstemp(prefix=".chip.", suffix=".png", dir=out)
            os.close(fd)
            try:
                canvas.save(tmp_name, format="PNG", pnginfo=_png_info(chip_metadata(warning_id, row)))
                publish(Path(tmp_name), target)
            finally:
                if os.path.exists(tmp_name):
                    os.unlink(tmp_name)
            written[str(warning_id)] = target
    return written


def chip_metadata(warning_id: Any, row: Any) -> dict[str, str]:
    """What a chip shows, as PNG text chunks (``tEXt``/``iTXt``): id, category, dates, area, confidence."""
    category = str(_row_value(row, "category") or "")
    area, area_mu, confidence = (_row_value(row, k) for k in ("area_m2", "area_mu", "confidence"))
    meta = {
        "warning_id": str(warning_id), "category": category, "category_zh": CATEGORY_ZH.get(category, category),
        "t1": _date_text(_row_value(row, "t1")), "t2": _date_text(_row_value(row, "t2")),
        "Software": "cspon-rs",
    }
    if area is not None and not pd_isna(area):
        meta["area_m2"] = f"{float(area):.2f}"
        mu = float(area_mu) if area_mu is not None and not pd_isna(area_mu) else float(area) / (10000 / 15)
        meta["area_mu"] = f"{mu:.4f}"
    if confidence is not None and not pd_isna(confidence):
        meta["confidence"] = f"{float(confidence):.4f}"
    return meta


def _png_info(meta: dict[str, str]) -> PngInfo:
    info = PngInfo()
    for key, value in meta.items():
        if value.isascii():
            info.add_text(key, value)
        else:
            info.add_itxt(key, value)
    return info


def _compose(panels: list[Image.Image], size: tuple[int, int], warning_id: Any, row: Any,
             is_permit_row: bool) -> Image.Image:
    width = max(size[0] * 2 + _GAP_PX, 420)
    canvas = Image.new("RGB", (width, size[1] + _HEADER_PX + _FOOTER_PX), (255, 255, 255))
    canvas.paste(panels[0], (0, _HEADER_PX))
    canvas.paste(panels[1], (size[0] + _GAP_PX, _HEADER_PX))
    draw = ImageDraw.Draw(canvas)
    category = str(_row_value(row, "category") or "")
    zh = CATEGORY_ZH.get(category, category)
    area = _row_value(row, "area_m2")
    area_mu = _row_value(row, "area_mu")
    confidence = _row_value(row, "confidence")
    parts: list[str] = []
    if area is not None and not (isinstance(area, float) and np.isnan(area)):
        mu = float(area_mu) if area_mu is not None and not pd_isna(area_mu) else float(area) / (10000 / 15)
        parts.append(f"{float(area):,.0f} m² / {mu:.2f} 亩")
    if confidence is not None and not pd_isna(confidence):
        parts.append(f"置信度 conf. {float(confidence):.2f}")
    draw.text((4, 2), f"{warning_id}  {zh} {category}", fill=(0, 0, 0), font=pil_font(13))  # type: ignore[arg-type]
    draw.text((4, 21), "  ".join(parts), fill=(0, 0, 0), font=pil_font(13))  # type: ignore[arg-type]
    t1, t2 = _date_text(_row_value(row, "t1")), _date_text(_row_value(row, "t2"))
    draw.text((4, 41), f"前时相 before {t1}", fill=(0, 0, 0), font=pil_font(13))  # type: ignore[arg-type]
    draw.text((size[0] + _GAP_PX + 4, 41), f"后时相 after {t2}", fill=(0, 0, 0),
              font=pil_font(13))  # type: ignore[arg-type]
    y = _HEADER_PX + size[1] + 5
    x = 4
    if not is_permit_row:
        draw.line([(x, y + 7), (x + 22, y + 7)], fill=CHANGE_RGB, width=3)
        draw.text((x + 26, y), "变化图斑 change", fill=(0, 0, 0), font=pil_font(12))  # type: ignore[arg-type]
        x += 150
    for k in range(0, 22, 10):
        draw.line([(x + k, y + 7), (x + min(k + 6, 22), y + 7)], fill=(200, 170, 0), width=3)
    label = "批准范围(未建设) permit, not built" if is_permit_row else "批准用地 permit"
    draw.text((x + 26, y), label, fill=(0, 0, 0), font=pil_font(12))  # type: ignore[arg-type]
    return canvas


def pd_isna(value: Any) -> bool:
    """True for None/NaN/NA (a scalar test that never raises)."""
    try:
        return bool(value is None or value != value)
    except (TypeError, ValueError):
        return False

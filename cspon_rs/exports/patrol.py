"""Patrol files for field teams: KML, GPX waypoints or GeoJSON of selected warnings, in route order.

Waypoints (a representative point inside each warning, EPSG:4326) are ordered into a short open route
from a start point: nearest neighbour, then 2-opt, on distances in a projected CRS
(:func:`cspon_rs.geo.crs.area_crs_for`). Files are written with GDAL drivers through pyogrio (KML, GPX,
GeoJSON) to a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import Point

from cspon_rs.errors import SchemaError
from cspon_rs.geo.crs import SQM_PER_MU, area_crs_for
from cspon_rs.rules.config import CATEGORY_ZH

__all__ = ["PatrolResult", "order_route", "route_length", "write_patrol"]

PatrolFormat = Literal["kml", "gpx", "geojson"]


@dataclass(frozen=True)
class PatrolResult:
    """A written patrol file: its path, the warning ids in visiting order and the route length (m)."""

    path: Path
    order: list[str]
    length_m: float


def route_length(points: np.ndarray, start: np.ndarray, order: list[int]) -> float:
    """Length of the open path start → points[order[0]] → ... (same units as the coordinates)."""
    path = np.vstack([start[None, :], points[order]]) if order else start[None, :]
    return float(np.sum(np.hypot(*np.diff(path, axis=0).T))) if len(path) > 1 else 0.0


def order_route(points: np.ndarray, start: tuple[float, float] | np.ndarray, *, max_passes: int = 50) -> list[int]:
    """Order points into a short open route from ``start``: nearest neighbour, then 2-opt.

    Args:
        points: ``(n, 2)`` projected coordinates (metres).
        start: Projected start coordinate.
        max_passes: Upper bound on 2-opt improvement passes.

    Returns:
        Indices into ``points`` in visiting order.
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    origin = np.asarray(start, dtype=float)
    n = len(pts)
    if n == 0:
        return []
    remaining = set(range(n))
    order: list[int] = []
    current = origin
    while remaining:
        idx = sorted(remaining)
        dist = np.hypot(*(pts[idx] - current).T)
        best = idx[int(np.argmin(dist))]
        order.append(best)
        remaining.remove(best)
        current = pts[best]
    nodes = np.vstack([origin[None, :], pts])  # node 0 = start, node k+1 = point k

    def d(a: int, b: int) -> float:
        return math.hypot(*(nodes[a] - nodes[b]))

    tour = [0, *(k + 1 for k in order)]
    for _ in range(max_passes):
        improved = False
        for i in range(1, len(tour) - 1):
            for j in range(i + 1, len(tour)):
                a, b = tour[i - 1], tour[i]
                c = tour[j]
                nxt = tour[j + 1] if j + 1 < len(tour) else None
                before = d(a, b) + (d(c, nxt) if nxt is not None else 0.0)
                after = d(a, c) + (d(b, nxt) if nxt is not None else 0.0)
                if after < before - 1e-9:
                    tour[i: j + 1] = reversed(tour[i: j + 1])
                    improved = True
        if not improved:
            break
    return [k - 1 for k in tour[1:]]


def _write(out: gpd.GeoDataFrame, path: Path, driver: str, layer: str | None, options: dict[str, Any]) -> None:
    """Write into a private temporary folder beside ``path`` (keeping the file name), then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
    tmp = tmpdir / path.name
    try:
        if layer is not None:
            options = {**options, "layer": layer}
        out.to_file(tmp, driver=driver, engine="pyogrio", **options)
        os.replace(tmp, path)
    finally:
        for leftover in tmpdir.glob("*"):
            leftover.unlink()
        tmpdir.rmdir()


def _describe(row: pd.Series) -> str:
    reasons = row.get("reasons")
    zh = row.get("reason_zh") or "；".join(r.get("zh", "") for r in (reasons or []) if isinstance(r, dict))
    en = row.get("reason_en") or "; ".join(r.get("en", "") for r in (reasons or []) if isinstance(r, dict))
    category = str(row.get("category"))
    area = float(row.get("area_m2") or 0.0)
    flags = row.get("flags") or []
    return (
        f"{row['warning_id']} | {CATEGORY_ZH.get(category, category)} {category} | "
        f"{area:.0f} m² ({area / SQM_PER_MU:.2f} 亩 mu)"
        + (f" | {', '.join(flags)}" if flags else "")
        + f" | 疑似 suspected | {zh} | {en}"
    )


def write_patrol(
    warnings: gpd.GeoDataFrame,
    path: str | Path,
    *,
    start_lonlat: tuple[float, float],
    fmt: PatrolFormat | None = None,
) -> PatrolResult:
    """Write selected warnings as patrol waypoints in route order.

    Args:
        warnings: Warnings with ``warning_id`` (or ``id``), ``category``, ``area_m2``, reasons; any CRS.
        path: Output file (``.kml``, ``.gpx``, ``.geojson``/``.json``).
        start_lonlat: Where the team starts (longitude, latitude in EPSG:4326).
        fmt: ``kml`` | ``gpx`` | ``geojson``; guessed from the suffix when omitted.

    Returns:
        A :class:`PatrolResult`.

    Raises:
        SchemaError: Unknown format, or no warnings given.
    """
    path = Path(path)
    fmt = fmt or {".kml": "kml", ".gpx": "gpx", ".geojson": "geojson", ".json": "geojson"}.get(  # type: ignore[assignment]
        path.suffix.lower()
    )
    if fmt not in ("kml", "gpx", "geojson"):
        raise SchemaError(f"{path}: unknown patrol format {fmt!r}; use kml, gpx or geojson")
    if len(warnings) == 0:
        raise SchemaError("no warnings selected for the patrol")
    frame = warnings.copy()
    if "warning_id" not in frame.columns:
        frame["warning_id"] = frame["id"] if "id" in frame.columns else frame["source_key"]
    points = frame.geometry.representative_point()
    points_84 = gpd.GeoSeries(points, crs=frame.crs).to_crs(4326)
    work = area_crs_for(gpd.GeoDataFrame(geometry=points_84))
    projected = points_84.to_crs(work)
    start_w = gpd.GeoSeries([Point(*start_lonlat)], crs=4326).to_crs(work).iloc[0]
    xy = np.column_stack([projected.x.to_numpy(), projected.y.to_numpy()])
    origin = np.array([start_w.x, start_w.y])
    order = order_route(xy, origin)
    length = route_length(xy, origin, order)
    rows: list[dict[str, Any]] = []
    for stop, k in enumerate(order, start=1):
        row = frame.iloc[k]
        description = _describe(row)
        name = f"{stop:02d} {row['warning_id']}"
        if fmt == "kml":
            rows.append({"Name": name, "Description": description})
        elif fmt == "gpx":
            rows.append({"name": name, "desc": description, "type": str(row["category"]),
                         "cmt": CATEGORY_ZH.get(str(row["category"]), "")})
        else:
            rows.append({
                "stop": stop, "warning_id": str(row["warning_id"]), "category": str(row["category"]),
                "category_zh": CATEGORY_ZH.get(str(row["category"]), ""),
                "area_m2": float(row.get("area_m2") or 0.0),
                "area_mu": round(float(row.get("area_m2") or 0.0) / SQM_PER_MU, 4),
                "flags": ", ".join(row.get("flags") or []),
                "priority": float(row.get("priority") or 0.0),
                "description": description,
                "reasons": json.dumps(row.get("reasons") or [], ensure_ascii=False),
            })
    out = gpd.GeoDataFrame(rows, geometry=[points_84.iloc[k] for k in order], crs=4326)
    driver = {"kml": "KML", "gpx": "GPX", "geojson": "GeoJSON"}[fmt]
    kwargs: dict[str, Any] = {}
    if fmt == "geojson":
        kwargs["RFC7946"] = "YES"
    layer = None if fmt == "gpx" else "patrol"  # GPX layers are fixed (waypoints); KML folder / GeoJSON name
    _write(out, path, driver, layer, kwargs)
    ids = [str(frame["warning_id"].iloc[k]) for k in order]
    return PatrolResult(path=path, order=ids, length_m=round(length, 1))

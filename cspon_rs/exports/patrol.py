"""Patrol files for field teams: KMZ/KML, GPX and GeoJSON of selected warnings, in route order.

Waypoints (a representative point inside each warning, EPSG:4326) are ordered into a short open route
from a start point: nearest neighbour, then 2-opt, on distances in a projected CRS
(:func:`cspon_rs.geo.crs.area_crs_for`). What each format carries:

* **KML / KMZ** (simplekml; 奥维互动地图, Google Earth, 两步路): folder ``巡查点 stops`` (one point per
  warning, named by its id, numbered icon label ``01``...), folder ``图斑 polygons`` (the warning outlines),
  folder ``路线 route`` (start → stops line). One shared style per category (colour of the review map).
  Each description is an HTML table, Chinese first (类别, 面积, 管控线, 优先级, 状态, 期限, 判定理由 with the
  English reasons below); every value is HTML-escaped. A KMZ embeds the before/after chip of each warning
  (``files/<id>.png``) and shows it in the description.
* **GPX 1.1** (gpxpy; any GPS app): one ``<wpt>`` per warning with ``name`` = warning id, ``cmt`` =
  category (中文 + code), area (亩 and m²) and control-line flags, ``desc`` = the reasons (Chinese, then
  English), priority, status and due date; ``type`` = category code; and the visiting order as one ``<rte>``.
* **GeoJSON** (RFC 7946, GDAL): one point per warning with the same properties (``stop``, ``warning_id``,
  ``category``/``category_zh``, ``area_m2``/``area_mu``, ``flags``, ``priority``, ``status``, ``due_date``,
  ``reasons_zh``/``reasons_en``, ``description``).

Files are written to a temporary name and renamed into place.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

from cspon_rs.errors import SchemaError
from cspon_rs.geo.crs import SQM_PER_MU, area_crs_for
from cspon_rs.rules.config import CATEGORY_ZH

__all__ = ["CATEGORY_COLORS", "PatrolFormat", "PatrolResult", "order_route", "route_length", "write_patrol"]

PatrolFormat = Literal["kml", "kmz", "gpx", "geojson"]
#: Category colours (``#rrggbb``), the same as the review map's legend.
CATEGORY_COLORS: dict[str, str] = {
    "built_before_approval": "#e0312b",
    "building_while_pending": "#ff8c1a",
    "exceeding_approval": "#b23cd6",
    "built_elsewhere": "#1f7bff",
    "approved_not_built": "#8a8f98",
    "none": "#2bb35b",
}
_STATUS_ZH = {"new": "新增", "desk_excluded": "内业排除", "to_field": "待外业", "assigned": "已派发",
              "verified": "已核查", "closed": "已办结"}
_SUFFIXES = {".kml": "kml", ".kmz": "kmz", ".gpx": "gpx", ".geojson": "geojson", ".json": "geojson"}


@dataclass(frozen=True)
class PatrolResult:
    """A written patrol file: its path, the warning ids in visiting order and the route length (m)."""

    path: Path
    order: list[str]
    length_m: float
    #: True when ordered and measured over a road layer; False: straight lines between the stops.
    along_roads: bool = False


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


def _reasons(row: pd.Series) -> tuple[list[str], list[str]]:
    """Chinese and English reason texts of a warning (from ``reasons`` dicts or ``reason_zh``/``reason_en``)."""
    reasons = row.get("reasons")
    if isinstance(reasons, str):
        try:
            reasons = json.loads(reasons)
        except ValueError:
            reasons = []
    items = [r for r in (reasons if isinstance(reasons, list) else []) if isinstance(r, dict)]
    zh = [str(r.get("zh")) for r in items if r.get("zh")]
    en = [str(r.get("en")) for r in items if r.get("en")]
    if not zh and row.get("reason_zh"):
        zh = [str(row["reason_zh"])]
    if not en and row.get("reason_en"):
        en = [str(row["reason_en"])]
    return zh, en


def _flags(row: pd.Series) -> list[str]:
    flags = row.get("flags")
    if isinstance(flags, str):
        return [f.strip() for f in flags.split(",") if f.strip()]
    return [str(f) for f in (flags if isinstance(flags, (list, tuple, np.ndarray)) else [])]


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (dt.date, pd.Timestamp)):
        return value.isoformat()[:10]
    return str(value)


@dataclass(frozen=True)
class _Stop:
    """One warning of the route with everything the formats write."""

    stop: int
    warning_id: str
    category: str
    category_zh: str
    area_m2: float
    flags: list[str]
    priority: float
    status: str
    due_date: str
    reasons_zh: list[str]
    reasons_en: list[str]
    point: Point
    polygon: BaseGeometry

    @property
    def area_mu(self) -> float:
        return self.area_m2 / SQM_PER_MU

    def comment(self) -> str:
        """``cmt`` of GPX: category, area and flags (what differs between waypoints at a glance)."""
        flags = f" · {', '.join(self.flags)}" if self.flags else ""
        return f"{self.category_zh} {self.category} · {self.area_mu:.2f} 亩 ({self.area_m2:.0f} m²){flags}"

    def description(self) -> str:
        """Plain-text description: reasons (Chinese, then English), priority, status, due date."""
        lines = [f"{self.warning_id} · {self.category_zh} {self.category} · {self.area_mu:.2f} 亩 "
                 f"({self.area_m2:.0f} m²)" + (f" · {', '.join(self.flags)}" if self.flags else "")]
        lines += [f"判定理由: {z}" for z in self.reasons_zh] + [f"Reason: {e}" for e in self.reasons_en]
        status = f"{_STATUS_ZH.get(self.status, self.status)} {self.status}" if self.status else "疑似 suspected"
        lines.append(f"优先级 priority {self.priority:.0f} · 状态 {status}"
                     + (f" · 期限 due {self.due_date}" if self.due_date else ""))
        return "\n".join(lines)

    def html_table(self, chip: str | None) -> str:
        """KML description: an HTML table, Chinese labels first; every value escaped."""
        e = html.escape
        rows = [
            ("预警编号 ID", e(self.warning_id)),
            ("类别 category", f"<b>{e(self.category_zh)}</b> {e(self.category)}"),
            ("面积 area", f"{self.area_mu:.2f} 亩 ({self.area_m2:.0f} m²)"),
            ("管控线 flags", e(", ".join(self.flags)) or "–"),
            ("优先级 priority", f"{self.priority:.0f}"),
            ("状态 status", e(f"{_STATUS_ZH.get(self.status, self.status)} {self.status}") if self.status
             else "疑似 suspected"),
            ("期限 due", e(self.due_date) or "–"),
            ("判定理由 reasons", "<br>".join(e(z) for z in self.reasons_zh) + (
                "<br><i>" + "<br>".join(e(x) for x in self.reasons_en) + "</i>" if self.reasons_en else "")),
        ]
        body = "".join(f"<tr><th align=\"left\">{k}</th><td>{v}</td></tr>" for k, v in rows)
        image = f'<p><img src="{e(chip)}" width="480"><br>前时相 before | 后时相 after</p>' if chip else ""
        return f'<table border="1" cellpadding="3" cellspacing="0">{body}</table>{image}'

    def properties(self) -> dict[str, Any]:
        return {
            "stop": self.stop, "warning_id": self.warning_id, "category": self.category,
            "category_zh": self.category_zh, "area_m2": round(self.area_m2, 1), "area_mu": round(self.area_mu, 4),
            "flags": ", ".join(self.flags), "priority": round(self.priority, 2), "status": self.status,
            "due_date": self.due_date, "reasons_zh": "；".join(self.reasons_zh),
            "reasons_en": "; ".join(self.reasons_en),
            "comment": self.comment(), "description": self.description(),
        }


def _kml_color(hex_rgb: str, alpha: int) -> str:
    import simplekml

    r, g, b = (int(hex_rgb[i: i + 2], 16) for i in (1, 3, 5))
    color: str = simplekml.Color.rgb(r, g, b, alpha)
    return color


def _route_name(along_roads: bool, length_m: float) -> str:
    how = "沿道路 along roads" if along_roads else "直线距离 straight lines, not roads"
    return f"巡查路线 route ({how}, {length_m / 1000:.1f} km)"


def _write_kml(stops: list[_Stop], start: Point, path: Path, fmt: Literal["kml", "kmz"],
               chips: Mapping[str, str | Path], route_line: list[tuple[float, float]] | None = None,
               length_m: float = 0.0, photos: Mapping[str, Sequence[tuple[Path, str]]] | None = None) -> None:
    import simplekml

    kml = simplekml.Kml(name=path.stem)
    kml.document.name = f"{path.stem} 巡查路线 patrol"
    styles: dict[str, tuple[Any, Any]] = {}
    for category in sorted({s.category for s in stops}):
        color = CATEGORY_COLORS.get(category, "#cccccc")
        point_style = simplekml.Style()
        point_style.iconstyle.color = _kml_color(color, 255)
        point_style.iconstyle.scale = 1.2
        point_style.labelstyle.scale = 0.9
        poly_style = simplekml.Style()
        poly_style.linestyle.color = _kml_color(color, 255)
        poly_style.linestyle.width = 3
        poly_style.polystyle.color = _kml_color(color, 70)
        styles[category] = (point_style, poly_style)
    points = kml.newfolder(name="巡查点 stops")
    polygons = kml.newfolder(name="图斑 polygons")
    route = kml.newfolder(name="路线 route")
    for s in stops:
        chip = None
        if fmt == "kmz" and s.warning_id in chips and Path(chips[s.warning_id]).is_file():
            chip = kml.addfile(str(chips[s.warning_id]))
        point_style, poly_style = styles[s.category]
        evidence = ""  # field photos (举证) of a KMZ, each with its caption
        for k, (photo, caption) in enumerate((photos or {}).get(s.warning_id, ()) if fmt == "kmz" else ()):
            if Path(photo).is_file():
                href = kml.addfile(str(photo))
                evidence += (f'<p><img src="{html.escape(href)}" width="480"><br>照片{k + 1} '
                             f"{html.escape(caption)}</p>")
        pnt = points.newpoint(name=s.warning_id, coords=[(s.point.x, s.point.y)])
        pnt.description = s.html_table(chip) + evidence
        pnt.snippet.content = f"{s.stop:02d} · {s.comment()}"
        pnt.style = point_style
        for k, ring_poly in enumerate(getattr(s.polygon, "geoms", [s.polygon])):
            if ring_poly.geom_type != "Polygon":
                continue
            pol = polygons.newpolygon(name=s.warning_id if k == 0 else f"{s.warning_id} ({k + 1})")
            pol.outerboundaryis = list(ring_poly.exterior.coords)
            pol.innerboundaryis = [list(r.coords) for r in ring_poly.interiors]
            pol.description = s.html_table(chip)
            pol.style = poly_style
    coords = route_line or [(start.x, start.y)] + [(s.point.x, s.point.y) for s in stops]
    line = route.newlinestring(name=_route_name(route_line is not None, length_m), coords=coords)
    line.style.linestyle.color = _kml_color("#1f6feb", 255)
    line.style.linestyle.width = 4
    route.newpoint(name="起点 start", coords=[(start.x, start.y)])

    def save(tmp: Path) -> None:
        if fmt == "kmz":
            kml.savekmz(str(tmp), format=False)
        else:
            kml.save(str(tmp), format=False)

    _replace_into(path, save)


def _write_gpx(stops: list[_Stop], start: Point, path: Path, route_line: list[tuple[float, float]] | None = None,
               length_m: float = 0.0) -> None:
    import gpxpy.gpx

    gpx = gpxpy.gpx.GPX()
    gpx.creator = "cspon-rs"
    gpx.name = f"{path.stem} 巡查路线 patrol"
    for s in stops:
        gpx.waypoints.append(gpxpy.gpx.GPXWaypoint(
            latitude=s.point.y, longitude=s.point.x, name=s.warning_id, comment=s.comment(),
            description=s.description(), type=s.category, symbol="Flag, Red"))
    rte = gpxpy.gpx.GPXRoute(name=_route_name(route_line is not None, length_m),
                             description=f"{len(stops)} stops from {start.x:.6f},{start.y:.6f}")
    rte.points.append(gpxpy.gpx.GPXRoutePoint(latitude=start.y, longitude=start.x, name="起点 start"))
    for s in stops:
        rte.points.append(gpxpy.gpx.GPXRoutePoint(latitude=s.point.y, longitude=s.point.x, name=s.warning_id,
                                                  comment=s.comment()))
    gpx.routes.append(rte)
    if route_line is not None:  # the way over the roads, as a track a GPS unit can follow
        trk = gpxpy.gpx.GPXTrack(name=_route_name(True, length_m))
        seg = gpxpy.gpx.GPXTrackSegment()
        seg.points.extend(gpxpy.gpx.GPXTrackPoint(latitude=y, longitude=x) for x, y in route_line)
        trk.segments.append(seg)
        gpx.tracks.append(trk)
    text = gpx.to_xml(version="1.1")
    _replace_into(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_track_gpx(points: Sequence[Sequence[Any]], path: str | Path, *, name: str = "巡查轨迹 track") -> Path:
    """Write a GPS track recorded during a patrol as GPX 1.1 (one ``<trk>`` with one ``<trkseg>``).

    Args:
        points: ``[lon, lat, iso_time_or_None]`` in EPSG:4326 degrees, in recording order.
        path: Target ``.gpx``.
        name: Track name.

    Raises:
        ValueError: ``points`` is empty.
    """
    import gpxpy.gpx

    if not points:
        raise ValueError(f"no track points to write to {path}")
    path = Path(path)
    gpx = gpxpy.gpx.GPX()
    gpx.creator = "cspon-rs"
    track = gpxpy.gpx.GPXTrack(name=name)
    segment = gpxpy.gpx.GPXTrackSegment()
    for p in points:
        when = dt.datetime.fromisoformat(str(p[2])) if len(p) > 2 and p[2] else None
        segment.points.append(gpxpy.gpx.GPXTrackPoint(latitude=float(p[1]), longitude=float(p[0]), time=when))
    track.segments.append(segment)
    gpx.tracks.append(track)
    text = gpx.to_xml(version="1.1")
    _replace_into(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def _replace_into(path: Path, write: Any) -> None:
    """Call ``write(tmp)`` on a private temporary path beside ``path`` (same name), then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
    tmp = tmpdir / path.name
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        for leftover in tmpdir.glob("*"):
            leftover.unlink()
        tmpdir.rmdir()


def write_patrol(
    warnings: gpd.GeoDataFrame,
    path: str | Path,
    *,
    start_lonlat: tuple[float, float],
    fmt: PatrolFormat | None = None,
    chips: Mapping[str, str | Path] | None = None,
    roads: str | Path | None = None,
    photos: Mapping[str, Sequence[tuple[Path, str]]] | None = None,
) -> PatrolResult:
    """Write selected warnings as a patrol (points, polygons, route) in visiting order.

    Args:
        warnings: Warnings with ``warning_id`` (or ``id``), ``category``, ``area_m2``, ``flags``, ``reasons``,
            optional ``priority``/``status``/``due_date``; polygons in any CRS.
        path: Output file (``.kmz``, ``.kml``, ``.gpx``, ``.geojson``/``.json``).
        start_lonlat: Where the team starts (longitude, latitude in EPSG:4326).
        fmt: ``kmz`` | ``kml`` | ``gpx`` | ``geojson``; guessed from the suffix when omitted.
        chips: Warning id -> before/after chip PNG, embedded into a KMZ (ignored by the other formats).
        roads: County road layer (GeoPackage lines): the stops are ordered and the route measured and drawn
            over the roads (:mod:`cspon_rs.geo.roads`); without it, straight lines, labelled as such.
        photos: Warning id -> field photos with their captions (time, lon/lat, bearing, distance to the 图斑,
            who), embedded into a KMZ and shown in the stop's description (ignored by the other formats).

    Returns:
        A :class:`PatrolResult`.

    Raises:
        SchemaError: Unknown format, or no warnings given.
    """
    path = Path(path)
    fmt = fmt or _SUFFIXES.get(path.suffix.lower())  # type: ignore[assignment]
    if fmt not in ("kml", "kmz", "gpx", "geojson"):
        raise SchemaError(f"{path}: unknown patrol format {fmt!r}; use kmz, kml, gpx or geojson")
    if len(warnings) == 0:
        raise SchemaError("no warnings selected for the patrol")
    frame = warnings.copy()
    if "warning_id" not in frame.columns:
        frame["warning_id"] = frame["id"] if "id" in frame.columns else frame["source_key"]
    polygons_84 = frame.geometry.to_crs(4326) if frame.crs is not None else frame.geometry
    points_84 = gpd.GeoSeries(frame.geometry.representative_point(), crs=frame.crs).to_crs(4326)
    work = area_crs_for(gpd.GeoDataFrame(geometry=points_84))
    projected = points_84.to_crs(work)
    start_w = gpd.GeoSeries([Point(*start_lonlat)], crs=4326).to_crs(work).iloc[0]
    xy = np.column_stack([projected.x.to_numpy(), projected.y.to_numpy()])
    origin = np.array([start_w.x, start_w.y])
    route_line: list[tuple[float, float]] | None = None
    if roads is not None:
        from pyproj import Transformer

        from cspon_rs.geo.roads import load_roads, order_by_matrix, road_matrix

        dist, paths = road_matrix(load_roads(roads, work), np.vstack([origin[None, :], xy]))
        tour = order_by_matrix(dist)
        order = [k - 1 for k in tour]
        length = float(sum(dist[a, b] for a, b in zip([0, *tour[:-1]], tour, strict=True)))
        way: list[tuple[float, float]] = []
        for a, b in zip([0, *tour[:-1]], tour, strict=True):
            way.extend(paths[a][b][1 if way else 0:])
        back = Transformer.from_crs(work, 4326, always_xy=True)
        route_line = [tuple(back.transform(x, y)) for x, y in way]  # type: ignore[misc]
    else:
        order = order_route(xy, origin)
        length = route_length(xy, origin, order)
    stops: list[_Stop] = []
    for stop, k in enumerate(order, start=1):
        row = frame.iloc[k]
        category = str(row.get("category"))
        zh, en = _reasons(row)
        priority = row.get("priority")
        stops.append(_Stop(
            stop=stop, warning_id=str(row["warning_id"]), category=category,
            category_zh=CATEGORY_ZH.get(category, category), area_m2=float(row.get("area_m2") or 0.0),
            flags=_flags(row), priority=float(priority) if priority is not None and priority == priority else 0.0,
            status=_text(row.get("status")), due_date=_text(row.get("due_date")), reasons_zh=zh, reasons_en=en,
            point=points_84.iloc[k], polygon=polygons_84.iloc[k]))
    start = Point(*start_lonlat)
    if fmt in ("kml", "kmz"):
        _write_kml(stops, start, path, fmt, chips or {}, route_line, length, photos)  # type: ignore[arg-type]
    elif fmt == "gpx":
        _write_gpx(stops, start, path, route_line, length)
    else:
        out = gpd.GeoDataFrame([s.properties() for s in stops], geometry=[s.point for s in stops], crs=4326)
        _write(out, path, "GeoJSON", "patrol", {"RFC7946": "YES"})
    return PatrolResult(path=path, order=[s.warning_id for s in stops], length_m=round(length, 1),
                        along_roads=route_line is not None)

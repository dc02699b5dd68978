"""Field photo evidence (举证) of a verification: where, when and in which direction each photo was taken,
its distance to the 图斑 and its flags -- EXIF first, the phone's live position and compass as fallback.

Used by ``POST /warnings/{id}/verifications``; the columns are those of store revision ``0008_photo_evidence``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shapely import wkt as shapely_wkt

from cspon_rs.errors import SchemaError
from cspon_rs.geo.evidence import check_photo
from cspon_rs.geo.exif import read_exif
from cspon_rs.store.crud import FIELD_TIME_SLACK, field_time

__all__ = ["Capture", "PhotoEvidence", "caption_text", "parse_capture", "parse_track", "photo_captions",
           "photo_evidence"]

#: Most points of a recorded GPS track kept per verification.
MAX_TRACK_POINTS = 20_000


@dataclass(frozen=True)
class Capture:
    """What the phone knew when a photo was added: its fix (EPSG:4326) and compass heading (degrees)."""

    lon: float | None = None
    lat: float | None = None
    heading: float | None = None


@dataclass(frozen=True)
class PhotoEvidence:
    """The 0008 columns of one photo (``flags`` comma-separated, ``None`` when there is none)."""

    taken_at: dt.datetime | None
    lon: float | None
    lat: float | None
    position_source: str | None
    bearing_deg: float | None
    bearing_source: str | None
    distance_m: float | None
    flags: str | None


def _num(value: Any, lo: float, hi: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    out = float(value)
    return out if math.isfinite(out) and lo <= out <= hi else None


def parse_capture(raw: str | None) -> Capture:
    """One ``photo_capture`` form value: ``''`` or JSON ``{"lon", "lat", "heading"}`` (out-of-range values and
    unknown keys are ignored; a position needs both lon and lat).

    Raises:
        SchemaError: The value is not JSON or not an object.
    """
    if raw is None or not raw.strip():
        return Capture()
    try:
        data = json.loads(raw)
    except ValueError:
        raise SchemaError(f"photo_capture {raw[:80]!r} is not JSON: give {{\"lon\":..,\"lat\":..,\"heading\":..}} "
                          "or '' per photo") from None
    if not isinstance(data, dict):
        raise SchemaError(f"photo_capture {raw[:80]!r}: give a JSON object per photo")
    lon, lat = _num(data.get("lon"), -180, 180), _num(data.get("lat"), -90, 90)
    if lon is None or lat is None:
        lon = lat = None
    heading = _num(data.get("heading"), 0, 360)
    return Capture(lon=lon, lat=lat, heading=None if heading is None else heading % 360.0)


def parse_track(raw: str | None) -> str | None:
    """The ``track`` form value -- JSON ``[[lon, lat, "iso time"], ...]`` -- checked and re-serialised
    (points with a bad position are dropped; times must parse with an offset), or ``None`` when empty.

    Raises:
        SchemaError: Not a JSON list of points, or more than :data:`MAX_TRACK_POINTS` points.
    """
    if raw is None or not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        raise SchemaError("track is not JSON: give [[lon, lat, \"2026-05-01T10:00:00+08:00\"], ...]") from None
    if not isinstance(data, list):
        raise SchemaError("track: give a JSON list of [lon, lat, time] points")
    if len(data) > MAX_TRACK_POINTS:
        raise SchemaError(f"track has {len(data)} points: at most {MAX_TRACK_POINTS}")
    points: list[list[Any]] = []
    for item in data:
        if not isinstance(item, list) or len(item) < 2:
            raise SchemaError(f"track point {str(item)[:60]!r}: give [lon, lat, time]")
        lon, lat = _num(item[0], -180, 180), _num(item[1], -90, 90)
        if lon is None or lat is None:
            continue
        when: str | None = None
        if len(item) > 2 and isinstance(item[2], str) and item[2]:
            try:
                parsed = dt.datetime.fromisoformat(item[2])
            except ValueError:
                raise SchemaError(f"track time {item[2][:40]!r} is not ISO 8601") from None
            if parsed.tzinfo is None:
                raise SchemaError(f"track time {item[2][:40]!r} has no UTC offset")
            when = parsed.astimezone(dt.UTC).isoformat()
        points.append([round(lon, 7), round(lat, 7), when])
    return json.dumps(points) if points else None


def photo_evidence(
    path: Path,
    *,
    capture: Capture,
    file_time: dt.datetime | None,
    zone: dt.tzinfo | None,
    check_lonlat: tuple[float, float] | None,
    check_heading: float | None,
    geometry_wkt: str,
    check_time: dt.datetime,
    window_h: float,
    max_distance_m: float,
) -> PhotoEvidence:
    """Read a saved photo's EXIF and check it against its 图斑 and the check's time window.

    Args:
        path: The saved file.
        capture: The phone's fix and compass when the photo was added (fallback for EXIF GPS / direction).
        file_time: The file time the phone sent (fallback for ``DateTimeOriginal``).
        zone: The device's UTC offset, for EXIF times without ``OffsetTimeOriginal``.
        check_lonlat, check_heading: The verification's own position and heading (last fallback).
        geometry_wkt: The warning polygon, EPSG:4326 WKT.
        check_time: Device time of the check (aware); the window is ``check_time - window_h`` ..
            ``check_time + 10 min``.
        window_h: Hours before the check a photo may have been taken.
        max_distance_m: Distance to the 图斑 beyond which a photo is flagged ``far``.
    """
    exif = read_exif(path)
    taken: dt.datetime | None = None
    exif_time = exif.taken_at(zone)
    if exif_time is not None:
        try:
            taken = field_time("taken_at", exif_time)
        except SchemaError:
            taken = None  # camera clock unset (1970, 2080 ...): the phone's file time is better than this
    if taken is None and file_time is not None:
        taken = file_time.astimezone(dt.UTC)
    lon: float | None
    lat: float | None
    if exif.lon is not None and exif.lat is not None:
        lon, lat, source = exif.lon, exif.lat, "exif"
    elif capture.lon is not None and capture.lat is not None:
        lon, lat, source = capture.lon, capture.lat, "device"
    elif check_lonlat is not None:
        lon, lat, source = check_lonlat[0], check_lonlat[1], "check"
    else:
        lon = lat = None
        source = ""
    if exif.bearing_deg is not None:
        bearing, bearing_source = exif.bearing_deg, "exif"
    elif capture.heading is not None:
        bearing, bearing_source = capture.heading, "device"
    elif check_heading is not None:
        bearing, bearing_source = check_heading % 360.0, "check"
    else:
        bearing, bearing_source = None, ""
    ref = check_time.astimezone(dt.UTC)
    result = check_photo(
        lon, lat, taken, shapely_wkt.loads(geometry_wkt),
        window=(ref - dt.timedelta(hours=window_h), ref + FIELD_TIME_SLACK), max_distance_m=max_distance_m,
    )
    return PhotoEvidence(
        taken_at=taken,
        lon=lon,
        lat=lat,
        position_source=source or None,
        bearing_deg=bearing,
        bearing_source=bearing_source or None,
        distance_m=None if result.distance_m is None else round(result.distance_m, 1),
        flags=",".join(result.flags) or None,
    )


_FLAG_ZH = {"far": "远离图斑", "early": "早于核查", "late": "晚于核查", "no_position": "无位置", "no_time": "无时间"}


def caption_text(
    *,
    taken_at: dt.datetime | None,
    lon: float | None,
    lat: float | None,
    position_source: str | None,
    bearing_deg: float | None,
    distance_m: float | None,
    by: str | None,
    flags: str | None,
    zone: dt.tzinfo | None = None,
) -> str:
    """The evidence line printed under a photo (report 核查表, KMZ): time (in ``zone``), lon/lat and its source,
    bearing, distance to the 图斑, who, and the flags in Chinese."""
    parts = [taken_at.astimezone(zone).strftime("%Y-%m-%d %H:%M %z") if taken_at else "时间不明"]
    if lon is not None and lat is not None:
        parts.append(f"{lon:.6f}, {lat:.6f} ({position_source or '?'})")
    if bearing_deg is not None:
        parts.append(f"方位 {bearing_deg:.0f}°")
    if distance_m is not None:
        parts.append(f"距图斑 {distance_m:,.0f} m")
    if by:
        parts.append(by)
    marks = [_FLAG_ZH.get(f, f) for f in (flags or "").split(",") if f]
    return " · ".join(parts) + (" · ⚠ " + "、".join(marks) if marks else "")


def photo_captions(session: Any, warning_ids: list[str], zone: dt.tzinfo | None = None) -> dict[str, list[str]]:
    """Warning id → one caption per stored photo, in the order of :func:`cspon_rs.store.api_crud.list_photos`
    (the order the report's ``photos`` lists use); pass it as ``write_report(photo_captions=...)``. Times are
    shown in ``zone``, by default the display zone of the export schema (Asia/Shanghai)."""
    from cspon_rs.exports.schema import load_export_schema
    from cspon_rs.store.api_crud import list_photos
    from cspon_rs.store.models import Verification

    zone = zone or load_export_schema().zone()

    out: dict[str, list[str]] = {}
    for wid in warning_ids:
        rows = list_photos(session, wid)
        by = {v.id: v.by for v in session.query(Verification).filter(Verification.warning_id == wid)}
        out[wid] = [caption_text(taken_at=p.taken_at, lon=p.lon, lat=p.lat, position_source=p.position_source,
                                 bearing_deg=p.bearing_deg, distance_m=p.distance_m,
                                 by=by.get(p.verification_id or 0), flags=p.flags, zone=zone) for p in rows]
    return out

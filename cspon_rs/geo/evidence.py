"""Checks of one field photo (举证) against its 图斑: how far from the warning polygon it was taken and
whether its time lies in the check's time window.

Distances are on the CGCS2000/WGS84 ellipsoid: the polygon is projected into an azimuthal equidistant
projection centred on the photo (where the distance from the centre is the geodesic distance), its nearest
point is found there with shapely and the distance to it is measured with :class:`pyproj.Geod`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from pyproj import CRS, Geod, Transformer
from shapely import ops
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

__all__ = ["PhotoCheck", "PhotoFlag", "check_photo", "distance_to_polygon_m"]

PhotoFlag = Literal["far", "early", "late", "no_position", "no_time"]
_GEOD = Geod(ellps="GRS80")  # CGCS2000's ellipsoid (WGS84's differs by 0.1 mm in the semi-minor axis)


@dataclass(frozen=True)
class PhotoCheck:
    """Result of :func:`check_photo`.

    Attributes:
        distance_m: Geodesic distance from the photo's position to the 图斑 in metres (0 inside it), or
            ``None`` without a position.
        flags: ``far`` (more than ``max_distance_m`` from the 图斑), ``early`` / ``late`` (taken before /
            after the check's time window), ``no_position``, ``no_time``.
    """

    distance_m: float | None
    flags: tuple[PhotoFlag, ...]


def distance_to_polygon_m(lon: float, lat: float, polygon: BaseGeometry) -> float:
    """Geodesic distance in metres from a point to a polygon, both in EPSG:4326 (0 when inside)."""
    here = Point(lon, lat)
    if polygon.is_empty:
        raise ValueError("the 图斑 geometry is empty: no distance can be measured")
    if polygon.covers(here):
        return 0.0
    aeqd = CRS.from_proj4(f"+proj=aeqd +lat_0={lat} +lon_0={lon} +ellps=GRS80 +units=m +no_defs")
    fwd = Transformer.from_crs("EPSG:4326", aeqd, always_xy=True)
    back = Transformer.from_crs(aeqd, "EPSG:4326", always_xy=True)
    projected = ops.transform(fwd.transform, polygon)
    _, nearest = ops.nearest_points(Point(0.0, 0.0), projected)
    near_lon, near_lat = back.transform(nearest.x, nearest.y)
    _, _, dist = _GEOD.inv(lon, lat, near_lon, near_lat)
    return float(dist)


def check_photo(
    lon: float | None,
    lat: float | None,
    taken_at: dt.datetime | None,
    polygon: BaseGeometry,
    *,
    window: tuple[dt.datetime, dt.datetime],
    max_distance_m: float = 100.0,
) -> PhotoCheck:
    """Flag a photo taken too far from its 图斑 or outside the check's time window.

    Args:
        lon, lat: Where the photo was taken (EPSG:4326 degrees), ``None`` when unknown.
        taken_at: When it was taken (aware), ``None`` when unknown.
        polygon: The warning polygon (EPSG:4326).
        window: ``(earliest, latest)`` aware times a photo of this check may carry.
        max_distance_m: Largest accepted distance to the 图斑 in metres.
    """
    flags: list[PhotoFlag] = []
    distance: float | None = None
    if lon is None or lat is None:
        flags.append("no_position")
    else:
        distance = distance_to_polygon_m(lon, lat, polygon)
        if distance > max_distance_m:
            flags.append("far")
    if taken_at is None:
        flags.append("no_time")
    elif taken_at < window[0]:
        flags.append("early")
    elif taken_at > window[1]:
        flags.append("late")
    return PhotoCheck(distance_m=distance, flags=tuple(flags))

"""Projected CRSs for area computation, and area units.

Areas are never computed in a geographic CRS. For a geometry inside China we use the CGCS2000 3-degree
Gauss-Krüger zone that holds its centroid (EPSG:4513-4533, zone number in the false easting); elsewhere the
WGS 84 UTM zone. Both declare northing/easting axis order, so every transformer here uses
``always_xy=True`` and geometries stay (x=easting/longitude, y=northing/latitude).
"""

from __future__ import annotations

import math
from typing import Any

import geopandas as gpd
from pyproj import CRS

from cspon_rs.errors import CRSError

__all__ = ["SQM_PER_MU", "area_crs_for", "area_m2", "centroid_lonlat", "gk_zone_epsg", "to_mu", "utm_epsg"]

#: Square metres in one mu (亩): 10000 / 15.
SQM_PER_MU = 10000.0 / 15.0

#: Rough bounding box of China (lon_min, lat_min, lon_max, lat_max) in which CGCS2000 GK zones are used.
_CHINA_LONLAT = (73.0, 3.0, 136.0, 54.0)


def to_mu(area_in_m2: float) -> float:
    """Convert square metres to mu (1 mu = 666.667 m²)."""
    return float(area_in_m2) / SQM_PER_MU


def gk_zone_epsg(lon: float) -> int:
    """EPSG code of the CGCS2000 3-degree Gauss-Krüger zone (with zone prefix) holding a longitude.

    Zones 25-45 have central meridians 75°E-135°E and codes EPSG:4513-4533.

    Args:
        lon: Longitude in degrees east (CGCS2000/WGS 84).

    Raises:
        CRSError: The longitude lies outside 73.5°E-136.5°E, where no CGCS2000 3° zone is defined.
    """
    zone = math.floor((lon + 1.5) / 3.0)
    if not 25 <= zone <= 45:
        raise CRSError(f"longitude {lon:.4f} is outside the CGCS2000 3-degree Gauss-Krüger zones 25-45")
    return 4513 + (zone - 25)


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 UTM zone (north or south) holding a point in degrees."""
    zone = min(60, max(1, math.floor((lon + 180.0) / 6.0) + 1))
    return (32600 if lat >= 0 else 32700) + zone


def centroid_lonlat(gdf: gpd.GeoDataFrame) -> tuple[float, float]:
    """Longitude/latitude (EPSG:4326) of the centre of a layer's total bounds."""
    if gdf.crs is None:
        raise CRSError("layer has no CRS; set one (e.g. EPSG:4490 for CGCS2000) before computing areas")
    minx, miny, maxx, maxy = gdf.to_crs(4326).total_bounds
    return (minx + maxx) / 2.0, (miny + maxy) / 2.0


def area_crs_for(gdf: gpd.GeoDataFrame) -> CRS:
    """Choose an equal-distance projected CRS for measuring a layer's areas.

    The layer's own CRS is kept when it is already projected in metres; otherwise the CGCS2000
    Gauss-Krüger zone (inside China) or the UTM zone (elsewhere) of the layer's centre is used.

    Raises:
        CRSError: The layer has no CRS.
    """
    if gdf.crs is None:
        raise CRSError("layer has no CRS; set one (e.g. EPSG:4490 for CGCS2000) before computing areas")
    crs = CRS.from_user_input(gdf.crs)
    if crs.is_projected and crs.axis_info and crs.axis_info[0].unit_name in ("metre", "meter"):
        return crs
    if gdf.empty:
        return CRS.from_epsg(4527)  # arbitrary but valid; an empty layer has no area
    lon, lat = centroid_lonlat(gdf)
    lon_min, lat_min, lon_max, lat_max = _CHINA_LONLAT
    if lon_min <= lon <= lon_max and lat_min <= lat <= lat_max:
        return CRS.from_epsg(gk_zone_epsg(lon))
    return CRS.from_epsg(utm_epsg(lon, lat))


def area_m2(gdf: gpd.GeoDataFrame | gpd.GeoSeries, crs: Any | None = None) -> Any:
    """Areas in square metres of each geometry, measured in a projected CRS.

    Args:
        gdf: Layer (any CRS).
        crs: Projected CRS to measure in; chosen with :func:`area_crs_for` when omitted.

    Returns:
        A pandas Series of areas in m², aligned with ``gdf``.
    """
    frame = gdf if isinstance(gdf, gpd.GeoDataFrame) else gpd.GeoDataFrame(geometry=gdf)
    target = CRS.from_user_input(crs) if crs is not None else area_crs_for(frame)
    return frame.geometry.to_crs(target).area

"""Areas and output CRSs of 图斑 layers: planar (Gauss-Krüger) and ellipsoidal (椭球面积) areas.

国土调查 practice reports the ellipsoidal area of a parcel (area on the CGCS2000 ellipsoid, computed here
with :meth:`pyproj.Geod.geometry_area_perimeter`); the planar area in the CGCS2000 3-degree Gauss-Krüger
zone is larger by the square of the GK scale factor (about ``1 + x²/R²`` at ``x`` metres from the central
meridian). Both are given, and the method is named in the layer metadata (:data:`AREA_METHOD`).
Every transformer uses ``always_xy=True`` (GK zones and EPSG:4490 declare northing/latitude first).
"""

from __future__ import annotations

from typing import Literal

import geopandas as gpd
import numpy as np
import pyproj
from pyproj import CRS

from cspon_rs.errors import CRSError
from cspon_rs.geo.crs import gk_zone_epsg

__all__ = [
    "AREA_METHOD",
    "CGCS2000",
    "OutCRS",
    "ellipsoidal_area_m2",
    "gk_crs_for",
    "planar_area_m2",
    "resolve_out_crs",
]

#: Geographic CGCS2000.
CGCS2000 = CRS.from_epsg(4490)

#: How the two area fields are computed (written into the layer metadata).
AREA_METHOD = (
    "planar: shapely area in the CGCS2000 3-degree Gauss-Krüger zone of the layer centre (EPSG:4513-4533); "
    "ellipsoidal: pyproj.Geod(CGCS2000 ellipsoid a=6378137 f=1/298.257222101).geometry_area_perimeter "
    "of the polygon in EPSG:4490"
)

#: ``scene``: keep the input CRS; ``auto-gk``: the CGCS2000 3° GK zone of the layer centre; or an EPSG code.
OutCRS = Literal["scene", "auto-gk"] | str


def gk_crs_for(gdf: gpd.GeoDataFrame | gpd.GeoSeries) -> CRS:
    """The CGCS2000 3-degree Gauss-Krüger zone (EPSG:4513-4533, zone number in the false easting) of a
    layer's centre.

    Raises:
        CRSError: The layer has no CRS, is empty, or its centre lies outside the zones 25-45 (73.5-136.5°E).
    """
    if gdf.crs is None:
        raise CRSError("layer has no CRS; set one (e.g. EPSG:4490) before choosing a Gauss-Krüger zone")
    if len(gdf) == 0:
        raise CRSError("empty layer: no centre to choose a Gauss-Krüger zone from; pass --out-crs EPSG:xxxx")
    bounds = gdf.to_crs(CGCS2000).total_bounds
    return CRS.from_epsg(gk_zone_epsg((bounds[0] + bounds[2]) / 2.0))


def resolve_out_crs(gdf: gpd.GeoDataFrame | gpd.GeoSeries, out_crs: OutCRS) -> CRS:
    """The CRS a layer is written in.

    Args:
        gdf: The layer (its CRS is the ``scene`` choice).
        out_crs: ``"scene"``, ``"auto-gk"`` or anything :meth:`pyproj.CRS.from_user_input` takes
            (``"EPSG:4490"``, ``"EPSG:4526"``).

    Raises:
        CRSError: Unknown CRS text, or a layer without CRS.
    """
    if out_crs == "scene":
        if gdf.crs is None:
            raise CRSError("layer has no CRS; pass --out-crs EPSG:4490 or set the layer's CRS")
        return CRS.from_user_input(gdf.crs)
    if out_crs == "auto-gk":
        return gk_crs_for(gdf)
    try:
        return CRS.from_user_input(out_crs)
    except pyproj.exceptions.CRSError as exc:
        raise CRSError(f"--out-crs {out_crs!r}: not a CRS; use scene, auto-gk or e.g. EPSG:4490") from exc


def planar_area_m2(gdf: gpd.GeoDataFrame | gpd.GeoSeries, crs: CRS | None = None) -> np.ndarray:
    """Planar areas (m²) in a projected CRS, by default the layer's GK zone (:func:`gk_crs_for`)."""
    target = crs if crs is not None else gk_crs_for(gdf)
    return np.asarray(gdf.geometry.to_crs(target).area, dtype=np.float64)


def ellipsoidal_area_m2(gdf: gpd.GeoDataFrame | gpd.GeoSeries) -> np.ndarray:
    """Ellipsoidal areas (m², 椭球面积) on the CGCS2000 ellipsoid; empty or missing geometries give 0.

    Raises:
        CRSError: The layer has no CRS.
    """
    if gdf.crs is None:
        raise CRSError("layer has no CRS; set one (e.g. EPSG:4490) before computing ellipsoidal areas")
    geod = CGCS2000.get_geod()
    assert geod is not None  # a geographic CRS always has an ellipsoid
    out = np.zeros(len(gdf), dtype=np.float64)
    for i, geom in enumerate(gdf.geometry.to_crs(CGCS2000)):
        if geom is not None and not geom.is_empty:
            out[i] = abs(geod.geometry_area_perimeter(geom)[0])
    return out

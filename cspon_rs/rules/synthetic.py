"""Hand-made layers for tests, demos and documentation examples (no randomness, no downloads).

Geometries are built in metres around an origin in a CGCS2000 Gauss-Krüger zone (default zone 38,
EPSG:4526, origin 114.0°E 22.3°N) and can be delivered in any CRS.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import geopandas as gpd
from pyproj import Transformer
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from cspon_rs.geo.crs import SQM_PER_MU, area_m2

__all__ = ["LocalFrame", "patches_frame", "permits_frame"]


class LocalFrame:
    """Metre offsets (east, north) from an origin, in a projected CRS (always_xy axis order)."""

    def __init__(self, origin_lonlat: tuple[float, float] = (114.0, 22.3), crs: int | str = 4526) -> None:
        self.crs = crs
        transformer = Transformer.from_crs(4326, crs, always_xy=True)
        self.x0, self.y0 = transformer.transform(*origin_lonlat)

    def rect(self, x: float, y: float, width: float, height: float) -> Polygon:
        """Axis-aligned rectangle with lower-left corner (x, y) metres from the origin."""
        return box(self.x0 + x, self.y0 + y, self.x0 + x + width, self.y0 + y + height)

    def polygon(self, coords: Sequence[tuple[float, float]]) -> Polygon:
        """Polygon from metre offsets."""
        return Polygon([(self.x0 + x, self.y0 + y) for x, y in coords])

    def frame(self, geoms: Sequence[BaseGeometry], **columns: Any) -> gpd.GeoDataFrame:
        """GeoDataFrame of ``geoms`` in this frame's CRS with extra columns."""
        return gpd.GeoDataFrame(dict(columns), geometry=list(geoms), crs=self.crs)


def patches_frame(
    geoms: Sequence[BaseGeometry],
    crs: Any,
    *,
    t1: dt.date | str = "2025-03-01",
    t2: dt.date | str = "2025-09-01",
    prob_mean: float | Sequence[float] = 0.8,
    ids: Sequence[str] | None = None,
    to_crs: Any | None = None,
) -> gpd.GeoDataFrame:
    """A ``change_patches`` layer (exact inference columns) from geometries given in ``crs``."""
    n = len(geoms)
    probs = [prob_mean] * n if isinstance(prob_mean, int | float) else list(prob_mean)
    gdf = gpd.GeoDataFrame(
        {
            "patch_id": list(ids) if ids is not None else [f"p{i + 1:04d}" for i in range(n)],
            "prob_mean": probs,
            "prob_max": [min(1.0, p + 0.1) for p in probs],
        },
        geometry=list(geoms),
        crs=crs,
    )
    gdf["area_m2"] = area_m2(gdf).round(2) if n else []
    gdf["area_mu"] = gdf["area_m2"] / SQM_PER_MU
    points = gdf.geometry.representative_point().to_crs(4326) if n else gdf.geometry
    gdf["centroid_lon"] = points.x if n else []
    gdf["centroid_lat"] = points.y if n else []
    gdf["t1"] = str(t1)
    gdf["t2"] = str(t2)
    gdf["scene_before"] = "before.tif"
    gdf["scene_after"] = "after.tif"
    gdf["detector"] = "synthetic"
    columns = ["patch_id", "area_m2", "area_mu", "prob_mean", "prob_max", "centroid_lon", "centroid_lat",
               "t1", "t2", "scene_before", "scene_after", "detector"]
    gdf = gdf[[*columns, "geometry"]]
    return gdf.to_crs(to_crs) if to_crs is not None else gdf


def permits_frame(
    rows: Sequence[dict[str, Any]], geoms: Sequence[BaseGeometry], crs: Any, *, to_crs: Any | None = None
) -> gpd.GeoDataFrame:
    """A permit layer with bureau field codes (PZWH, LX, XMMC, YDDW, PZRQ, YXQZ, PZMJ, ZT).

    Each row may give ``permit_no``, ``permit_type``, ``project``, ``applicant``, ``approved_on``,
    ``expires_on``, ``status`` (raw values written as given, e.g. Chinese 已批).
    """
    codes = {"permit_no": "PZWH", "permit_type": "LX", "project": "XMMC", "applicant": "YDDW",
             "approved_on": "PZRQ", "expires_on": "YXQZ", "status": "ZT"}
    data: dict[str, list[Any]] = {code: [] for code in codes.values()}
    for i, row in enumerate(rows):
        data["PZWH"].append(row.get("permit_no", f"PZ-{i + 1:03d}"))
        data["LX"].append(row.get("permit_type", "供地"))
        data["XMMC"].append(row.get("project", f"project {i + 1}"))
        data["YDDW"].append(row.get("applicant", f"applicant {i + 1}"))
        for key in ("approved_on", "expires_on"):
            value = row.get(key)
            data[codes[key]].append(None if value is None else str(value))
        data["ZT"].append(row.get("status", "已批"))
    gdf = gpd.GeoDataFrame(data, geometry=list(geoms), crs=crs)
    gdf["PZMJ"] = area_m2(gdf).round(1) if len(gdf) else []
    return gdf.to_crs(to_crs) if to_crs is not None else gdf

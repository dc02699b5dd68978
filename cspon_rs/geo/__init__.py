"""Geodata helpers: CRS choice and areas, raster pairs, vector layers."""

from cspon_rs.geo.crs import (
    SQM_PER_MU,
    area_crs_for,
    area_m2,
    gk_zone_epsg,
    to_mu,
    utm_epsg,
)

__all__ = ["SQM_PER_MU", "area_crs_for", "area_m2", "gk_zone_epsg", "to_mu", "utm_epsg"]

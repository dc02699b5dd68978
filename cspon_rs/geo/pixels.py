"""Ground size of a raster pixel from its CRS and affine transform (metres, any CRS)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["pixel_area_m2", "pixel_size_m"]


def pixel_area_m2(
    crs: object | None, transform: Sequence[float] | None, shape: tuple[int, int] | None = None
) -> float | None:
    """Ground area of one pixel in m², from a raster's CRS and affine transform ``(a, b, c, d, e, f)``.

    Projected CRSs use the axis unit (metres, feet...); geographic CRSs (degrees, e.g. OSCD's EPSG:4326)
    measure the pixel's edges on the CRS's ellipsoid at the centre of the image (``shape`` = (H, W)).
    Returns None when the CRS or the transform is unknown.
    """
    if crs is None or transform is None or len(transform) < 6:
        return None
    from pyproj import CRS
    from pyproj.exceptions import CRSError as ProjCRSError

    try:
        cr = CRS.from_user_input(crs)
    except ProjCRSError:
        return None
    a, b, c, d, e, f = (float(v) for v in list(transform)[:6])
    if cr.is_geographic:
        h, w = shape if shape is not None else (0, 0)
        x, y = c + a * w / 2 + b * h / 2, f + d * w / 2 + e * h / 2
        geod = cr.get_geod()
        if geod is None:
            return None
        _, _, dx = geod.inv(x, y, x + a, y + d)
        _, _, dy = geod.inv(x, y, x + b, y + e)
        return float(abs(dx * dy))
    factor = cr.axis_info[0].unit_conversion_factor if cr.axis_info else 1.0
    return float(abs(a * e - b * d) * factor * factor)


def pixel_size_m(
    crs: object | None, transform: Sequence[float] | None, shape: tuple[int, int] | None = None
) -> float | None:
    """Edge of a square pixel of the same ground area, m (None when unknown)."""
    area = pixel_area_m2(crs, transform, shape)
    return math.sqrt(area) if area is not None and area > 0 else None

"""A bounded GDAL block cache for every process that reads or writes scenes.

GDAL caches raster blocks up to ``GDAL_CACHEMAX`` (by default 5 % of physical RAM, e.g. 6 GB on a
128 GB node) in each process. Writing a county-sized GeoTIFF or reading many windows would fill it, so
client and worker memory would grow with the scene up to that cap. Inference runs its GDAL work under
a fixed cache of :data:`GDAL_CACHE_MB`, which keeps memory flat and independent of the scene size.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import rasterio

__all__ = ["GDAL_CACHE_MB", "bounded_gdal_cache"]

#: GDAL block cache per process during inference, MB (override with ``CSPON_GDAL_CACHE_MB``).
GDAL_CACHE_MB = int(os.environ.get("CSPON_GDAL_CACHE_MB", "256"))

P = ParamSpec("P")
R = TypeVar("R")


def bounded_gdal_cache(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` inside ``rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)``."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20):  # bytes: rasterio calls GDALSetCacheMax64
            return func(*args, **kwargs)

    return wrapper

"""Writing the probability and mask rasters: streamed into tiled GeoTIFFs, finished as COGs.

Blocks arrive in any order and are written straight into a tiled, compressed working GeoTIFF (so the
client never holds the scene). At the end the working file is copied to a Cloud-Optimized GeoTIFF (GDAL
``COG`` driver: internal tiles, overviews, compression) under a temporary name; the caller renames the
finished files into place, so a killed run never leaves a file that looks complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.crs import CRS

from cspon_rs.inference.windows import PixelWindow

__all__ = ["MASK_NODATA", "PROB_NODATA", "RasterSink", "partial_name", "to_cog"]

#: Nodata of ``change_prob.tif`` (float32; valid probabilities are in [0, 1]).
PROB_NODATA = -1.0
#: Nodata of ``change_mask.tif`` (uint8; 0 = no change, 1 = change).
MASK_NODATA = 255


def partial_name(final: Path, tag: str = "") -> Path:
    """Temporary name beside ``final``: hidden and ending in ``.partial`` (never mistaken for a result)."""
    return final.with_name(f".{final.name}{tag}.{os.getpid()}.partial")


class RasterSink:
    """A single-band tiled GeoTIFF opened for block-wise writing on a given grid.

    Args:
        path: Working file path.
        kind: ``"prob"`` (float32, nodata -1) or ``"mask"`` (uint8, nodata 255).
        width: Columns.
        height: Rows.
        crs: CRS of the grid (the before scene's).
        transform: Affine transform of the grid.
    """

    def __init__(
        self,
        path: Path,
        kind: Literal["prob", "mask"],
        *,
        width: int,
        height: int,
        crs: CRS,
        transform: rasterio.Affine,
    ) -> None:
        self.path = path
        self.kind = kind
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": width,
            "height": height,
            "count": 1,
            "crs": crs,
            "transform": transform,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
        }
        if kind == "prob":
            profile.update(dtype="float32", nodata=PROB_NODATA, predictor=3)
        else:
            profile.update(dtype="uint8", nodata=MASK_NODATA, predictor=2)
        self._ds = rasterio.open(path, "w", **profile)
        # Blocks never written (outside the AOI) are filled with nodata by GDAL when the file is closed.

    def write(self, block: PixelWindow, data: np.ndarray) -> None:
        """Write ``data`` (``(h, w)``) at ``block``."""
        self._ds.write(data.astype(self._ds.dtypes[0], copy=False), 1, window=block.to_rasterio())

    def close(self) -> None:
        """Flush and close the working file."""
        self._ds.close()

    def __enter__(self) -> RasterSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def to_cog(src: Path, dst: Path, kind: Literal["prob", "mask"]) -> Path:
    """Copy a working GeoTIFF to a Cloud-Optimized GeoTIFF (256 px tiles, DEFLATE, overviews).

    Overviews are averaged for probabilities and nearest-neighbour for the mask; both honour nodata.
    """
    rasterio.shutil.copy(
        src,
        dst,
        driver="COG",
        COMPRESS="DEFLATE",
        PREDICTOR="YES",
        BLOCKSIZE=256,
        OVERVIEWS="AUTO",
        OVERVIEW_RESAMPLING="AVERAGE" if kind == "prob" else "NEAREST",
        BIGTIFF="IF_SAFER",
    )
    return dst

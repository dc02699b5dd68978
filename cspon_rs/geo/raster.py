"""Opening rasters with clear errors, and putting date 2 on date 1's grid.

Names follow rasterio: ``transform`` (affine, pixel -> CRS), ``crs``, ``nodata``, ``window``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.io import DatasetReader
from rasterio.transform import array_bounds
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds

from cspon_rs.errors import CorruptFileError, CRSError, GridMismatchError, MissingFileError

__all__ = ["GridInfo", "aligned_pair", "grid_info", "grids_equal", "open_raster"]


@dataclass(frozen=True)
class GridInfo:
    """The grid of a raster: size in pixels, transform (pixel -> CRS units), CRS, band count, nodata."""

    width: int
    height: int
    transform: rasterio.Affine
    crs: CRS
    count: int
    dtype: str
    nodata: float | None
    band_descriptions: tuple[str | None, ...]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        west, south, east, north = array_bounds(self.height, self.width, self.transform)
        return min(west, east), min(south, north), max(west, east), max(south, north)

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        return abs(self.transform.a), abs(self.transform.e)


@contextmanager
def open_raster(path: str | Path, *, require_crs: bool = True) -> Iterator[DatasetReader]:
    """Open a raster for reading, turning GDAL errors into messages that name the file.

    Args:
        path: Path of a GeoTIFF (or any GDAL raster).
        require_crs: Raise :class:`CRSError` when the file has no CRS.

    Raises:
        MissingFileError: The file does not exist.
        CorruptFileError: GDAL cannot read it.
        CRSError: ``require_crs`` and the file has no CRS.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: raster file not found")
    try:
        src = rasterio.open(path)
    except RasterioIOError as exc:
        raise CorruptFileError(f"{path}: not a readable raster ({exc})") from exc
    try:
        if require_crs and src.crs is None:
            raise CRSError(
                f"{path}: raster has no CRS; assign one first, e.g. "
                f"`gdal_edit.py -a_srs EPSG:4490 {path.name}`"
            )
        yield src
    finally:
        src.close()


def grid_info(path: str | Path) -> GridInfo:
    """Read the grid (size, transform, CRS, bands, nodata) of a raster without reading pixels."""
    with open_raster(path) as src:
        return GridInfo(
            width=src.width,
            height=src.height,
            transform=src.transform,
            crs=src.crs,
            count=src.count,
            dtype=src.dtypes[0],
            nodata=src.nodata,
            band_descriptions=tuple(src.descriptions),
        )


def grids_equal(a: GridInfo, b: GridInfo, *, tolerance: float = 1e-6) -> bool:
    """True when two grids share CRS, size and transform (within ``tolerance`` of a pixel)."""
    if a.crs != b.crs or a.width != b.width or a.height != b.height:
        return False
    return bool(a.transform.almost_equals(b.transform, precision=tolerance * max(a.res)))


@contextmanager
def aligned_pair(
    before: str | Path,
    after: str | Path,
    *,
    resampling: Resampling = Resampling.bilinear,
) -> Iterator[tuple[DatasetReader, DatasetReader | WarpedVRT]]:
    """Open a before/after pair with the after scene warped on the fly onto the before scene's grid.

    The warp is a GDAL WarpedVRT: nothing is written to disk and windows are read lazily, so a whole
    county never has to fit in memory. When the grids already agree the after file is returned as is.

    Args:
        before: Date-1 raster; its grid (CRS, transform, size) is the reference.
        after: Date-2 raster, any CRS/resolution/origin overlapping date 1.
        resampling: Resampling used when date 2 has to be warped.

    Yields:
        ``(before_dataset, after_dataset)``, both readable with the same windows.

    Raises:
        GridMismatchError: The two scenes do not overlap, or their band counts differ.
    """
    with open_raster(before) as src_a, open_raster(after) as src_b:
        if src_a.count != src_b.count:
            raise GridMismatchError(
                f"band counts differ: {before} has {src_a.count}, {after} has {src_b.count}; "
                "both dates must carry the same bands in the same order"
            )
        left, bottom, right, top = transform_bounds(src_b.crs, src_a.crs, *src_b.bounds, densify_pts=21)
        a_left, a_bottom, a_right, a_top = src_a.bounds
        if right <= a_left or left >= a_right or top <= a_bottom or bottom >= a_top:
            raise GridMismatchError(
                f"scenes do not overlap: {before} covers {tuple(round(v, 3) for v in src_a.bounds)} and "
                f"{after} covers {tuple(round(v, 3) for v in (left, bottom, right, top))} in {src_a.crs}"
            )
        same = (
            src_a.crs == src_b.crs
            and src_a.width == src_b.width
            and src_a.height == src_b.height
            and src_a.transform.almost_equals(src_b.transform, precision=1e-6 * abs(src_a.transform.a))
        )
        if same:
            yield src_a, src_b
            return
        nodata = src_b.nodata if src_b.nodata is not None else 0
        with WarpedVRT(
            src_b,
            crs=src_a.crs,
            transform=src_a.transform,
            width=src_a.width,
            height=src_a.height,
            resampling=resampling,
            src_nodata=src_b.nodata,
            nodata=nodata,
            add_alpha=False,
        ) as vrt:
            yield src_a, vrt


def require_crs(crs: CRS | None, what: str) -> CRS:
    """Return ``crs`` or raise a :class:`CRSError` naming ``what`` has none."""
    if crs is None:
        raise CRSError(f"{what}: no CRS; assign one (e.g. EPSG:4490 for CGCS2000)")
    return crs

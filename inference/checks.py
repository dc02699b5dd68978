"""Input checks run before any pixel is predicted: CRS, bands, overlap, AOI, dates.

Every failure raises a :mod:`cspon_rs.errors` exception whose message names the file and the value at
fault, so the CLI can print it as one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import box

from cspon_rs.errors import BandMismatchError, GridMismatchError
from cspon_rs.geo.raster import GridInfo, aligned_pair, grid_info, grids_equal
from cspon_rs.geo.vector import read_vector, repair_geometries

__all__ = ["PairInfo", "check_pair", "date_from_name", "load_aoi"]


@dataclass(frozen=True)
class PairInfo:
    """What the checks learned about a before/after pair.

    Attributes:
        before: Grid of date 1 (the output grid).
        after: Grid of date 2 as stored.
        warped: True when date 2 is warped onto date 1's grid on the fly (CRS, resolution or origin differ).
    """

    before: GridInfo
    after: GridInfo
    warped: bool


def check_pair(before: str | Path, after: str | Path, *, card: Any | None = None) -> PairInfo:
    """Check that two scenes can be compared, without reading their pixels.

    Args:
        before: Date-1 raster (reference grid).
        after: Date-2 raster.
        card: The checkpoint's :class:`~cspon_rs.models.card.ModelCard`; ``None`` for the spectral
            detector (then both scenes only need the same band count).

    Raises:
        MissingFileError: A file does not exist.
        CorruptFileError: A file is not a readable raster.
        CRSError: A scene has no CRS.
        BandMismatchError: Band counts (or band names, when the files name them) differ from the card's,
            or from each other.
        GridMismatchError: The scenes do not overlap.
    """
    info_a = grid_info(before)
    info_b = grid_info(after)
    if card is not None:
        card.check_bands(info_a.band_descriptions, str(before))
        card.check_bands(info_b.band_descriptions, str(after))
    elif info_a.count != info_b.count:
        raise BandMismatchError(
            f"{after}: has {info_b.count} bands but {before} has {info_a.count}; both dates must carry "
            "the same bands in the same order"
        )
    with aligned_pair(before, after):  # raises GridMismatchError when the footprints do not overlap
        pass
    return PairInfo(before=info_a, after=info_b, warped=not grids_equal(info_a, info_b))


def load_aoi(path: str | Path, grid: GridInfo) -> shapely.Geometry:
    """Read an area of interest (any vector format, any CRS) as one geometry in the scene's CRS.

    Raises:
        MissingFileError, CorruptFileError, CRSError: From :func:`cspon_rs.geo.vector.read_vector`.
        GridMismatchError: The AOI has no polygon, or does not overlap the scene.
    """
    gdf = read_vector(path, to_crs=grid.crs)
    gdf, _ = repair_geometries(gdf, what=str(path))
    polys = [g for g in gdf.geometry if g is not None and g.geom_type in ("Polygon", "MultiPolygon")]
    if not polys:
        raise GridMismatchError(f"{path}: AOI layer has no polygon features")
    aoi = shapely.unary_union(polys)
    if not aoi.intersects(box(*grid.bounds)):
        raise GridMismatchError(
            f"{path}: AOI {tuple(round(v, 5) for v in aoi.bounds)} does not overlap the scene "
            f"{tuple(round(v, 5) for v in grid.bounds)} (both in {grid.crs})"
        )
    return aoi


_DATE_RE = re.compile(r"(?<!\d)((?:19|20)\d{2})[-_]?(\d{2})[-_]?(\d{2})(?!\d)")


def date_from_name(path: str | Path) -> date | None:
    """Acquisition date found in a file name (``before_20160927.tif``, ``S2_2018-03-23.tif``), else None."""
    for match in _DATE_RE.finditer(Path(path).name):
        try:
            return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        except ValueError:
            continue
    return None

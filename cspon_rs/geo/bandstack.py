"""Scenes delivered as one file per band (Sentinel-2 SAFE, OSCD) turned into one multi-band GeoTIFF.

``detect`` reads one raster per date with the bands in the model's order (cspon-rs 4-band stacks:
B04, B03, B02, B08). :func:`as_scene` accepts

* a folder of single-band files named with the Sentinel-2 band code (``T50QKK_20180323T024539_B04.tif``
  in OSCD, ``..._B04_10m.jp2`` in a SAFE ``IMG_DATA/R10m`` folder; searched recursively), stacked by
  :func:`stack_bands` into a tiled, deflate-compressed GeoTIFF whose band descriptions are the band codes;
* a multi-band raster or GDAL VRT whose band descriptions name the bands (used as is when they are already in
  order, re-stacked when not);
* any other raster, used as is (its bands are taken to be in the model's order).

Bands on a coarser grid (20 m B8A/B11/B12) are resampled bilinearly onto the grid of the first band.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.windows import Window

from cspon_rs.errors import BandMismatchError, MissingFileError
from cspon_rs.exports.fileio import atomic_path

__all__ = ["RASTER_SUFFIXES", "S2_RGBN", "as_scene", "band_descriptions", "find_band_files", "stack_bands"]

#: Sentinel-2 bands of the cspon-rs 4-band stacks, in order (red, green, blue, near infrared).
S2_RGBN: tuple[str, ...] = ("B04", "B03", "B02", "B08")
#: File suffixes searched in band folders.
RASTER_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".jp2", ".img")


def _band_pattern(band: str) -> re.Pattern[str]:
    return re.compile(rf"(?:^|[_\-.]){re.escape(band)}(?:[_\-.]|$)", re.IGNORECASE)


def find_band_files(folder: str | Path, bands: Sequence[str] = S2_RGBN) -> dict[str, Path]:
    """The file of each band code in a folder (searched recursively).

    When a band has several files (a SAFE product has B02 at 10, 20 and 60 m), the finest resolution wins.

    Raises:
        MissingFileError: The folder does not exist or a band has no file (the message lists what is there).
    """
    root = Path(folder)
    if not root.is_dir():
        raise MissingFileError(f"{root}: band folder not found")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
    out: dict[str, Path] = {}
    for band in bands:
        pattern = _band_pattern(band)
        matches = [p for p in files if pattern.search(p.stem)]
        if not matches:
            names = ", ".join(p.name for p in files[:12]) or "no raster files"
            raise MissingFileError(f"{root}: no file for band {band} (expected a name containing _{band}, e.g. "
                                   f"T50QKK_20180323T024539_{band}.tif); found: {names}")
        if len(matches) > 1:
            def resolution(path: Path) -> float:
                with rasterio.open(path) as src:
                    return float(abs(src.transform.a))

            matches.sort(key=lambda p: (resolution(p), len(str(p))))
        out[band] = matches[0]
    return out


def band_descriptions(path: str | Path) -> tuple[str | None, ...]:
    """Band descriptions of a raster (``None`` where unset)."""
    with rasterio.open(path) as src:
        return tuple(src.descriptions)


def stack_bands(
    sources: Sequence[str | Path],
    out_path: str | Path,
    *,
    names: Sequence[str] | None = None,
    block: int = 512,
) -> Path:
    """Stack single-band rasters into one GeoTIFF on the grid of the first (band descriptions = ``names``).

    Args:
        sources: One raster per band, in output order (band 1 of each is used).
        out_path: Target GeoTIFF (tiled, deflate; written atomically, mode 0644).
        names: Band descriptions (default: file stems).
        block: Rows per copy step (bounded memory for full Sentinel-2 tiles).

    Raises:
        BandMismatchError: A source has no CRS/transform while the first has one (cannot be aligned).
    """
    paths = [Path(s) for s in sources]
    labels = list(names) if names is not None else [p.stem for p in paths]
    out_path = Path(out_path)
    with rasterio.open(paths[0]) as ref:
        profile = {
            "driver": "GTiff", "width": ref.width, "height": ref.height, "count": len(paths), "dtype": ref.dtypes[0],
            "crs": ref.crs, "transform": ref.transform, "nodata": ref.nodata, "tiled": True, "blockxsize": 256,
            "blockysize": 256, "compress": "deflate", "predictor": 2, "BIGTIFF": "IF_SAFER",
        }
        ref_grid = (ref.crs, ref.transform, ref.width, ref.height)
    with atomic_path(out_path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for index, (path, label) in enumerate(zip(paths, labels, strict=True), start=1):
            with rasterio.open(path) as src:
                same = (src.crs, src.transform, src.width, src.height) == ref_grid
                if not same and (src.crs is None) != (ref_grid[0] is None):
                    raise BandMismatchError(f"{path}: has no georeference like {paths[0]}; cannot stack")
                if same:
                    for row in range(0, ref_grid[3], block):
                        window = Window(0, row, ref_grid[2], min(block, ref_grid[3] - row))
                        dst.write(src.read(1, window=window).astype(profile["dtype"], copy=False), index,
                                  window=window)
                else:
                    data = np.zeros((ref_grid[3], ref_grid[2]), dtype=profile["dtype"])
                    reproject(rasterio.band(src, 1), data, dst_transform=ref_grid[1], dst_crs=ref_grid[0],
                              resampling=Resampling.bilinear)
                    dst.write(data, index)
            dst.set_band_description(index, label)
    return out_path


def as_scene(
    path: str | Path,
    *,
    bands: Sequence[str] = S2_RGBN,
    cache_dir: str | Path | None = None,
) -> Path:
    """A raster with ``bands`` in order, from a band folder, a described multi-band raster/VRT, or a stack.

    Args:
        path: Folder of single-band files, or a raster/VRT.
        bands: Band codes in the model's order.
        cache_dir: Where stacks are written (default: beside the folder or file); a stack newer than its sources
            is reused. A folder's stack is named after its product (``T50QKK_20180323T024539_B04_B03_B02_B08.tif``
            for OSCD/SAFE names), so the acquisition date stays readable from the file name.

    Raises:
        MissingFileError: Path or a band missing; BandMismatchError: a described raster lacks a band.
    """
    source = Path(path)
    if not source.exists():
        raise MissingFileError(f"{source}: scene not found (give a raster, a VRT or a folder of band files)")
    cache = Path(cache_dir) if cache_dir is not None else source.parent
    tag = "_".join(bands)
    if source.is_dir():
        files = find_band_files(source, bands)
        # keep the product name (tile and date, e.g. T50QKK_20180323T024539) so dates can be read from it
        product = _band_pattern(bands[0]).split(files[bands[0]].stem)[0].strip("_-.") or source.name
        target = cache / f"{product}_{tag}.tif"
        newest = max(os.path.getmtime(p) for p in files.values())
        if target.is_file() and os.path.getmtime(target) >= newest and band_descriptions(target) == tuple(bands):
            return target
        return stack_bands([files[b] for b in bands], target, names=bands)
    described = band_descriptions(source)
    upper = [d.upper() if d else None for d in described]
    if not any(upper):
        return source
    if tuple(upper[: len(bands)]) == tuple(b.upper() for b in bands):
        return source
    missing = [b for b in bands if b.upper() not in upper]
    if missing:
        raise BandMismatchError(f"{source}: band descriptions {list(described)} lack {missing}; "
                                f"describe the bands (e.g. a VRT with <Description>B04</Description>) or give a folder")
    target = cache / f"{source.stem}_{tag}.tif"
    with rasterio.open(source) as src:
        profile = {**src.profile, "driver": "GTiff", "count": len(bands), "tiled": True, "blockxsize": 256,
                   "blockysize": 256, "compress": "deflate"}
        with atomic_path(target) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            for out_index, band in enumerate(bands, start=1):
                dst.write(src.read(upper.index(band.upper()) + 1), out_index)
                dst.set_band_description(out_index, band)
    return target

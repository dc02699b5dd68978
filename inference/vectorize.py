"""Change mask -> change patches (polygons with the attributes the warning engine reads).

The mask is polygonised block by block (``rasterio.features.shapes`` on each window, 4-connectivity) in
*pixel* coordinates, where every vertex is an integer, so pieces of one patch cut by block borders merge
exactly: pieces touching an inner block edge are dissolved with ``shapely.unary_union`` and split back
into parts. Patches are then put in the scene CRS, simplified and measured in a projected CRS
(:func:`cspon_rs.geo.crs.area_crs_for`: CGCS2000 Gauss-Krüger zone in China, UTM elsewhere), filtered by
area and given zonal statistics of the probability raster.

The ``change_patches`` layer schema (:data:`PATCH_COLUMNS`) is a contract with the warning engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.features import geometry_mask, shapes
from rasterio.windows import Window

from cspon_rs.geo.crs import SQM_PER_MU, area_crs_for
from cspon_rs.inference.gdal_env import bounded_gdal_cache
from cspon_rs.inference.outputs import MASK_NODATA, PROB_NODATA
from cspon_rs.inference.windows import plan_blocks

__all__ = ["PATCH_COLUMNS", "PATCH_LAYER", "PatchAttributes", "empty_patches", "mask_polygons", "vectorize_mask"]

#: Layer name in ``change_patches.gpkg``.
PATCH_LAYER = "change_patches"

#: Attribute columns of a change patch, in order (plus the polygon ``geometry`` in the scene CRS).
PATCH_COLUMNS: tuple[str, ...] = (
    "patch_id",  # str, P000001..., ordered north to south then west to east by centroid
    "area_m2",  # float, m² in the projected area CRS
    "area_mu",  # float, mu (1 mu = 666.667 m²)
    "prob_mean",  # float, mean change probability over the patch's pixels
    "prob_max",  # float, max change probability
    "centroid_lon",  # float, degrees, EPSG:4326
    "centroid_lat",  # float, degrees, EPSG:4326
    "t1",  # str, ISO date of the before scene (or null)
    "t2",  # str, ISO date of the after scene (or null)
    "scene_before",  # str, absolute path of the before scene
    "scene_after",  # str, absolute path of the after scene
    "detector",  # str, checkpoint ``name@version`` or "spectral-cva-otsu"
    "scene_before_sha256",  # str, hex SHA-256 of the before scene file when it was read
    "scene_after_sha256",  # str, hex SHA-256 of the after scene file
    "model_sha256",  # str, hex SHA-256 of the checkpoint weights (null for the spectral baseline)
)

_FLOAT_COLUMNS = ("area_m2", "area_mu", "prob_mean", "prob_max", "centroid_lon", "centroid_lat")


@dataclass(frozen=True)
class PatchAttributes:
    """Attributes shared by every patch of one run."""

    t1: str | None
    t2: str | None
    scene_before: str
    scene_after: str
    detector: str
    scene_before_sha256: str | None = None
    scene_after_sha256: str | None = None
    model_sha256: str | None = None


def empty_patches(crs: object) -> gpd.GeoDataFrame:
    """A patch layer with no rows but the full schema (string and float columns) in ``crs``."""
    data: dict[str, pd.Series] = {}
    for name in PATCH_COLUMNS:
        dtype = "float64" if name in _FLOAT_COLUMNS else "object"
        data[name] = pd.Series([], dtype=dtype)
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def mask_polygons(
    mask_path: str | Path, *, block_size: int = 1024, min_pixels: float = 0.0
) -> Iterator[shapely.Polygon]:
    """Polygons of the change pixels (value 1) of a mask raster, in *pixel* coordinates (x=col, y=row).

    Reads the mask one block at a time; a patch cut by block borders comes out as one polygon.
    Polygons covering fewer than ``min_pixels`` pixels are dropped as soon as they are complete (pieces
    touching a block border only after merging), so speckle never accumulates in memory.
    """
    edge_pieces: list[shapely.Polygon] = []
    with rasterio.open(mask_path) as src:
        height, width = src.height, src.width
        for block in plan_blocks(height, width, block_size):
            data = src.read(1, window=block.to_rasterio())
            change = data == 1
            if not change.any():
                continue
            offset = rasterio.Affine.translation(block.col_off, block.row_off)
            inner = (
                block.col_off if block.col_off > 0 else None,
                block.row_off if block.row_off > 0 else None,
                block.col_end if block.col_end < width else None,
                block.row_end if block.row_end < height else None,
            )
            for geom, _ in shapes(change.astype(np.uint8), mask=change, connectivity=4, transform=offset):
                poly = shapely.geometry.shape(geom)
                minx, miny, maxx, maxy = poly.bounds
                if minx == inner[0] or miny == inner[1] or maxx == inner[2] or maxy == inner[3]:
                    edge_pieces.append(poly)
                elif poly.area >= min_pixels:
                    yield poly
    if edge_pieces:
        merged = shapely.unary_union(edge_pieces)
        for part in shapely.get_parts(merged):
            if isinstance(part, shapely.Polygon) and not part.is_empty and part.area >= min_pixels:
                yield part


def _pixel_area_m2(crs: object, transform: rasterio.Affine, width: int, height: int) -> float:
    """Ground area (m², in the area CRS) of the largest of the scene's centre and corner pixels."""
    cols = (0, width // 2, max(width - 1, 0))
    rows = (0, height // 2, max(height - 1, 0))
    cells = [shapely.affinity.affine_transform(shapely.box(c, r, c + 1, r + 1), [transform.a, transform.b,
             transform.d, transform.e, transform.xoff, transform.yoff]) for r in rows for c in cols]
    frame = gpd.GeoDataFrame(geometry=cells, crs=crs)
    return float(frame.to_crs(area_crs_for(frame)).area.max())


def _zonal_stats(prob_src: rasterio.io.DatasetReader, pixel_poly: shapely.Polygon) -> tuple[float, float]:
    minx, miny, maxx, maxy = (round(v) for v in pixel_poly.bounds)
    window = Window(minx, miny, maxx - minx, maxy - miny)  # type: ignore[no-untyped-call]
    prob = prob_src.read(1, window=window)
    inside = geometry_mask(
        [pixel_poly], out_shape=prob.shape, transform=rasterio.Affine.translation(minx, miny), invert=True
    )
    values = prob[inside & (prob != PROB_NODATA)]
    if values.size == 0:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.max())


@bounded_gdal_cache
def vectorize_mask(
    mask_path: str | Path,
    prob_path: str | Path,
    attributes: PatchAttributes,
    *,
    min_area_m2: float = 0.0,
    simplify_m: float = 0.0,
    block_size: int = 1024,
) -> gpd.GeoDataFrame:
    """Turn a change mask into the ``change_patches`` layer.

    Args:
        mask_path: uint8 mask raster (1 = change, 0 = no change, 255 = nodata).
        prob_path: float32 probability raster on the same grid (nodata -1), for ``prob_mean``/``prob_max``.
        attributes: Dates, scene paths and checksums, detector id and checkpoint checksum stored on every patch.
        min_area_m2: Patches smaller than this (m², after simplification) are dropped.
        simplify_m: Douglas-Peucker tolerance in metres, applied in the projected area CRS
            (topology preserved); 0 keeps the pixel outlines.
        block_size: Rows/columns of mask read at a time.

    Returns:
        A GeoDataFrame in the mask's CRS with columns :data:`PATCH_COLUMNS` + ``geometry``, sorted by
        ``patch_id``. Empty (with the schema) when nothing changed.
    """
    with rasterio.open(mask_path) as src:
        crs, transform, width, height = src.crs, src.transform, src.width, src.height
        if src.nodata is not None and src.nodata != MASK_NODATA:
            raise ValueError(f"{mask_path}: mask nodata is {src.nodata}, expected {MASK_NODATA}")
    # Pre-filter in pixels with a safety margin (projection scale, simplification); exact filter below.
    min_pixels = 0.8 * min_area_m2 / _pixel_area_m2(crs, transform, width, height) if min_area_m2 > 0 else 0.0
    pixel_polys = list(mask_polygons(mask_path, block_size=block_size, min_pixels=min_pixels))
    if not pixel_polys:
        return empty_patches(crs)

    coeffs = [transform.a, transform.b, transform.d, transform.e, transform.xoff, transform.yoff]
    geoms = [shapely.affinity.affine_transform(p, coeffs) for p in pixel_polys]
    scene = gpd.GeoDataFrame({"_pix": np.arange(len(geoms))}, geometry=geoms, crs=crs)
    metric_crs = area_crs_for(scene)
    metric = scene.to_crs(metric_crs)
    if simplify_m > 0:
        simplified = metric.geometry.simplify(simplify_m, preserve_topology=True)
        metric = metric.set_geometry(simplified)
    areas = metric.geometry.area
    keep = (areas >= min_area_m2) & ~metric.geometry.is_empty
    metric = metric.loc[keep]
    if metric.empty:
        return empty_patches(crs)
    areas = areas.loc[keep]
    centroids = metric.geometry.centroid.to_crs(4326)

    with rasterio.open(prob_path) as prob_src:
        stats = [_zonal_stats(prob_src, pixel_polys[int(i)]) for i in metric["_pix"]]

    out = gpd.GeoDataFrame(
        {
            "area_m2": areas.to_numpy(dtype="float64"),
            "area_mu": areas.to_numpy(dtype="float64") / SQM_PER_MU,
            "prob_mean": [s[0] for s in stats],
            "prob_max": [s[1] for s in stats],
            "centroid_lon": centroids.x.to_numpy(),
            "centroid_lat": centroids.y.to_numpy(),
            "t1": attributes.t1,
            "t2": attributes.t2,
            "scene_before": attributes.scene_before,
            "scene_after": attributes.scene_after,
            "detector": attributes.detector,
            "scene_before_sha256": attributes.scene_before_sha256,
            "scene_after_sha256": attributes.scene_after_sha256,
            "model_sha256": attributes.model_sha256,
        },
        geometry=metric.geometry.to_crs(crs).to_numpy(),
        crs=crs,
    )
    order = np.lexsort((out["centroid_lon"].round(7).to_numpy(), -out["centroid_lat"].round(7).to_numpy()))
    out = out.iloc[order].reset_index(drop=True)
    out.insert(0, "patch_id", [f"P{i + 1:06d}" for i in range(len(out))])
    return out[[*PATCH_COLUMNS, "geometry"]]

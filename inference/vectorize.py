"""Change mask -> change patches (polygons with the attributes the warning engine reads).

The mask is handled block by block, with array calls only: each block is labelled once
(``scipy.ndimage.label``, 4-connectivity), its patch statistics (pixel count, sum and max of the
probability) come from one ``numpy.bincount`` / ``ndimage.maximum`` pass over the labels, and its polygons
from one ``rasterio.features.shapes`` call on the label image, in *pixel* coordinates where every vertex is
an integer. Pieces of one patch cut by block borders therefore merge exactly: they are dissolved once at
the end (``shapely.unary_union``), their statistics summed (an ``STRtree`` query maps pieces to patches).
Patches are then put in the scene CRS (one vectorised ``shapely.transform``), simplified and measured in a
projected CRS (:func:`cspon_rs.geo.crs.area_crs_for`: CGCS2000 Gauss-Krüger zone in China, UTM elsewhere)
and filtered by area.

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
from rasterio.features import shapes

from cspon_rs.geo.crs import SQM_PER_MU, area_crs_for
from cspon_rs.inference.gdal_env import bounded_gdal_cache
from cspon_rs.inference.outputs import MASK_NODATA, PROB_NODATA
from cspon_rs.inference.windows import plan_blocks

__all__ = [
    "PATCH_COLUMNS",
    "PATCH_LAYER",
    "PatchAttributes",
    "PixelPatches",
    "empty_patches",
    "mask_polygons",
    "pixel_patches",
    "vectorize_mask",
]

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


@dataclass
class PixelPatches:
    """Change patches in *pixel* coordinates (x = column, y = row) with their probability statistics.

    Attributes:
        polygons: ``(n,)`` shapely Polygons.
        count: ``(n,)`` pixels per patch.
        prob_sum: ``(n,)`` sum of the change probability over the patch's pixels (float64).
        prob_max: ``(n,)`` max change probability.
    """

    polygons: np.ndarray
    count: np.ndarray
    prob_sum: np.ndarray
    prob_max: np.ndarray

    def __len__(self) -> int:
        return len(self.polygons)


def _block_patches(change: np.ndarray, prob: np.ndarray | None, col_off: int, row_off: int) -> PixelPatches:
    """Label one block's change pixels (4-connected) and polygonise + measure every label in one pass each."""
    from scipy import ndimage

    labels, n = ndimage.label(change, structure=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    if n == 0:
        return _empty_pixel_patches()
    flat = labels.ravel()
    count = np.bincount(flat, minlength=n + 1)[1:]
    if prob is None:
        prob_sum = np.full(n, np.nan)
        prob_max = np.full(n, np.nan)
    else:
        inside = flat > 0
        owner = flat[inside]
        values = prob.ravel()[inside].astype(np.float64)
        values[values == PROB_NODATA] = np.nan
        prob_sum = np.bincount(owner, weights=np.nan_to_num(values), minlength=n + 1)[1:]
        # Unordered max per label (ufunc.at, no sort): ndimage.maximum argsorts the whole block.
        prob_max = np.full(n + 1, -np.inf)
        np.maximum.at(prob_max, owner, np.nan_to_num(values, nan=-np.inf))
        prob_max = prob_max[1:]
    polys = _label_polygons(labels, change, n, rasterio.Affine.translation(col_off, row_off))
    return PixelPatches(polys, count, prob_sum, prob_max)


def _label_polygons(labels: np.ndarray, change: np.ndarray, n: int, offset: rasterio.Affine) -> np.ndarray:
    """``(n,)`` Polygons of labels 1..n: one ``shapes`` pass, then rings and polygons built in two array calls."""
    rings: list[np.ndarray] = []
    owners: list[int] = []
    for geom, value in shapes(labels.astype(np.int32), mask=change, connectivity=4, transform=offset):
        for ring in geom["coordinates"]:  # exterior first, then holes
            rings.append(np.asarray(ring, dtype=np.float64))
            owners.append(int(value) - 1)
    order = np.argsort(np.asarray(owners), kind="stable")  # shapely wants increasing indices, shell first
    lengths = np.array([len(rings[i]) for i in order])
    coords = np.concatenate([rings[i] for i in order])
    ring_geoms = shapely.linearrings(coords, indices=np.repeat(np.arange(len(order)), lengths))
    polys = np.empty(n, dtype=object)
    polys[:] = shapely.polygons(ring_geoms, indices=np.asarray(owners)[order])
    return polys


def _empty_pixel_patches() -> PixelPatches:
    return PixelPatches(np.empty(0, dtype=object), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))


def _concat(parts: list[PixelPatches]) -> PixelPatches:
    if not parts:
        return _empty_pixel_patches()
    return PixelPatches(
        np.concatenate([p.polygons for p in parts]),
        np.concatenate([p.count for p in parts]),
        np.concatenate([p.prob_sum for p in parts]),
        np.concatenate([p.prob_max for p in parts]),
    )


def _merge_edge_pieces(pieces: PixelPatches) -> PixelPatches:
    """Dissolve pieces cut by block borders (integer pixel vertices: exact) and add up their statistics."""
    if len(pieces) == 0:
        return pieces
    merged = shapely.get_parts(shapely.unary_union(pieces.polygons))
    merged = merged[shapely.get_type_id(merged) == 3]  # polygons only
    # Each piece lies in exactly one merged patch: find it with one spatial-index query of interior points.
    tree = shapely.STRtree(merged)
    piece_idx, patch_idx = tree.query(shapely.point_on_surface(pieces.polygons), predicate="within")
    n = len(merged)
    count = np.bincount(patch_idx, weights=pieces.count[piece_idx], minlength=n).astype(np.int64)
    prob_sum = np.bincount(patch_idx, weights=pieces.prob_sum[piece_idx], minlength=n)
    prob_max = np.full(n, -np.inf)
    np.maximum.at(prob_max, patch_idx, pieces.prob_max[piece_idx])
    return PixelPatches(merged, count, prob_sum, prob_max)


def pixel_patches(
    mask_path: str | Path, prob_path: str | Path | None = None, *, block_size: int = 1024, min_pixels: float = 0.0
) -> PixelPatches:
    """Change patches (value 1) of a mask raster in pixel coordinates, with statistics of ``prob_path``.

    Reads mask and probability one block at a time; each block is labelled once (4-connectivity), every
    label polygonised by one ``rasterio.features.shapes`` call and measured with ``numpy.bincount``. Patches
    touching an inner block border are collected and dissolved once at the end. Patches of fewer than
    ``min_pixels`` pixels are dropped as soon as they are complete, so speckle never accumulates.
    """
    inner_parts: list[PixelPatches] = []
    edge_parts: list[PixelPatches] = []
    with rasterio.open(mask_path) as src, (rasterio.open(prob_path) if prob_path else _nullcontext()) as psrc:
        height, width = src.height, src.width
        for block in plan_blocks(height, width, block_size):
            win = block.to_rasterio()
            change = src.read(1, window=win) == 1
            if not change.any():
                continue
            prob = psrc.read(1, window=win) if psrc is not None else None
            found = _block_patches(change, prob, block.col_off, block.row_off)
            bounds = shapely.bounds(found.polygons)
            on_edge = np.zeros(len(found), bool)
            if block.col_off > 0:
                on_edge |= bounds[:, 0] == block.col_off
            if block.row_off > 0:
                on_edge |= bounds[:, 1] == block.row_off
            if block.col_end < width:
                on_edge |= bounds[:, 2] == block.col_end
            if block.row_end < height:
                on_edge |= bounds[:, 3] == block.row_end
            keep = ~on_edge & (found.count >= min_pixels)
            inner_parts.append(_take(found, keep))
            edge_parts.append(_take(found, on_edge))
    merged = _merge_edge_pieces(_concat(edge_parts))
    merged = _take(merged, merged.count >= min_pixels)
    return _concat([*inner_parts, merged])


def _take(p: PixelPatches, keep: np.ndarray) -> PixelPatches:
    return PixelPatches(p.polygons[keep], p.count[keep], p.prob_sum[keep], p.prob_max[keep])


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def mask_polygons(
    mask_path: str | Path, *, block_size: int = 1024, min_pixels: float = 0.0
) -> Iterator[shapely.Polygon]:
    """Polygons of the change pixels (value 1) of a mask raster, in *pixel* coordinates (x=col, y=row).

    Reads the mask one block at a time; a patch cut by block borders comes out as one polygon. Polygons
    covering fewer than ``min_pixels`` pixels are dropped (see :func:`pixel_patches`).
    """
    yield from pixel_patches(mask_path, None, block_size=block_size, min_pixels=min_pixels).polygons


def _pixel_area_m2(crs: object, transform: rasterio.Affine, width: int, height: int) -> float:
    """Ground area (m², in the area CRS) of the largest of the scene's centre and corner pixels."""
    cols = (0, width // 2, max(width - 1, 0))
    rows = (0, height // 2, max(height - 1, 0))
    cells = [shapely.affinity.affine_transform(shapely.box(c, r, c + 1, r + 1), [transform.a, transform.b,
             transform.d, transform.e, transform.xoff, transform.yoff]) for r in rows for c in cols]
    frame = gpd.GeoDataFrame(geometry=cells, crs=crs)
    return float(frame.to_crs(area_crs_for(frame)).area.max())


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
    found = pixel_patches(mask_path, prob_path, block_size=block_size, min_pixels=min_pixels)
    if len(found) == 0:
        return empty_patches(crs)

    coeffs = np.array([[transform.a, transform.b], [transform.d, transform.e]])
    shift = np.array([transform.xoff, transform.yoff])
    geoms = shapely.transform(found.polygons, lambda xy: xy @ coeffs.T + shift)  # one vectorised call
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
    idx = metric["_pix"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = [(m, x) for m, x in zip(found.prob_sum[idx] / found.count[idx], found.prob_max[idx], strict=True)]

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

"""Per-patch features for the warning classifier: what a change patch looks like, in numbers.

The pixel model says *where* something changed; whether a patch is worth a field trip is decided on the
patch as a whole (:mod:`cspon_rs.inference.classify`). This module turns each patch into one row of
features that do not depend on the scene's radiometric scale, so that 8-bit, 16-bit DN, reflectance x 10000
and 0-1 floats of the same pixels give the same row:

* **geometry** (metres, in the patch's Gauss-Krüger/UTM zone): log area, compactness 4πA/P², elongation
  (long/short side of the minimum rotated rectangle), mean width 2A/P, holes;
* **probability**: mean, standard deviation and maximum of the calibrated change probability inside the
  patch, and the share of its pixels at or above 0.5;
* **per-band change**: each date is standardised by its own robust scene statistics (median and the
  2-98 % spread of every band, measured on a decimated read), then the patch's mean change, mean absolute
  change and the within-patch standard deviation of both dates per band;
* **brightness and texture**: mean standardised brightness of both dates and the mean gradient magnitude
  (Sobel) of the brightness on both dates (edges appear where buildings are built);
* **indices** the bands allow: NDVI and NDWI (red/green + NIR) on both dates; for RGB, the excess-green
  index (2G-R-B)/(R+G+B) and the saturation (max-min)/max on both dates;
* **ring context**: mean probability and mean absolute change in a ring of :data:`RING_PX` pixels around the
  patch, and the patch-minus-ring contrasts (a real building stands out from its surroundings; a scene-wide
  radiometric difference does not);
* **scene context**: the share of the scene's valid area the detector flagged, and its patches per km²
  (a scene where a third of the pixels are "change" is a radiometry problem, not a building boom).

Pixel statistics are accumulated block by block as sums (``np.bincount`` over a patch-id raster), so the
memory is bounded by the block, not the scene or the number of patches, exactly as detection is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from scipy import ndimage

from cspon_rs.geo.crs import area_crs_for
from cspon_rs.geo.raster import aligned_pair
from cspon_rs.inference.suppress import BandRoles, band_roles
from cspon_rs.inference.windows import plan_blocks

__all__ = [
    "COMPATIBLE_VERSIONS",
    "FEATURE_VERSION",
    "SceneScale",
    "feature_names",
    "features_from_scenes",
    "geometry_features",
    "scene_scale",
]

#: Bumped whenever a feature's definition changes (a classifier records the version it was fitted with).
FEATURE_VERSION = 2
#: Versions whose features this code computes identically (2 only added the ring context to 1).
COMPATIBLE_VERSIONS: frozenset[int] = frozenset({1, 2})

_EPS = 1e-6
#: Width of the ring around a patch that the context features read, in pixels.
RING_PX = 3


@dataclass(frozen=True)
class SceneScale:
    """Robust per-band statistics of one date: ``z = (x - median) / spread`` standardises it.

    Attributes:
        median: ``(C,)`` per-band median of valid pixels, in the raster's units.
        spread: ``(C,)`` per-band 98th minus 2nd percentile (never below a tiny positive value).
    """

    median: np.ndarray
    spread: np.ndarray


def scene_scale(sample: np.ndarray, valid: np.ndarray | None = None) -> SceneScale:
    """Robust statistics of a ``(C, H, W)`` sample of a date (a decimated read is enough).

    Constant bands get spread 1 in the raster's units, so their standardised values stay finite; the input
    checks of detection refuse such bands before they get here.
    """
    c = sample.shape[0]
    flat = sample.reshape(c, -1).astype(np.float64)
    if valid is not None:
        flat = flat[:, valid.reshape(-1)]
    flat = flat[:, np.all(np.isfinite(flat), axis=0)]
    if flat.shape[1] == 0:
        return SceneScale(np.zeros(c), np.ones(c))
    lo, med, hi = np.percentile(flat, [2.0, 50.0, 98.0], axis=1)
    spread = np.where(hi - lo > _EPS * np.maximum(np.abs(med), 1.0), hi - lo, 1.0)
    return SceneScale(med, spread)


# --------------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------------


def _index_kinds(roles: BandRoles, bands: Sequence[str | None]) -> list[str]:
    kinds = []
    if roles.has_ndvi:
        kinds.append("ndvi")
    if roles.has_ndwi:
        kinds.append("ndwi")
    if _rgb_triplet(bands) is not None:
        kinds += ["exg", "sat"]
    return kinds


def _rgb_triplet(bands: Sequence[str | None]) -> tuple[int, int, int] | None:
    roles = band_roles(bands)
    blue = next((i for i, b in enumerate(bands) if b and b.upper() in ("B02", "B2", "B", "BLUE")), None)
    if roles.red is None or roles.green is None or blue is None:
        return None
    return roles.red, roles.green, blue


def _band_labels(bands: Sequence[str | None]) -> list[str]:
    return [str(b).lower() if b else f"band{i + 1}" for i, b in enumerate(bands)]


def feature_names(bands: Sequence[str | None]) -> list[str]:
    """The feature columns, in order, for scenes with these bands (the checkpoint card's band names)."""
    geo = ["log_area_m2", "compactness", "elongation", "log_width_m", "holes"]
    prob = ["prob_mean", "prob_std", "prob_max", "prob_high_share"]
    per_band = []
    for b in _band_labels(bands):
        per_band += [f"d_{b}", f"absd_{b}", f"std1_{b}", f"std2_{b}"]
    tex = ["bright_t1", "bright_t2", "grad_t1", "grad_t2", "grad_change"]
    idx = []
    for k in _index_kinds(band_roles(bands), bands):
        idx += [f"{k}_t1", f"{k}_t2", f"{k}_change"]
    ring = ["ring_prob_mean", "ring_absd", "prob_contrast", "absd_contrast"]
    scene = ["scene_flagged_share", "scene_log_patches_per_km2"]
    return geo + prob + per_band + tex + idx + ring + scene


# --------------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------------


def geometry_features(patches: gpd.GeoDataFrame, metres_per_unit: float | None = None) -> pd.DataFrame:
    """Shape of each patch in metres.

    Args:
        patches: Patch polygons. With a CRS they are measured in :func:`area_crs_for`'s zone; without one
            their coordinates are taken as planar units of ``metres_per_unit`` metres (pixel coordinates of
            an unreferenced pair times its pixel size).
        metres_per_unit: Scale of CRS-less coordinates (default 1).
    """
    if patches.crs is not None and len(patches):
        geoms = np.asarray(patches.geometry.to_crs(area_crs_for(patches)).values, dtype=object)
        scale = 1.0
    else:
        geoms = np.asarray(patches.geometry.values, dtype=object)
        scale = float(metres_per_unit or 1.0)
    area = shapely.area(geoms) * scale**2 if len(geoms) else np.zeros(0)
    perim = shapely.length(geoms) * scale if len(geoms) else np.zeros(0)
    elong = np.ones(len(geoms))
    holes = np.zeros(len(geoms))
    if len(geoms):
        rects = shapely.minimum_rotated_rectangle(geoms)
        is_poly = shapely.get_type_id(rects) == 3
        rings = shapely.get_exterior_ring(rects[is_poly])
        xy, which = shapely.get_coordinates(rings, return_index=True)
        first = np.searchsorted(which, np.arange(len(rings)))  # the first 3 corners of each rectangle
        ok = np.bincount(which, minlength=len(rings)) >= 4
        a = np.hypot(*(xy[first[ok] + 1] - xy[first[ok]]).T)
        b = np.hypot(*(xy[first[ok] + 2] - xy[first[ok] + 1]).T)
        idx = np.flatnonzero(is_poly)[ok]
        elong[idx] = np.maximum(a, b) / np.maximum(np.minimum(a, b), _EPS)
        parts = shapely.get_parts(geoms, return_index=True)
        holes[:] = np.bincount(parts[1], weights=shapely.get_num_interior_rings(parts[0]), minlength=len(geoms))
    with np.errstate(divide="ignore", invalid="ignore"):
        compact = np.where(perim > 0, 4.0 * math.pi * area / np.maximum(perim, _EPS) ** 2, 0.0)
        width = np.where(perim > 0, 2.0 * area / np.maximum(perim, _EPS), 0.0)
    return pd.DataFrame(
        {
            "log_area_m2": np.log10(np.maximum(area, 1.0)),
            "compactness": compact,
            "elongation": np.log10(np.maximum(elong, 1.0)),
            "log_width_m": np.log10(np.maximum(width, 0.1)),
            "holes": np.minimum(holes, 20.0),
        },
        index=patches.index,
    )


# --------------------------------------------------------------------------------------------------------
# Pixel sums, block by block
# --------------------------------------------------------------------------------------------------------


class _Sums:
    """Per-patch running sums (row 0 collects pixels outside every patch and is dropped)."""

    def __init__(self, n: int, channels: int, n_index: int) -> None:
        self.n = n
        self.count = np.zeros(n + 1)
        self.prob = np.zeros((3, n + 1))  # sum p, sum p², count p >= 0.5
        self.prob_max = np.zeros(n + 1)
        self.band = np.zeros((5, channels, n + 1))  # sum z1, z2, z1², z2², |z2 - z1|
        self.tex = np.zeros((4, n + 1))  # sum bright1, bright2, grad1, grad2
        self.index = np.zeros((2, n_index, n + 1))
        self.index_count = np.zeros((n_index, n + 1))
        self.ring = np.zeros((3, n + 1))  # count, sum p, sum mean-over-bands |z2 - z1|

    def add(
        self,
        i: np.ndarray,
        p: np.ndarray,
        z1: np.ndarray,
        z2: np.ndarray,
        tex: np.ndarray,
        indices: list[tuple[np.ndarray, np.ndarray]],
    ) -> None:
        """Add the patch pixels of one block.

        Args:
            i: ``(n,)`` patch id of each pixel (1..N).
            p: ``(n,)`` change probability.
            z1: ``(C, n)`` standardised date 1; ``z2`` date 2.
            tex: ``(4, n)`` brightness of both dates, gradient magnitude of both dates.
            indices: Per index kind, ``(n,)`` values of both dates (NaN where undefined).
        """
        if i.size == 0:
            return
        m = self.n + 1

        def bc(w: np.ndarray) -> np.ndarray:
            out: np.ndarray = np.bincount(i, weights=w.astype(np.float64), minlength=m)
            return out

        self.count += np.bincount(i, minlength=m)
        self.prob[0] += bc(p)
        self.prob[1] += bc(p * p)
        self.prob[2] += bc((p >= 0.5).astype(np.float64))
        np.maximum.at(self.prob_max, i, p)
        for c in range(z1.shape[0]):
            a, b = z1[c], z2[c]
            self.band[0, c] += bc(a)
            self.band[1, c] += bc(b)
            self.band[2, c] += bc(a * a)
            self.band[3, c] += bc(b * b)
            self.band[4, c] += bc(np.abs(b - a))
        for k in range(4):
            self.tex[k] += bc(tex[k])
        for k, (v1, v2) in enumerate(indices):
            ok = np.isfinite(v1) & np.isfinite(v2)
            self.index_count[k] += np.bincount(i[ok], minlength=m)
            self.index[0, k] += np.bincount(i[ok], weights=v1[ok], minlength=m)
            self.index[1, k] += np.bincount(i[ok], weights=v2[ok], minlength=m)

    def add_ring(self, i: np.ndarray, p: np.ndarray, z1: np.ndarray, z2: np.ndarray) -> None:
        """Add one block's ring pixels (``i``: the patch whose ring each pixel is in)."""
        if i.size == 0:
            return
        m = self.n + 1
        self.ring[0] += np.bincount(i, minlength=m)
        self.ring[1] += np.bincount(i, weights=p.astype(np.float64), minlength=m)
        self.ring[2] += np.bincount(i, weights=np.abs(z2 - z1).mean(axis=0), minlength=m)

    def table(self, names: list[str], channels: int, kinds: list[str]) -> dict[str, np.ndarray]:
        """Means and standard deviations per patch (rows 1..n)."""
        n = np.maximum(self.count[1:], 1.0)
        out: dict[str, np.ndarray] = {}
        pm = self.prob[0, 1:] / n
        out["prob_mean"] = pm
        out["prob_std"] = np.sqrt(np.maximum(self.prob[1, 1:] / n - pm * pm, 0.0))
        out["prob_max"] = self.prob_max[1:]
        out["prob_high_share"] = self.prob[2, 1:] / n
        labels = [nm[2:] for nm in names if nm.startswith("d_")]
        for c in range(channels):
            m1, m2 = self.band[0, c, 1:] / n, self.band[1, c, 1:] / n
            out[f"d_{labels[c]}"] = m2 - m1
            out[f"absd_{labels[c]}"] = self.band[4, c, 1:] / n
            out[f"std1_{labels[c]}"] = np.sqrt(np.maximum(self.band[2, c, 1:] / n - m1 * m1, 0.0))
            out[f"std2_{labels[c]}"] = np.sqrt(np.maximum(self.band[3, c, 1:] / n - m2 * m2, 0.0))
        out["bright_t1"], out["bright_t2"] = self.tex[0, 1:] / n, self.tex[1, 1:] / n
        out["grad_t1"], out["grad_t2"] = self.tex[2, 1:] / n, self.tex[3, 1:] / n
        out["grad_change"] = out["grad_t2"] - out["grad_t1"]
        for k, kind in enumerate(kinds):
            cnt = self.index_count[k, 1:]
            with np.errstate(divide="ignore", invalid="ignore"):
                v1 = np.where(cnt > 0, self.index[0, k, 1:] / np.maximum(cnt, 1), np.nan)
                v2 = np.where(cnt > 0, self.index[1, k, 1:] / np.maximum(cnt, 1), np.nan)
            out[f"{kind}_t1"], out[f"{kind}_t2"], out[f"{kind}_change"] = v1, v2, v2 - v1
        rn = np.maximum(self.ring[0, 1:], 1.0)
        has_ring = self.ring[0, 1:] > 0
        absd_in = self.band[4, :, 1:].mean(axis=0) / n
        out["ring_prob_mean"] = np.where(has_ring, self.ring[1, 1:] / rn, out["prob_mean"])
        out["ring_absd"] = np.where(has_ring, self.ring[2, 1:] / rn, absd_in)
        out["prob_contrast"] = out["prob_mean"] - out["ring_prob_mean"]
        out["absd_contrast"] = absd_in - out["ring_absd"]
        return out


def _gradient(img: np.ndarray) -> np.ndarray:
    gx = ndimage.sobel(img, axis=1, mode="nearest")
    gy = ndimage.sobel(img, axis=0, mode="nearest")
    out: np.ndarray = np.hypot(gx, gy) / 8.0
    return out


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    den = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        out: np.ndarray = np.where(np.abs(den) > _EPS, (a - b) / den, np.nan)
    return out


def _indices(raw: np.ndarray, bands: Sequence[str | None], kinds: list[str]) -> list[np.ndarray]:
    """Index images of one date from raw values shifted to be non-negative (ratios are scale-invariant)."""
    roles = band_roles(bands)
    out = []
    for kind in kinds:
        if kind == "ndvi":
            out.append(_ratio(raw[roles.nir], raw[roles.red]))
        elif kind == "ndwi":
            out.append(_ratio(raw[roles.green], raw[roles.nir]))
        else:
            trip = _rgb_triplet(bands)
            assert trip is not None
            r, g, b = (raw[k] for k in trip)
            total = r + g + b
            with np.errstate(divide="ignore", invalid="ignore"):
                if kind == "exg":
                    out.append(np.where(total > _EPS, (2 * g - r - b) / total, np.nan))
                else:
                    hi, lo = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
                    out.append(np.where(hi > _EPS, (hi - lo) / hi, np.nan))
    return out


def _standardise(raw: np.ndarray, scale: SceneScale) -> np.ndarray:
    """``(C, ...)`` raw values -> robust z, clipped to ±10."""
    shape = (-1,) + (1,) * (raw.ndim - 1)
    out: np.ndarray = np.clip((raw - scale.median.reshape(shape)) / scale.spread.reshape(shape), -10.0, 10.0)
    return out


def _brightness(raw: np.ndarray, scale: SceneScale) -> np.ndarray:
    """Mean standardised value over the bands of a ``(C, H, W)`` block (float32, band by band)."""
    out = np.zeros(raw.shape[1:], dtype=np.float32)
    for c in range(raw.shape[0]):
        out += np.clip((raw[c].astype(np.float32) - np.float32(scale.median[c])) / np.float32(scale.spread[c]),
                       -10.0, 10.0)
    out /= raw.shape[0]
    return out


def _accumulate(
    sums: _Sums,
    ids: np.ndarray,
    ring_ids: np.ndarray,
    prob: np.ndarray,
    raw1: np.ndarray,
    raw2: np.ndarray,
    scales: tuple[SceneScale, SceneScale],
    bands: Sequence[str | None],
    kinds: list[str],
) -> None:
    """Add one block. Only the edges need the whole block (their Sobel window); every other statistic is
    computed on the pixels of the patches and their rings alone."""
    in_patch = ids > 0
    in_ring = (ring_ids > 0) & ~in_patch
    if not in_patch.any() and not in_ring.any():
        return
    if raw1.dtype.kind == "f":  # float scenes may carry NaN (integer ones cannot): a pass only for them
        raw1, raw2 = np.nan_to_num(raw1), np.nan_to_num(raw2)
    c = raw1.shape[0]
    flat1, flat2 = raw1.reshape(c, -1), raw2.reshape(c, -1)
    p_flat = prob.reshape(-1)
    pix = np.flatnonzero(in_patch)
    if pix.size:
        b1, b2 = _brightness(raw1, scales[0]), _brightness(raw2, scales[1])
        tex = np.stack([b1.reshape(-1)[pix], b2.reshape(-1)[pix], _gradient(b1).reshape(-1)[pix],
                        _gradient(b2).reshape(-1)[pix]]).astype(np.float64)
        r1, r2 = flat1[:, pix].astype(np.float64), flat2[:, pix].astype(np.float64)
        idx1, idx2 = _indices(r1, bands, kinds), _indices(r2, bands, kinds)
        sums.add(ids.reshape(-1)[pix], np.nan_to_num(p_flat[pix].astype(np.float64)), _standardise(r1, scales[0]),
                 _standardise(r2, scales[1]), tex,
                 list(zip(idx1, idx2, strict=True)))
    rpix = np.flatnonzero(in_ring)
    if rpix.size:
        r1, r2 = flat1[:, rpix].astype(np.float64), flat2[:, rpix].astype(np.float64)
        sums.add_ring(ring_ids.reshape(-1)[rpix], np.nan_to_num(p_flat[rpix].astype(np.float64)),
                      _standardise(r1, scales[0]),
                      _standardise(r2, scales[1]))


def _finish(
    sums: _Sums,
    geometry: pd.DataFrame,
    bands: Sequence[str | None],
    kinds: list[str],
    flagged_share: float,
    patches_per_km2: float,
) -> pd.DataFrame:
    names = feature_names(bands)
    cols = sums.table(names, len(bands), kinds)
    frame = pd.DataFrame(cols, index=geometry.index)
    frame = pd.concat([geometry, frame], axis=1)
    frame["scene_flagged_share"] = flagged_share
    frame["scene_log_patches_per_km2"] = math.log10(1.0 + patches_per_km2)
    return frame[names].astype("float64")


# --------------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------------


def _decimated(src: rasterio.io.DatasetReader, max_px: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    f = max(1, math.ceil(max(src.height, src.width) / max_px))
    shape = (src.count, max(1, src.height // f), max(1, src.width // f))
    data = src.read(out_shape=shape, resampling=Resampling.nearest, out_dtype="float64")
    mask = src.dataset_mask(out_shape=shape[1:], resampling=Resampling.nearest) > 0
    return data, mask


def _blocks(height: int, width: int, block_size: int) -> Iterator[Window]:
    for b in plan_blocks(height, width, block_size):
        yield Window(b.col_off, b.row_off, b.width, b.height)  # type: ignore[no-untyped-call]


def _pixel_area_m2(src: rasterio.io.DatasetReader, patches: gpd.GeoDataFrame, patch_px: float) -> float:
    """Ground area of a pixel: from the patches' own ``area_m2`` (measured by the vectoriser in metres)
    when there are any, else from a projected grid's transform (1 for a geographic grid without patches)."""
    if patch_px > 0 and "area_m2" in patches.columns:
        return float(pd.to_numeric(patches["area_m2"]).sum()) / patch_px
    if src.crs is not None and src.crs.is_projected:
        return float(abs(src.transform.a * src.transform.e))
    return 1.0


def features_from_scenes(
    patches: gpd.GeoDataFrame,
    before: str | Path,
    after: str | Path,
    prob: str | Path,
    bands: Sequence[str | None],
    *,
    block_size: int = 2048,
) -> pd.DataFrame:
    """Features of a detection's patches, read block by block from the scenes and the probability raster.

    Args:
        patches: The ``change_patches`` table (any CRS; burnt onto the before scene's grid).
        before: Date-1 raster (its grid is the probability raster's).
        after: Date-2 raster (warped onto date 1 on the fly, as in detection).
        prob: The detection's change-probability raster (float32, before grid).
        bands: Band names in order (the card's).
        block_size: Rows/columns read at a time.
    """
    kinds = _index_kinds(band_roles(bands), bands)
    n = len(patches)
    sums = _Sums(n, len(bands), len(kinds))
    with aligned_pair(before, after) as (src_a, src_b), rasterio.open(prob) as src_p:
        sample_a, mask_a = _decimated(src_a)
        sample_b, mask_b = _decimated(src_b)
        scales = (scene_scale(sample_a, mask_a), scene_scale(sample_b, mask_b & mask_a))
        valid_share = float((mask_a & mask_b).mean())
        geoms = list(patches.to_crs(src_a.crs).geometry) if patches.crs is not None else list(patches.geometry)
        # the ring: RING_PX pixels around each patch (pixels of other patches are not counted in it)
        shapes = np.asarray(geoms, dtype=object)
        grown = shapely.buffer(shapes, RING_PX * abs(src_a.transform.a), quad_segs=2) if geoms else shapes
        rings_geom = list(shapely.difference(grown, shapes)) if geoms else []
        tree = shapely.STRtree(list(grown))
        for win in _blocks(src_a.height, src_a.width, block_size) if n else iter(()):
            wt = window_transform(win, src_a.transform)
            x0, y0 = wt @ (0, 0)
            x1, y1 = wt @ (win.width, win.height)
            hits = tree.query(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)),
                              predicate="intersects")
            if hits.size == 0:
                continue
            ids = rasterize([(geoms[int(k)], int(k) + 1) for k in hits], out_shape=(win.height, win.width),
                            transform=wt, fill=0, dtype="int32")
            rings = rasterize([(rings_geom[int(k)], int(k) + 1) for k in hits], out_shape=(win.height, win.width),
                              transform=wt, fill=0, dtype="int32")
            valid = (src_a.dataset_mask(window=win) > 0) & (src_b.dataset_mask(window=win) > 0)
            ids = np.where(valid, ids, 0)
            rings = np.where(valid, rings, 0)
            if not (ids > 0).any():
                continue
            raw1 = src_a.read(window=win)  # native dtype: converted on the selected pixels only
            raw2 = src_b.read(window=win)
            p = src_p.read(1, window=win)
            _accumulate(sums, ids, rings, p, raw1, raw2, scales, bands, kinds)
        total_px = src_a.height * src_a.width * valid_share
        px_area = _pixel_area_m2(src_a, patches, float(sums.count[1:].sum()))
    km2 = max(total_px * px_area / 1e6, 1e-9)
    flagged = float(sums.count[1:].sum()) / max(total_px, 1.0)
    return _finish(sums, geometry_features(patches), bands, kinds, flagged, n / km2)

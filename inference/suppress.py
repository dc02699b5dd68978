"""False-alarm suppression: keep new construction, flag vegetation, water and speckle.

A change detector flags *any* change; bureaus want new construction. This step looks at every change
patch (the ``change_patches`` table of :mod:`cspon_rs.inference.vectorize`) together with the before/after
pixels under it and flags the patches that are very unlikely to be construction. Each cue is a plain
function of per-patch evidence:

* **mmu** -- minimum mapping unit: ``area_m2`` (already measured in a projected CRS by the vectoriser)
  below ``min_area_m2``;
* **vegetation** -- the after date is green: mean after-date NDVI = (NIR - R) / (NIR + R) of the patch at
  or above ``ndvi_after_min`` (new construction is bare or impervious), or optionally the patch *gained*
  NDVI by at least ``ndvi_gain_min`` (crops and seasons green up, buildings do not);
* **water** -- the after date is water: mean after-date NDWI = (G - NIR) / (G + NIR) (McFeeters 1996) at or
  above ``ndwi_after_min``;
* **shape** -- thin slivers (mean width 2·area/perimeter below ``min_width_m``), typically field edges,
  shorelines and misregistration.

Vegetation and water need a red/green and a NIR band (``B04``/``R``/``RED``, ``B03``/``G``/``GREEN``,
``B08``/``NIR``); checkpoints or scenes without NIR skip them and say so.

Suppressed patches are **kept** in the patch layer: ``suppressed_by`` names the first cue that fired (in
the order mmu, vegetation, water, shape; null when the patch is kept) and ``suppress_reason`` gives the
evidence in words. The warning engine skips them when it reads the layer
(:func:`cspon_rs.rules.inputs.load_patches`). ``benchmarks/suppression.py`` measures what each cue removes
(false alarms vs true change) on held-out data; the default thresholds were picked on validation cities.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pydantic import Field
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from cspon_rs.config import StrictModel
from cspon_rs.geo.crs import area_crs_for
from cspon_rs.geo.raster import aligned_pair
from cspon_rs.inference.windows import plan_blocks

__all__ = [
    "CUE_ORDER",
    "EVIDENCE_COLUMNS",
    "MMU_CAP_M2",
    "MMU_FLOOR_M2",
    "MMU_PIXELS",
    "SUPPRESS_COLUMNS",
    "BandRoles",
    "MmuCue",
    "ShapeCue",
    "SuppressConfig",
    "SuppressionResult",
    "VegetationCue",
    "WaterCue",
    "apply_suppression",
    "band_roles",
    "cue_masks",
    "default_mmu_m2",
    "mmu_cue",
    "patch_evidence",
    "patch_index_stats",
    "patch_shape_stats",
    "shape_cue",
    "unsuppressed",
    "vegetation_cue",
    "water_cue",
]

log = logging.getLogger(__name__)

#: Cues in the order they are applied; a patch is attributed to the first one that fires.
CUE_ORDER: tuple[str, ...] = ("mmu", "vegetation", "water", "shape")

#: Per-patch evidence columns added to the patch layer (NaN where not computed).
EVIDENCE_COLUMNS: tuple[str, ...] = ("ndvi_t1", "ndvi_t2", "ndwi_t2", "width_m")

#: Columns added to the ``change_patches`` layer by :func:`apply_suppression`.
SUPPRESS_COLUMNS: tuple[str, ...] = (*EVIDENCE_COLUMNS, "suppressed_by", "suppress_reason")

_RED = ("B04", "B4", "R", "RED")
_GREEN = ("B03", "B3", "G", "GREEN")
_NIR = ("B08", "B8", "NIR", "B8A", "N")


# --------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------


# Defaults: picked with ``benchmarks/suppression.py --select`` on the validation pool (OSCD rennes + the five
# training cities of the shipped checkpoint), never on the test cities or NAIP, plus the literature; see
# benchmarks/suppression.md for the numbers.


#: Minimum mapping unit rule (``min_area_m2: auto``): this many pixels ...
MMU_PIXELS = 7
#: ... but never below this (m²): the smallest building a bureau pursues (one room, ~7 m x 7 m) ...
MMU_FLOOR_M2 = 50.0
#: ... nor above this (m²): the validation knee of 10 m Sentinel-2 (7 pixels).
MMU_CAP_M2 = 700.0


def default_mmu_m2(pixel_size_m: float | None) -> float:
    """The ``auto`` minimum mapping unit for a pixel size (m): ``clip(7 px, 50 m², 700 m²)``.

    7 pixels is the knee measured on 10 m Sentinel-2 validation cities (smaller patches were nearly all
    noise). On 1-2 m imagery 7 px is 7-28 m², smaller than any building, so the floor of 50 m² applies; the old
    fixed 700 m² removed real buildings there. Unknown pixel size: 700 m² (the previous default).
    """
    if pixel_size_m is None or not pixel_size_m > 0:
        return MMU_CAP_M2
    return float(min(MMU_CAP_M2, max(MMU_FLOOR_M2, MMU_PIXELS * pixel_size_m * pixel_size_m)))


class MmuCue(StrictModel):
    """Minimum mapping unit in m², set by the bureau; ``auto`` = :func:`default_mmu_m2` of the pixel size."""

    enabled: bool = True
    min_area_m2: float | Literal["auto"] = Field(
        "auto", description="Patches smaller than this (m²) are suppressed; 'auto': clip(7 px, 50, 700) m²."
    )

    def resolved(self, pixel_size_m: float | None) -> float:
        """The threshold in m² for imagery of ``pixel_size_m`` metres."""
        return default_mmu_m2(pixel_size_m) if self.min_area_m2 == "auto" else float(self.min_area_m2)


class VegetationCue(StrictModel):
    """Green after date (needs red + NIR); 0.5 = dense green vegetation (literature; neutral on validation)."""

    enabled: bool = True
    ndvi_after_min: float = Field(
        0.5, ge=-1.0, le=1.0, description="Suppress when the patch's mean after-date NDVI is at least this."
    )
    ndvi_gain_min: float | None = Field(
        None, gt=0.0, le=2.0, description="Also suppress when NDVI(t2) - NDVI(t1) is at least this (None: off)."
    )


class WaterCue(StrictModel):
    """Water on the after date (needs green + NIR); McFeeters' 0 flags dark roofs on L1C, so 0.05."""

    enabled: bool = True
    ndwi_after_min: float = Field(
        0.05, ge=-1.0, le=1.0, description="Suppress when the patch's mean after-date NDWI is at least this."
    )


class ShapeCue(StrictModel):
    """Thin slivers; off: on validation it removed nothing the MMU had not (or lost real change)."""

    enabled: bool = False
    min_width_m: float = Field(
        10.0, ge=0.0, description="Suppress when the mean width 2·area/perimeter (m) is below this."
    )


class SuppressConfig(StrictModel):
    """The ``suppress:`` section of ``configs/detect.yaml``: which cues run and their thresholds."""

    enabled: bool = True
    mmu: MmuCue = Field(default_factory=MmuCue)
    vegetation: VegetationCue = Field(default_factory=VegetationCue)
    water: WaterCue = Field(default_factory=WaterCue)
    shape: ShapeCue = Field(default_factory=ShapeCue)

    def for_pixel_size(self, pixel_size_m: float | None) -> SuppressConfig:
        """A copy with the MMU resolved to m² for imagery of ``pixel_size_m`` metres."""
        mmu = self.mmu.model_copy(update={"min_area_m2": self.mmu.resolved(pixel_size_m)})
        return self.model_copy(update={"mmu": mmu})

    def enabled_cues(self) -> list[str]:
        """Names of the cues that run, in :data:`CUE_ORDER`."""
        if not self.enabled:
            return []
        return [name for name in CUE_ORDER if getattr(self, name).enabled]


# --------------------------------------------------------------------------------------------------------
# Bands
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BandRoles:
    """Indices (0-based) of the red, green and NIR bands of a scene, ``None`` when absent."""

    red: int | None
    green: int | None
    nir: int | None

    @property
    def has_ndvi(self) -> bool:
        """Red and NIR are both there."""
        return self.red is not None and self.nir is not None

    @property
    def has_ndwi(self) -> bool:
        """Green and NIR are both there."""
        return self.green is not None and self.nir is not None


def band_roles(bands: Sequence[str | None]) -> BandRoles:
    """Find red, green and NIR among band names (Sentinel-2 ``B04/B03/B08`` or ``R/G/NIR``, any case).

    ``B08`` is preferred over ``B8A`` when both are there. Unnamed bands are never guessed.
    """
    names = [(b or "").strip().upper() for b in bands]

    def find(options: tuple[str, ...]) -> int | None:
        for option in options:
            if option in names:
                return names.index(option)
        return None

    return BandRoles(red=find(_RED), green=find(_GREEN), nir=find(_NIR))


# --------------------------------------------------------------------------------------------------------
# Evidence
# --------------------------------------------------------------------------------------------------------


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) / (a + b), NaN where the sum is not positive."""
    den = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        out: np.ndarray = np.where(den > 0, (a - b) / den, np.nan)
    return out


def _band(stack: np.ndarray, read: list[int], role: int | None) -> np.ndarray | None:
    """Band ``role`` (index into the scene's bands) of a stack holding the bands ``read``, in that order."""
    return stack[read.index(role)] if role is not None else None


def patch_index_stats(
    patches: gpd.GeoDataFrame,
    before: str | Path,
    after: str | Path,
    roles: BandRoles,
    *,
    block_size: int = 2048,
) -> pd.DataFrame:
    """Mean NDVI and NDWI of each patch on both dates, from the scenes' pixels.

    The scenes are read block by block (date 2 warped onto date 1's grid on the fly, as in detection);
    in each block the patches are burnt into an id raster (pixel centres inside the polygon) and the
    index values summed per id, so memory does not depend on the scene or the number of patches.

    Args:
        patches: Patch polygons (any CRS; reprojected to the before scene's).
        before: Date-1 raster (its grid is used).
        after: Date-2 raster.
        roles: Where red, green and NIR are (:func:`band_roles`); missing indices give NaN columns.
        block_size: Rows/columns read at a time.

    Returns:
        A frame aligned with ``patches`` (same index) with ``ndvi_t1``, ``ndvi_t2``, ``ndwi_t1``,
        ``ndwi_t2`` (NaN when the bands are missing or the patch covers no valid pixel) and ``n_pixels``.
    """
    n = len(patches)
    cols = ("ndvi_t1", "ndvi_t2", "ndwi_t1", "ndwi_t2")
    sums = np.zeros((len(cols), n + 1), dtype=np.float64)
    counts = np.zeros((len(cols), n + 1), dtype=np.float64)
    pixels = np.zeros(n + 1, dtype=np.int64)
    wanted = sorted({i for i in (roles.red, roles.green, roles.nir) if i is not None})
    if n and wanted:
        with aligned_pair(before, after) as (src_a, src_b):
            geoms = patches.to_crs(src_a.crs).geometry if patches.crs is not None else patches.geometry
            geom_list = list(geoms)
            tree = shapely.STRtree(geom_list)
            for block in plan_blocks(src_a.height, src_a.width, block_size):
                win = Window(block.col_off, block.row_off, block.width, block.height)  # type: ignore[no-untyped-call]
                wt = window_transform(win, src_a.transform)
                x0, y0 = wt @ (0, 0)
                x1, y1 = wt @ (block.width, block.height)
                box = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
                hits = tree.query(box, predicate="intersects")
                if hits.size == 0:
                    continue
                ids = rasterize(
                    [(geom_list[int(k)], int(k) + 1) for k in hits],
                    out_shape=(block.height, block.width), transform=wt, fill=0, dtype="int32",
                )
                inside = ids > 0
                if not inside.any():
                    continue
                bands = [i + 1 for i in wanted]
                a = src_a.read(bands, window=win, out_dtype="float64")
                b = src_b.read(bands, window=win, out_dtype="float64")
                valid = inside & (src_a.dataset_mask(window=win) > 0) & (src_b.dataset_mask(window=win) > 0)
                pixels += np.bincount(ids[inside], minlength=n + 1)
                values: list[np.ndarray | None] = [None] * len(cols)
                red_a, red_b = _band(a, wanted, roles.red), _band(b, wanted, roles.red)
                grn_a, grn_b = _band(a, wanted, roles.green), _band(b, wanted, roles.green)
                nir_a, nir_b = _band(a, wanted, roles.nir), _band(b, wanted, roles.nir)
                if nir_a is not None and nir_b is not None and red_a is not None and red_b is not None:
                    values[0], values[1] = _ratio(nir_a, red_a), _ratio(nir_b, red_b)
                if nir_a is not None and nir_b is not None and grn_a is not None and grn_b is not None:
                    values[2], values[3] = _ratio(grn_a, nir_a), _ratio(grn_b, nir_b)
                for k, v in enumerate(values):
                    if v is None:
                        continue
                    ok = valid & np.isfinite(v)
                    sums[k] += np.bincount(ids[ok], weights=v[ok], minlength=n + 1)
                    counts[k] += np.bincount(ids[ok], minlength=n + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    out = pd.DataFrame({c: means[k, 1:] for k, c in enumerate(cols)}, index=patches.index)
    out["n_pixels"] = pixels[1:]
    return out


def patch_shape_stats(patches: gpd.GeoDataFrame) -> pd.DataFrame:
    """Shape of each patch, measured in metres (:func:`cspon_rs.geo.crs.area_crs_for`).

    Returns:
        ``width_m`` = 2·area/perimeter (about the width of a long strip, half the side of a square) and
        ``compactness`` = 4π·area/perimeter² (1 for a disc), aligned with ``patches``.
    """
    if len(patches) == 0:
        return pd.DataFrame({"width_m": [], "compactness": []}, index=patches.index, dtype="float64")
    metric = patches.geometry.to_crs(area_crs_for(patches)) if patches.crs is not None else patches.geometry
    area = metric.area.to_numpy(dtype="float64")
    perim = metric.length.to_numpy(dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.where(perim > 0, 2.0 * area / perim, np.nan)
        compact = np.where(perim > 0, 4.0 * math.pi * area / perim**2, np.nan)
    return pd.DataFrame({"width_m": width, "compactness": compact}, index=patches.index)


def patch_evidence(
    patches: gpd.GeoDataFrame, before: str | Path | None, after: str | Path | None, roles: BandRoles
) -> pd.DataFrame:
    """Everything the cues read: ``area_m2``, index means (when both scenes are given) and shape."""
    if before is not None and after is not None and (roles.has_ndvi or roles.has_ndwi):
        spectral = patch_index_stats(patches, before, after, roles)
    else:
        spectral = pd.DataFrame(
            {c: np.full(len(patches), np.nan) for c in ("ndvi_t1", "ndvi_t2", "ndwi_t1", "ndwi_t2")},
            index=patches.index,
        )
    shape = patch_shape_stats(patches)
    area = pd.to_numeric(patches["area_m2"]).astype("float64")
    out: pd.DataFrame = pd.concat([area.rename("area_m2"), spectral, shape], axis=1)
    return out


# --------------------------------------------------------------------------------------------------------
# Cues: each returns (fires, reason) arrays aligned with the evidence rows
# --------------------------------------------------------------------------------------------------------

CueResult = tuple[np.ndarray, list[str | None]]


def mmu_cue(area_m2: np.ndarray, min_area_m2: float) -> CueResult:
    """Patches below the minimum mapping unit."""
    area = np.asarray(area_m2, dtype="float64")
    fires = area < min_area_m2
    reasons = [f"area {a:,.0f} m² < minimum mapping unit {min_area_m2:,.0f} m²" if f else None
               for a, f in zip(area, fires, strict=True)]
    return fires, reasons


def vegetation_cue(
    ndvi_t2: np.ndarray, ndvi_t1: np.ndarray, ndvi_after_min: float, ndvi_gain_min: float | None = None
) -> CueResult:
    """Green after date (mean NDVI at or above ``ndvi_after_min``), or a large NDVI gain (optional)."""
    after = np.asarray(ndvi_t2, dtype="float64")
    gain = after - np.asarray(ndvi_t1, dtype="float64")
    green = np.nan_to_num(after, nan=-np.inf) >= ndvi_after_min
    gained = (np.nan_to_num(gain, nan=-np.inf) >= ndvi_gain_min) if ndvi_gain_min is not None else \
        np.zeros_like(green)
    reasons: list[str | None] = []
    for k in range(after.size):
        if green[k]:
            reasons.append(f"vegetation: after-date NDVI {after[k]:.2f} >= {ndvi_after_min:.2f}")
        elif gained[k]:
            reasons.append(f"vegetation gain: NDVI {after[k] - gain[k]:.2f} -> {after[k]:.2f} "
                           f"(+{gain[k]:.2f} >= {ndvi_gain_min:.2f})")
        else:
            reasons.append(None)
    return green | gained, reasons


def water_cue(ndwi_t2: np.ndarray, ndwi_after_min: float) -> CueResult:
    """Water on the after date (mean NDWI at or above ``ndwi_after_min``)."""
    ndwi = np.asarray(ndwi_t2, dtype="float64")
    fires = np.nan_to_num(ndwi, nan=-np.inf) >= ndwi_after_min
    reasons = [f"water: after-date NDWI {v:.2f} >= {ndwi_after_min:.2f}" if f else None
               for v, f in zip(ndwi, fires, strict=True)]
    return fires, reasons


def shape_cue(width_m: np.ndarray, min_width_m: float) -> CueResult:
    """Thin slivers: mean width 2·area/perimeter below ``min_width_m``."""
    width = np.asarray(width_m, dtype="float64")
    fires = np.nan_to_num(width, nan=np.inf) < min_width_m
    reasons = [f"thin sliver: mean width {w:.1f} m < {min_width_m:.1f} m" if f else None
               for w, f in zip(width, fires, strict=True)]
    return fires, reasons


def cue_masks(evidence: pd.DataFrame, config: SuppressConfig, roles: BandRoles) -> dict[str, CueResult]:
    """Run every enabled cue that the bands allow, in :data:`CUE_ORDER`.

    Cues needing a band the scene does not have (vegetation: red + NIR; water: green + NIR) are left out.
    """
    out: dict[str, CueResult] = {}
    for name in config.enabled_cues():
        if name == "mmu":
            out[name] = mmu_cue(evidence["area_m2"].to_numpy(), config.mmu.resolved(None))
        elif name == "vegetation" and roles.has_ndvi:
            out[name] = vegetation_cue(evidence["ndvi_t2"].to_numpy(), evidence["ndvi_t1"].to_numpy(),
                                       config.vegetation.ndvi_after_min, config.vegetation.ndvi_gain_min)
        elif name == "water" and roles.has_ndwi:
            out[name] = water_cue(evidence["ndwi_t2"].to_numpy(), config.water.ndwi_after_min)
        elif name == "shape":
            out[name] = shape_cue(evidence["width_m"].to_numpy(), config.shape.min_width_m)
    return out


# --------------------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------------------


@dataclass
class SuppressionResult:
    """Patches with the suppression columns, and what happened."""

    patches: gpd.GeoDataFrame
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    @property
    def n_suppressed(self) -> int:
        """Patches flagged by any cue."""
        return int(sum(self.counts.values()))

    def summary(self) -> str:
        """One line: how many patches each cue flagged."""
        if not self.counts and not self.skipped:
            return "suppression off"
        parts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        text = f"{self.n_suppressed} of {len(self.patches)} patches suppressed ({parts or 'no cue ran'})"
        if self.skipped:
            text += f"; skipped: {'; '.join(self.skipped)}"
        return text


def apply_suppression(
    patches: gpd.GeoDataFrame,
    config: SuppressConfig | None,
    *,
    before: str | Path | None,
    after: str | Path | None,
    bands: Sequence[str | None],
    pixel_size_m: float | None = None,
) -> SuppressionResult:
    """Add :data:`SUPPRESS_COLUMNS` to a ``change_patches`` table; suppressed patches are kept, flagged.

    Args:
        patches: The detector's patch table (``area_m2`` and polygons; any CRS).
        config: Cues and thresholds; ``None`` or ``enabled: false`` adds the columns with no patch flagged.
        before: Date-1 scene (for NDVI/NDWI); ``None`` skips the spectral cues.
        after: Date-2 scene.
        bands: Band names of the scenes in order (the checkpoint card's, or the file's descriptions).
        pixel_size_m: Pixel edge of the scene (m), for the ``auto`` minimum mapping unit.

    Returns:
        A :class:`SuppressionResult`; ``suppressed_by`` holds the first cue that fired (null = kept) and
        ``suppress_reason`` its evidence. Skipped cues (e.g. no NIR band) are logged and listed.
    """
    out = patches.copy()
    cfg = (config if config is not None else SuppressConfig(enabled=False)).for_pixel_size(pixel_size_m)
    roles = band_roles(bands)
    result = SuppressionResult(patches=out)
    cues = cfg.enabled_cues()
    needs_pixels = ("vegetation" in cues and roles.has_ndvi) or ("water" in cues and roles.has_ndwi)
    for name, ok, needed in (("vegetation", roles.has_ndvi, "red and NIR"),
                             ("water", roles.has_ndwi, "green and NIR")):
        if name in cues and not ok:
            msg = f"{name} cue skipped: bands {list(bands)} have no {needed} (e.g. an RGB-only checkpoint)"
            result.skipped.append(msg)
            log.warning(msg)
    if needs_pixels and (before is None or after is None):
        msg = "vegetation/water cues skipped: no scenes given"
        result.skipped.append(msg)
        log.warning(msg)
    evidence = patch_evidence(out, before if needs_pixels else None, after if needs_pixels else None, roles)
    for col in EVIDENCE_COLUMNS:
        out[col] = evidence[col].to_numpy(dtype="float64") if len(out) else pd.Series([], dtype="float64")
    by: list[str | None] = [None] * len(out)
    why: list[str | None] = [None] * len(out)
    for name, (fires, reasons) in cue_masks(evidence, cfg, roles).items():
        count = 0
        for k in np.flatnonzero(fires):
            if by[k] is None:
                by[k], why[k] = name, reasons[k]
                count += 1
        result.counts[name] = count
    out["suppressed_by"] = pd.Series(by, index=out.index, dtype="object")
    out["suppress_reason"] = pd.Series(why, index=out.index, dtype="object")
    geometry = out.geometry.name
    out = out[[*[c for c in out.columns if c != geometry], geometry]]
    result.patches = out
    if cues:
        log.info("suppression: %s", result.summary())
    return result


def unsuppressed(patches: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The patches no cue suppressed (all of them when the layer has no ``suppressed_by`` column)."""
    if "suppressed_by" not in patches.columns:
        return patches
    flag = patches["suppressed_by"]
    keep = flag.isna() | (flag.astype(str).str.strip() == "")
    return patches.loc[keep]

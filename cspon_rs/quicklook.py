"""A one-picture summary of a run: before / after / detected change / warnings.

The PNG is what a person looks at first, so it is drawn on the date-1 grid with date 2 warped onto it
(the same alignment the detector used), contrast-stretched per band (2nd-98th percentile).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import matplotlib
import numpy as np
from rasterio.enums import Resampling
from rasterio.plot import plotting_extent

from cspon_rs.geo.raster import aligned_pair, open_raster

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Patch

__all__ = ["CATEGORY_COLOURS", "render_quicklook", "stretch_rgb"]

#: Colour per warning category (the English category keys of the rules engine); the review map
#: (``api/static/js/common.js``) uses the same colours.
CATEGORY_COLOURS: dict[str, str] = {
    "built_before_approval": "#e0312b",  # 未批先建
    "building_while_pending": "#ff8c1a",  # 边批边建
    "exceeding_approval": "#b23cd6",  # 少批多建
    "built_elsewhere": "#1f7bff",  # 批东建西
    "approved_not_built": "#8a8f98",  # 批而不建
    "none": "#2bb35b",  # covered by a valid permit
}

#: Largest edge, in pixels, read for the picture (the scene is decimated on read beyond that).
_MAX_EDGE = 1600


def stretch_rgb(array: np.ndarray, rgb: tuple[int, int, int] = (0, 1, 2)) -> np.ndarray:
    """Percentile-stretch three bands of a ``(bands, H, W)`` array into an ``(H, W, 3)`` float image in [0, 1]."""
    bands = array[list(rgb)].astype(np.float32)
    out = np.empty(bands.shape, dtype=np.float32)
    for i, band in enumerate(bands):
        finite = band[np.isfinite(band) & (band != 0)]
        lo, hi = (np.percentile(finite, (2, 98)) if finite.size else (0.0, 1.0))
        out[i] = np.clip((band - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
    return np.moveaxis(out, 0, -1)


def render_quicklook(
    before: str | Path,
    after: str | Path,
    mask: str | Path,
    out_png: str | Path,
    *,
    warnings: gpd.GeoDataFrame | None = None,
    rgb: tuple[int, int, int] = (0, 1, 2),
    title: str = "",
) -> Path:
    """Draw before / after / detected change / warnings side by side and save a PNG.

    Args:
        before: Date-1 raster (its grid is the reference).
        after: Date-2 raster (warped onto date 1 on the fly).
        mask: Change mask raster on the date-1 grid (1 = change; 0 and nodata are not drawn).
        out_png: Where to write the PNG.
        warnings: Warning polygons with a ``category`` column (any CRS; drawn in the scene CRS).
        rgb: 0-based band indices to show as red, green, blue.
        title: Figure title.

    Returns:
        The PNG path.
    """
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with aligned_pair(before, after) as (src_a, src_b):
        scale = max(1.0, max(src_a.width, src_a.height) / _MAX_EDGE)
        shape = (src_a.count, int(src_a.height / scale), int(src_a.width / scale))
        img_a = src_a.read(out_shape=shape, resampling=Resampling.average)
        img_b = src_b.read(out_shape=shape, resampling=Resampling.average)
        extent = plotting_extent(src_a)
        crs = src_a.crs
    with open_raster(mask) as src_m:
        # 1 = change, 0 = no change, 255 (or the file's nodata) = not observed.
        change = src_m.read(1, out_shape=shape[1:], resampling=Resampling.nearest) == 1

    fig, axes = plt.subplots(1, 4, figsize=(20, 6.2), constrained_layout=True)
    rgb_a, rgb_b = stretch_rgb(img_a, rgb), stretch_rgb(img_b, rgb)
    panels: list[tuple[Any, str]] = [
        (axes[0], "before (date 1)"),
        (axes[1], "after (date 2, warped to date-1 grid)"),
        (axes[2], f"detected change ({int(change.sum() * scale * scale):,} px)"),
        (axes[3], "warnings by category (all suspected until a field check)"),
    ]
    axes[0].imshow(rgb_a, extent=extent)
    axes[1].imshow(rgb_b, extent=extent)
    axes[2].imshow(rgb_b * 0.6, extent=extent)
    axes[2].imshow(np.ma.masked_equal(change.astype(np.uint8), 0), extent=extent, cmap="autumn", alpha=0.9,
                   interpolation="nearest")
    axes[3].imshow(rgb_b * 0.75, extent=extent)
    handles = []
    if warnings is not None and not warnings.empty:
        shown = warnings.to_crs(crs)
        for category, group in shown.groupby("category"):
            colour = CATEGORY_COLOURS.get(str(category), "#ffff33")
            group.plot(ax=axes[3], facecolor=colour, edgecolor="white", linewidth=0.6, alpha=0.75)
            name = "none (covered by permits)" if category == "none" else str(category)
            handles.append(Patch(facecolor=colour, edgecolor="white", label=f"{name} ({len(group)})"))
        axes[3].legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.8)
    for ax, label in panels:
        ax.set_title(label, fontsize=10)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.set_xlabel("")
        ax.set_ylabel("")
    units = "degrees" if crs is not None and crs.is_geographic else "m"
    axes[0].set_xlabel(f"x ({crs.to_string() if crs else 'no CRS'}, {units})", fontsize=8)
    axes[0].set_ylabel(f"y ({units})", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png

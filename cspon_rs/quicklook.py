"""A one-picture summary of a run: before / after / detected change / warnings.

The PNG is what a person looks at first, so it is drawn on the date-1 grid with date 2 warped onto it
(the same alignment the detector used), with ONE contrast stretch for both dates
(:func:`cspon_rs.geo.stretch.common_stretch`, 2nd-98th percentile over both images), a scale bar, a north
arrow, the control lines and a legend in Chinese (English second).
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
from cspon_rs.geo.stretch import common_stretch

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


#: Chinese (English) names of the categories in the legend.
_CATEGORY_LABEL: dict[str, str] = {
    "built_before_approval": "未批先建 built before approval",
    "building_while_pending": "边批边建 building while pending",
    "exceeding_approval": "少批多建 exceeding approval",
    "built_elsewhere": "批东建西 built elsewhere",
    "approved_not_built": "批而不建 approved, not built",
    "none": "合法(已批) covered by permits",
}
#: Control-line outline colours and labels.
_CONTROL_STYLE: dict[str, tuple[str, str]] = {
    "YJJBNT": ("#f2e600", "永久基本农田 farmland (YJJBNT)"),
    "STBHHX": ("#00d18b", "生态保护红线 eco red line (STBHHX)"),
    "CZKFBJ": ("#00b7ff", "城镇开发边界 urban boundary (CZKFBJ)"),
}


def stretch_rgb(array: np.ndarray, rgb: tuple[int, int, int] = (0, 1, 2)) -> np.ndarray:
    """Percentile-stretch three bands of a ``(bands, H, W)`` array into an ``(H, W, 3)`` float image in [0, 1]."""
    return common_stretch([array], bands=rgb)[0].astype(np.float32) / 255.0


def _font() -> Any:
    from matplotlib.font_manager import FontProperties

    from cspon_rs.exports.fonts import find_cjk_font

    found = find_cjk_font()
    return FontProperties(fname=str(found.path), size=9) if found is not None else FontProperties(size=9)


def _map_furniture(ax: Any, extent: tuple[float, float, float, float], crs: Any, font: Any) -> None:
    """Scale bar (bottom left) and north arrow (top right) on one panel."""
    import math

    from cspon_rs.exports.chips import nice_length

    width = extent[1] - extent[0]
    lat = (extent[2] + extent[3]) / 2
    unit_m = 111_320.0 * math.cos(math.radians(lat)) if crs is not None and crs.is_geographic else 1.0
    length_m = nice_length(width * unit_m * 0.25)
    if length_m > 0:
        x0 = extent[0] + width * 0.04
        y0 = extent[2] + (extent[3] - extent[2]) * 0.05
        ax.plot([x0, x0 + length_m / unit_m], [y0, y0], color="white", linewidth=5, solid_capstyle="butt")
        ax.plot([x0, x0 + length_m / unit_m], [y0, y0], color="black", linewidth=2.5, solid_capstyle="butt")
        label = f"{length_m / 1000:g} km" if length_m >= 1000 else f"{length_m:g} m"
        ax.text(x0, y0 + (extent[3] - extent[2]) * 0.02, label, color="black", fontproperties=font,
                bbox={"facecolor": "white", "alpha": 0.8, "pad": 1, "edgecolor": "none"})
    ax.annotate("N", xy=(0.94, 0.95), xytext=(0.94, 0.83), xycoords="axes fraction", ha="center", va="center",
                fontsize=10, fontweight="bold", arrowprops={"facecolor": "black", "width": 3, "headwidth": 9},
                bbox={"facecolor": "white", "alpha": 0.8, "pad": 1, "edgecolor": "none"})


def render_quicklook(
    before: str | Path,
    after: str | Path,
    mask: str | Path,
    out_png: str | Path,
    *,
    warnings: gpd.GeoDataFrame | None = None,
    rgb: tuple[int, int, int] = (0, 1, 2),
    title: str = "",
    control_lines: gpd.GeoDataFrame | None = None,
    dates: tuple[str, str] | None = None,
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
        control_lines: Control-line polygons with a ``kind`` column (YJJBNT/STBHHX/CZKFBJ), outlined on the
            warnings panel.
        dates: ``(t1, t2)`` shown in the panel titles.

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

    fig, axes = plt.subplots(1, 4, figsize=(20, 6.6), constrained_layout=True)
    font = _font()
    stretched = common_stretch([img_a, img_b], bands=rgb)
    rgb_a, rgb_b = (s.astype(np.float32) / 255.0 for s in stretched)
    t1, t2 = dates if dates is not None else ("date 1", "date 2")
    panels: list[tuple[Any, str]] = [
        (axes[0], f"前时相 before ({t1})"),
        (axes[1], f"后时相 after ({t2}, 配准到前时相 warped to date-1 grid)"),
        (axes[2], f"检测变化 detected change ({int(change.sum() * scale * scale):,} px)"),
        (axes[3], "预警图斑 warnings (均为疑似, 待核查 suspected until a field check)"),
    ]
    axes[0].imshow(rgb_a, extent=extent)
    axes[1].imshow(rgb_b, extent=extent)
    axes[2].imshow(rgb_b * 0.6, extent=extent)
    axes[2].imshow(np.ma.masked_equal(change.astype(np.uint8), 0), extent=extent, cmap="autumn", alpha=0.9,
                   interpolation="nearest")
    axes[3].imshow(rgb_b * 0.75, extent=extent)
    handles: list[Any] = []
    if control_lines is not None and not control_lines.empty and "kind" in control_lines.columns:
        from matplotlib.lines import Line2D

        lines = control_lines.to_crs(crs)
        for kind, (colour, label) in _CONTROL_STYLE.items():
            part = lines[lines["kind"] == kind]
            if len(part):
                part.boundary.plot(ax=axes[3], color=colour, linewidth=1.0, linestyle="--")
                handles.append(Line2D([0], [0], color=colour, linestyle="--", label=label))
    if warnings is not None and not warnings.empty:
        shown = warnings.to_crs(crs)
        for category, group in shown.groupby("category"):
            colour = CATEGORY_COLOURS.get(str(category), "#ffff33")
            group.plot(ax=axes[3], facecolor=colour, edgecolor="white", linewidth=0.6, alpha=0.75)
            name = _CATEGORY_LABEL.get(str(category), str(category))
            handles.append(Patch(facecolor=colour, edgecolor="white", label=f"{name} ({len(group)})"))
    if handles:
        axes[3].legend(handles=handles, loc="lower left", prop=font, framealpha=0.85)
    change_handle = Patch(facecolor="#ff0000", label="检测到的变化 detected change")
    axes[2].legend(handles=[change_handle], loc="lower right", prop=font, framealpha=0.85)
    for ax, label in panels:
        ax.set_title(label, fontproperties=font, fontsize=10)
        _map_furniture(ax, extent, crs, font)
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
        fig.suptitle(title, fontproperties=font, fontsize=12)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png

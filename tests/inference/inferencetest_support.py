"""Helpers of the inference tests: seeded GeoTIFF scenes (module name unique across test folders)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

WIDTH, HEIGHT = 300, 260
BANDS = ["B04", "B03", "B02", "B08"]
#: UTM 50N near Hong Kong, 10 m pixels.
SCENE_CRS = CRS.from_epsg(32650)
SCENE_TRANSFORM = from_origin(205000.0, 2475000.0, 10.0, 10.0)
#: Rectangles (row0, row1, col0, col1) that become "new buildings" in the after scene.
CHANGES = [(20, 35, 30, 52), (100, 130, 140, 160), (200, 212, 250, 290), (60, 64, 5, 8)]


@dataclass(frozen=True)
class ScenePair:
    """Paths of a before/after GeoTIFF pair on one grid, and the pixel rectangles that changed."""

    before: Path
    after: Path
    changes: list[tuple[int, int, int, int]]


def write_scene(path: Path, data: np.ndarray, *, crs: Any = SCENE_CRS, transform: Any = SCENE_TRANSFORM,
                nodata: float | None = None, tiled: bool = True, descriptions: list[str] | None = None) -> Path:
    """Write a ``(bands, H, W)`` uint16 array as a (tiled) GeoTIFF."""
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
        "dtype": data.dtype.name, "crs": crs, "transform": transform, "nodata": nodata,
    }
    if tiled:
        profile.update(tiled=True, blockxsize=64, blockysize=64)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = tuple(descriptions)
    return path


def make_pair_arrays(seed: int = 0, height: int = HEIGHT, width: int = WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """Seeded Sentinel-2-like uint16 DN scenes: smooth terrain + noise, with bright roofs added in date 2."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 900 + 300 * np.sin(xx / 23.0) * np.cos(yy / 31.0)
    before = np.stack([base * f + rng.normal(0, 40, base.shape) for f in (1.0, 1.1, 1.2, 2.2)])
    after = np.stack([base * f + rng.normal(0, 40, base.shape) for f in (1.0, 1.1, 1.2, 2.2)])
    for r0, r1, c0, c1 in CHANGES:
        roof = np.array([2600, 2500, 2400, 2700], dtype=np.float64)[:, None, None]
        after[:, r0:r1, c0:c1] = roof + rng.normal(0, 30, (4, r1 - r0, c1 - c0))
    return np.clip(before, 1, 10000).astype(np.uint16), np.clip(after, 1, 10000).astype(np.uint16)

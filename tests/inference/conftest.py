"""Fixtures for the inference tests: seeded GeoTIFF pairs and a tiny real checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

BANDS = ["B04", "B03", "B02", "B08"]
WIDTH, HEIGHT = 300, 260
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


@pytest.fixture(scope="session")
def scene_pair(tmp_path_factory: pytest.TempPathFactory) -> ScenePair:
    """A 300 x 260 px, 4-band uint16 pair in EPSG:32650 with four changed rectangles."""
    folder = tmp_path_factory.mktemp("pair")
    before, after = make_pair_arrays()
    return ScenePair(
        before=write_scene(folder / "before_20240101.tif", before, descriptions=BANDS),
        after=write_scene(folder / "after_20240701.tif", after, descriptions=BANDS),
        changes=CHANGES,
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, scene_pair: ScenePair) -> Path:
    """A real (untrained, seeded) compact Siamese U-Net checkpoint for 4 bands, tile 128.

    Built with the models engineer's ``create_model`` + ``save_checkpoint``. The head is scaled so the
    probabilities spread over [0, 1] instead of clustering at 0.5 (keeps mask comparisons meaningful).
    """
    torch = pytest.importorskip("torch")
    from cspon_rs.models.card import ModelCard, Normalization
    from cspon_rs.models.checkpoint import pad_to_multiple, save_checkpoint
    from cspon_rs.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("siam_unet_lite", in_channels=4).eval()
    with rasterio.open(scene_pair.before) as src_a, rasterio.open(scene_pair.after) as src_b:
        data = src_a.read().astype(np.float64)
        after = src_b.read()
    card = ModelCard(
        name="test-tiny",
        version="0.0.1",
        architecture="siam_unet_lite",
        init_kwargs={},
        bands=BANDS,
        normalization=Normalization(
            mean=[float(v) for v in data.mean(axis=(1, 2))], std=[float(v) for v in data.std(axis=(1, 2))]
        ),
        tile_size=128,
        pixel_size_m=10.0,
        threshold=0.5,
    )
    # Calibrate the head on one window so logits are centred with std 3: probabilities then spread
    # over [0, 1] instead of clustering near 0.5 as an untrained network's do.
    x, _ = pad_to_multiple(card.normalize(data[:, :128, :128]))
    y, _ = pad_to_multiple(card.normalize(after[:, :128, :128]))
    with torch.no_grad():
        logits = model(torch.from_numpy(x)[None], torch.from_numpy(y)[None]).numpy()
        scale = 3.0 / float(logits.std())
        model.head.weight.mul_(scale)
        model.head.bias.sub_(float(np.median(logits))).mul_(scale)
    weights, _ = save_checkpoint(model, card, tmp_path_factory.mktemp("ckpt") / "tiny")
    return weights

"""Fixtures for the inference tests: seeded GeoTIFF pairs and a tiny real checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from inferencetest_support import BANDS, CHANGES, ScenePair, make_pair_arrays, write_scene


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

"""Window grid, blending weights and block independence."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import rasterio

from cspon_rs.errors import ConfigError
from cspon_rs.inference.blocks import BlockJob, predict_block
from cspon_rs.inference.predictors import DetectorSpec, spectral_parameters
from cspon_rs.inference.windows import (
    plan_blocks,
    tile_origins,
    tiles_for_block,
    window_starts,
    window_weights,
)


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(300, 128, 32), (260, 128, 0), (100, 128, 32), (1000, 256, 64)]
)
def test_window_starts_cover_the_axis_without_leaving_it(length: int, tile: int, overlap: int) -> None:
    starts = window_starts(length, tile, overlap)
    assert starts[0] == 0
    covered = np.zeros(length, dtype=int)
    for s in starts:
        covered[s : s + tile] += 1
        assert s + tile <= max(length, tile)
    assert (covered >= 1).all()
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))


def test_bad_tiling_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="multiple of 32"):
        window_starts(100, 100, 10)
    with pytest.raises(ConfigError, match="overlap"):
        window_starts(500, 128, 128)


@pytest.mark.parametrize("kind", ["cosine", "gaussian"])
def test_weights_positive_symmetric_peaked(kind: str) -> None:
    w = window_weights(64, kind)  # type: ignore[arg-type]
    assert w.shape == (64, 64) and w.dtype == np.float32
    assert (w > 0).all()
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert w[32, 32] > 10 * w[0, 32]


def test_normalised_weights_sum_to_one_everywhere() -> None:
    height, width, tile, overlap = 300, 260, 128, 32
    w = window_weights(tile).astype(np.float64)
    wsum = np.zeros((height, width))
    for r, c in tile_origins(height, width, tile, overlap):
        wsum[r : r + tile, c : c + tile] += w
    assert (wsum > 0).all()
    total = np.zeros((height, width))
    for r, c in tile_origins(height, width, tile, overlap):
        total[r : r + tile, c : c + tile] += w / wsum[r : r + tile, c : c + tile]
    np.testing.assert_allclose(total, 1.0, rtol=1e-9)


def test_block_halo_holds_every_window_touching_the_core() -> None:
    block = plan_blocks(300, 260, 100)[4]
    origins, region = tiles_for_block(block, 300, 260, 128, 32)
    for r, c in origins:
        assert region.row_off <= r and region.col_off <= c
        assert r < block.row_end and r + 128 > block.row_off
    all_touching = [
        (r, c) for r, c in tile_origins(300, 260, 128, 32)
        if r < block.row_end and r + 128 > block.row_off and c < block.col_end and c + 128 > block.col_off
    ]
    assert sorted(origins) == sorted(all_touching)


def _mosaic(scene_pair, spec: DetectorSpec, block_size: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    with rasterio.open(scene_pair.before) as src:
        height, width = src.height, src.width
    out = np.full((height, width), np.nan, dtype=np.float32)
    for i, block in enumerate(plan_blocks(height, width, block_size)):
        job = BlockJob(i, str(scene_pair.before), str(scene_pair.after), block, height, width, 64, 16, "cosine", spec)
        res = predict_block(job)
        out[block.row_off : block.row_end, block.col_off : block.col_end] = res.prob
    assert not np.isnan(out).any()
    return out


def test_blended_result_does_not_depend_on_block_size(scene_pair) -> None:  # type: ignore[no-untyped-def]
    with rasterio.open(scene_pair.before) as a, rasterio.open(scene_pair.after) as b:
        scale, thr = spectral_parameters(a.read(), b.read(), np.ones((a.height, a.width), bool))
    spec = DetectorSpec("spectral", spectral_scale=scale, spectral_threshold=thr)
    one = _mosaic(scene_pair, spec, 1024)
    many = _mosaic(scene_pair, spec, 70)
    np.testing.assert_allclose(one, many, atol=1e-6)


def test_blending_a_constant_prediction_returns_the_constant(scene_pair) -> None:  # type: ignore[no-untyped-def]
    # Same file as both dates: CVA magnitude 0 everywhere -> the same pseudo-probability in every window.
    with rasterio.open(scene_pair.before) as src:
        height, width = src.height, src.width
    spec = DetectorSpec("spectral", spectral_scale=(100.0, 100.0, 100.0, 100.0), spectral_threshold=2.0)
    block = plan_blocks(height, width, 1024)[0]
    res = predict_block(BlockJob(0, str(scene_pair.before), str(scene_pair.before), block, height, width, 64, 16,
                                 "cosine", spec))
    expected = 1.0 / (1.0 + np.exp(2.0 / 0.2))
    np.testing.assert_allclose(res.prob, expected, rtol=1e-5)
    assert res.n_windows == len(tile_origins(height, width, 64, 16))

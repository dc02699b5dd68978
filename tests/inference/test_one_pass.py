"""One pass per pixel: every window owned by one block, borders completed from the neighbours' spill."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from cspon_rs.inference.blocks import BlockJob, predict_block
from cspon_rs.inference.detect import default_tiling, detect_pair
from cspon_rs.inference.predictors import DetectorSpec, spectral_parameters
from cspon_rs.inference.windows import plan_blocks, plan_owned_blocks, tile_origins, window_starts


@pytest.mark.parametrize(("height", "width", "tile", "overlap", "block"),
                         [(300, 260, 64, 16, 100), (300, 260, 128, 32, 96), (1000, 700, 256, 32, 512),
                          (100, 90, 128, 32, 2048), (2049, 1500, 1024, 32, 2048)])
def test_each_window_belongs_to_exactly_one_block_and_cores_tile_the_scene(
    height: int, width: int, tile: int, overlap: int, block: int
) -> None:
    blocks = plan_owned_blocks(height, width, tile, overlap, block)
    owned = [o for b in blocks for o in b.origins]
    assert sorted(owned) == sorted(tile_origins(height, width, tile, overlap))
    assert len(owned) == len(set(owned))
    cover = np.zeros((height, width), int)
    for b in blocks:
        cover[b.core.row_off : b.core.row_end, b.core.col_off : b.core.col_end] += 1
        # the region read holds every owned window (clipped to the scene) and the core
        for r, c in b.origins:
            assert b.region.row_off <= r and b.region.col_off <= c
            assert min(r + tile, height) <= b.region.row_end and min(c + tile, width) <= b.region.col_end
        assert b.region.row_off <= b.core.row_off and b.core.row_end <= b.region.row_end
    assert (cover == 1).all()


def _reference_mosaic(scene_pair, spec: DetectorSpec, tile: int, overlap: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The halo-re-predicting reference (every window touching a block predicted by that block)."""
    with rasterio.open(scene_pair.before) as src:
        height, width = src.height, src.width
    out = np.zeros((height, width), dtype=np.float32)
    for i, block in enumerate(plan_blocks(height, width, 90)):
        job = BlockJob(i, str(scene_pair.before), str(scene_pair.after), block, height, width, tile, overlap,
                       "cosine", spec)
        out[block.row_off : block.row_end, block.col_off : block.col_end] = predict_block(job).prob
    return out


@pytest.mark.parametrize("block_size", [64, 150, 4096])
def test_one_pass_blend_equals_the_halo_reference(scene_pair, tmp_path: Path, block_size: int) -> None:  # type: ignore[no-untyped-def]
    with rasterio.open(scene_pair.before) as a, rasterio.open(scene_pair.after) as b:
        scale, thr = spectral_parameters(a.read(), b.read(), np.ones((a.height, a.width), bool))
    spec = DetectorSpec("spectral", spectral_scale=scale, spectral_threshold=thr)
    reference = _reference_mosaic(scene_pair, spec, 64, 16)
    res = detect_pair(scene_pair.before, scene_pair.after, tmp_path, checkpoint="spectral", tile_size=64, overlap=16,
                      block_size=block_size, min_area_m2=0.0, progress=False)
    with rasterio.open(res.prob_path) as src:
        prob = src.read(1)
    assert res.n_windows == res.unique_windows == len(tile_origins(res.height, res.width, 64, 16))
    # the spectral detector's scene-wide parameters come from the same (whole, small) read
    np.testing.assert_allclose(prob, reference, atol=1e-4)


@pytest.mark.parametrize("edge", [300, 1024, 1100, 1536, 2048, 8000, 20000])
def test_default_windows_are_large_balanced_and_have_a_small_margin(edge: int) -> None:
    tile, overlap = default_tiling(edge, edge, None, None)
    assert tile % 32 == 0 and tile <= 1024 and overlap == min(32, tile // 4)
    n = len(window_starts(edge, tile, overlap))
    # As few windows as 1024 px ones would need, and no more than one multiple of 32 larger than needed.
    assert n == len(window_starts(edge, 1024, 32)) or edge <= 1024
    assert n * tile - (n - 1) * overlap < edge + 32 * n + overlap
    assert default_tiling(5000, 5000, 256, None) == (256, 32)

"""Training crops read window by window (issue 25): memory flat in the scene size, same statistics."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from trainingtest_support import write_tiny_config

from cspon_rs.training.config import PairSpec, load_train_config
from cspon_rs.training.datasets import band_stats, load_split, sample_batch
from cspon_rs.training.windowed import open_stream_pair


def _big_scene(folder: Path, size: int = 4096) -> PairSpec:
    """A size x size x 3 uint8 pair with 0/1 labels (a 40 x 50 px change per 512 rows); written in strips."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32650",
                   transform=from_origin(500_000, 3_500_000, 1.0, 1.0), tiled=True, blockxsize=256,
                   blockysize=256, compress="deflate")
    rng = np.random.default_rng(0)
    rows = 512
    with rasterio.open(folder / "a.tif", "w", **profile) as da, rasterio.open(folder / "b.tif", "w", **profile) as db, \
            rasterio.open(folder / "l.tif", "w", **{**profile, "count": 1}) as dl:
        for r in range(0, size, rows):
            a = rng.integers(60, 120, (3, rows, size), dtype=np.uint8)
            lab = np.zeros((1, rows, size), np.uint8)
            lab[0, 100:140, r // 8 : r // 8 + 50] = 1
            b = a.copy()
            b[:, lab[0] == 1] = 230
            da.write(a, window=Window(0, r, size, rows))
            db.write(b, window=Window(0, r, size, rows))
            dl.write(lab, window=Window(0, r, size, rows))
    return PairSpec(id="big", before=Path("a.tif"), after=Path("b.tif"), label=Path("l.tif"))


def _peak(spec: PairSpec, folder: Path) -> tuple[int, object, tuple[np.ndarray, ...]]:
    tracemalloc.start()
    pair = open_stream_pair(spec, folder)
    batch = sample_batch([pair], np.random.default_rng(1), batch_size=4, crop_size=128, positive_fraction=1.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, pair, batch


def test_streamed_crops_keep_memory_flat(tmp_path: Path) -> None:
    (tmp_path / "small").mkdir()
    small, _, _ = _peak(_big_scene(tmp_path / "small", 512), tmp_path / "small")  # imports happen here too
    peak, pair, (a, b, lab, _) = _peak(_big_scene(tmp_path, 2048), tmp_path)
    # loading the 2048 px scene would add 2 x 48 MiB (float32); reading it tile by tile adds nothing
    assert peak < small + 8 * 2**20, f"peak {peak / 2**20:.0f} MiB vs {small / 2**20:.0f} MiB at 512 px"
    assert pair.shape == (2048, 2048) and a.shape == (4, 3, 128, 128)  # type: ignore[attr-defined]
    assert all(lab[i].any() for i in range(4))  # crops centred on change find it
    assert (b.transpose(1, 0, 2, 3)[:, lab == 1] == 230).all()  # the label windows match the image windows
    assert pair.positives.shape[0] == 4 * 40 * 50  # type: ignore[attr-defined]  # every changed pixel (below the sample bound)


def test_streamed_statistics_and_training_match_loaded(geotiff_dataset: Path, tmp_path: Path) -> None:
    data = f"""data:
  kind: geotiff_pairs
  root: {geotiff_dataset}
  bands: [B04, B03, B02, B08]
  pairs:
    - {{id: p0, before: p0_before.tif, after: p0_after.tif, label_vector: p0_changes.gpkg}}
    - {{id: p1, before: p1_before.tif, after: p1_after.tif, label_vector: p1_changes.gpkg}}
  train: [p0]
  val: [p1]
  stream: true
  crop_size: 64
  crops_per_epoch: 4"""
    cfg = load_train_config(write_tiny_config(tmp_path / "s.yaml", data, tmp_path / "run"))
    streamed = load_split(cfg.data, "train", stream=True)
    loaded = load_split(cfg.data, "train")
    for got, want in zip(band_stats(streamed), band_stats(loaded), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9)
    np.testing.assert_array_equal(np.sort(streamed[0].positives[:, 0] * 1000 + streamed[0].positives[:, 1]),
                                  np.sort(np.flatnonzero(loaded[0].label.ravel() & loaded[0].valid.ravel()) // 96
                                          * 1000 + np.flatnonzero(loaded[0].label.ravel() & loaded[0].valid.ravel())
                                          % 96))
    from cspon_rs.training.loop import train

    result = train(cfg, progress=False)
    assert result.checkpoint.is_file() and result.card is not None
    assert result.card.normalization.mean == pytest.approx(band_stats(loaded)[0])


def test_stream_refuses_synthetic_pairs(geotiff_dataset: Path) -> None:
    from pydantic import ValidationError

    from cspon_rs.training.config import DataConfig

    with pytest.raises(ValidationError, match="stream cannot be combined"):
        DataConfig(kind="geotiff_pairs", root=geotiff_dataset, stream=True, synthetic={},
                   pairs=[PairSpec(id="p", before=Path("a.tif"), after=Path("b.tif"), label=Path("l.tif"))])

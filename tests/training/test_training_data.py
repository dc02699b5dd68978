"""Dataset loaders: LEVIR folders, GeoTIFF pairs with polygon labels, OSCD, bad labels, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from trainingtest_support import write_levir

from cspon_rs.errors import GridMismatchError, LabelError
from cspon_rs.training.augment import augment_batch
from cspon_rs.training.config import AugmentConfig, PairSpec
from cspon_rs.training.datasets import (
    band_stats,
    load_geotiff_pair,
    load_levir,
    load_oscd,
    load_pairs_from,
    sample_batch,
)


def test_levir_loads_and_binarises(levir_dir: Path) -> None:
    pairs = load_levir(levir_dir)
    assert len(pairs) == 6
    p = pairs[0]
    assert p.before.shape == (3, 64, 64) and p.label.shape == (64, 64)
    assert set(np.unique(p.label)) <= {0, 1} and p.label.any()


def test_label_value_7_is_rejected_naming_value_and_file(tmp_path: Path) -> None:
    from PIL import Image

    root = write_levir(tmp_path / "bad", n=2)
    lab = np.zeros((64, 64), np.uint8)
    lab[3:5, 3:5] = 7
    lab[10, 10] = 255
    Image.fromarray(lab).save(root / "label" / "pair_1.png")
    with pytest.raises(LabelError) as err:
        load_levir(root)
    assert "pair_1.png" in str(err.value) and "[7]" in str(err.value)


def test_empty_label_folder(tmp_path: Path) -> None:
    root = write_levir(tmp_path / "empty", n=1)
    (root / "label" / "pair_0.png").unlink()
    with pytest.raises(LabelError, match="no label images"):
        load_levir(root)


def test_mismatched_shapes(tmp_path: Path) -> None:
    from PIL import Image

    root = write_levir(tmp_path / "shape", n=1)
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(root / "B" / "pair_0.png")
    with pytest.raises(GridMismatchError, match="pair_0"):
        load_levir(root)


def test_geotiff_pair_with_polygons_on_date1_grid(geotiff_dataset: Path) -> None:
    for k in (0, 1):
        spec = PairSpec(
            id=f"p{k}",
            before=Path(f"p{k}_before.tif"),
            after=Path(f"p{k}_after.tif"),
            label_vector=Path(f"p{k}_changes.gpkg"),
            label_layer="changes",
        )
        pair = load_geotiff_pair(spec, geotiff_dataset)
        assert pair.before.shape == pair.after.shape == (4, 96, 96)
        assert pair.label.any() and pair.crs == "EPSG:32650"
        # the bright new buildings (value 220 * 8) are where the burned polygons are
        inside = pair.after[0][pair.label == 1]
        assert np.median(inside) > 1500
        if k == 1:  # date 2 came in EPSG:4326 and was warped onto the UTM grid
            assert pair.valid.mean() > 0.9


def test_oscd_loader(shared_data: Path) -> None:
    root = shared_data / "OSCD" / "train_labelled"
    if not root.is_dir():
        pytest.skip(f"OSCD not found at {root}")
    (pair,) = load_oscd(root, ["hongkong"], ["B04", "B03", "B02", "B08"])
    assert pair.before.shape == (4, 695, 540) == pair.after.shape  # date 2 (693x538) warped onto date 1
    assert set(np.unique(pair.label)) == {0, 1}
    assert 0.02 < pair.label.mean() < 0.05  # 1 = no change, 2 = change mapped to 0/1


def test_load_pairs_from_guesses_layout(levir_dir: Path) -> None:
    assert [p.id for p in load_pairs_from(levir_dir, ids=["pair_2"])] == ["pair_2"]


def test_sampling_and_augmentation_keep_pairs_aligned(levir_dir: Path) -> None:
    pairs = load_levir(levir_dir)
    mean, std = band_stats(pairs)
    assert len(mean) == 3 and all(s > 0 for s in std)
    rng = np.random.default_rng(0)
    a, b, lab, valid = sample_batch(pairs, rng, batch_size=6, crop_size=32, positive_fraction=1.0)
    assert a.shape == (6, 3, 32, 32) and lab.any(axis=(1, 2)).all()  # every crop centred on change
    cfg = AugmentConfig(brightness=0.0, contrast=0.0)
    _a2, b2, lab2, _ = augment_batch(a, b, lab, valid, np.random.default_rng(1), cfg)
    # geometric ops are shared: the bright change pixels of date 2 still coincide with the label
    for i in range(6):
        assert b2[i, 0][lab2[i] == 1].mean() > b2[i, 0][lab2[i] == 0].mean() + 50
        assert lab2[i].sum() == lab[i].sum()
    # photometric jitter is independent per date
    cfg = AugmentConfig(flips=False, rot90=False, brightness=0.3, contrast=0.0)
    a3, b3, _, _ = augment_batch(a, a.copy(), lab, valid, np.random.default_rng(2), cfg)
    assert not np.allclose(a3, b3)

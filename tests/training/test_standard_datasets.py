"""Standard datasets by name (issue 25): each read from a few files laid out like its authors' release."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cspon_rs.errors import ConfigError
from cspon_rs.training.config import DataConfig
from cspon_rs.training.datasets import load_split
from cspon_rs.training.standard import STANDARD_DATASETS, config_from_dataset

FOLDER_SETS = {  # name: (splits, (date 1, date 2, label), image suffix, label suffix per split, subfolder)
    "levir-cd": (("train", "val", "test"), ("A", "B", "label"), ".png", {}, ""),
    "levir-cd+": (("train", "test"), ("A", "B", "label"), ".png", {}, ""),
    "whu-cd": (("train", "val", "test"), ("A", "B", "label"), ".png", {}, ""),
    "s2looking": (("train", "val", "test"), ("Image1", "Image2", "label"), ".png", {}, ""),
    "sysu-cd": (("train", "val", "test"), ("time1", "time2", "label"), ".png", {}, ""),
    "cdd": (("train", "val", "test"), ("A", "B", "OUT"), ".jpg", {}, "Real/subset"),
    "dsifn": (("train", "val", "test"), ("t1", "t2", "mask"), ".jpg", {"test": ".tif"}, ""),
}


def _write(name: str, root: Path) -> dict[str, dict[str, np.ndarray]]:
    splits, dirs, suffix, label_suffix, sub = FOLDER_SETS[name]
    rng = np.random.default_rng(len(name))
    truth: dict[str, dict[str, np.ndarray]] = {}
    for k, split in enumerate(splits):
        base = root / sub / split
        for d in dirs:
            (base / d).mkdir(parents=True)
        truth[split] = {}
        for i in range(2):
            pid = f"{k * 10 + i}"
            a = rng.integers(40, 90, (32, 32, 3), dtype=np.uint8)
            lab = np.zeros((32, 32), np.uint8)
            lab[4 + i : 14 + i, 8:20] = 255
            b = a.copy()
            b[lab > 0] = 240
            Image.fromarray(a).save(base / dirs[0] / f"{pid}{suffix}", quality=95)
            Image.fromarray(b).save(base / dirs[1] / f"{pid}{suffix}", quality=95)
            if suffix == ".jpg" and name == "cdd":  # CDD's OUT masks are JPEGs: grey artefacts at the edges
                Image.fromarray(lab).save(base / dirs[2] / f"{pid}.jpg", quality=75)
            elif name == "s2looking":  # S2Looking labels are RGB PNGs
                Image.fromarray(np.stack([lab] * 3, axis=-1)).save(base / dirs[2] / f"{pid}.png")
            else:
                Image.fromarray(lab).save(base / dirs[2] / f"{pid}{label_suffix.get(split, '.png')}")
            truth[split][pid] = (lab > 0).astype(np.uint8)
    return truth


@pytest.mark.parametrize("name", list(FOLDER_SETS))
def test_folder_datasets_load_with_official_splits(name: str, tmp_path: Path) -> None:
    truth = _write(name, tmp_path / name)
    cfg = DataConfig(kind="standard", dataset=name, root=tmp_path / name)
    for split in ("train", "val", "test"):
        pairs = load_split(cfg, split)
        assert sorted(p.id for p in pairs) == sorted(truth.get(split, {})), split
        for p in pairs:
            assert p.before.shape == (3, 32, 32)
            if name == "cdd":  # JPEG labels: thresholded at 127, edges may move by a pixel
                assert abs(int(p.label.sum()) - int(truth[split][p.id].sum())) <= 24
            else:
                np.testing.assert_array_equal(p.label, truth[split][p.id])


def test_levir_cd_plus_has_no_val_split_unless_taken_from_train(tmp_path: Path) -> None:
    truth = _write("levir-cd+", tmp_path / "lp")
    cfg = DataConfig(kind="standard", dataset="levir-cd+", root=tmp_path / "lp", val=["1"])
    assert [p.id for p in load_split(cfg, "val")] == ["1"]
    assert [p.id for p in load_split(cfg, "train")] == ["0"]  # the validation id left the train split
    bad = DataConfig(kind="standard", dataset="levir-cd+", root=tmp_path / "lp", val=["10"])  # a test id
    with pytest.raises(ConfigError, match=r"\['10'\] are not in its official train split"):
        load_split(bad, "val")
    assert sorted(truth) == ["test", "train"]


def _write_oscd(root: Path) -> None:
    import rasterio
    from rasterio.transform import from_origin

    images, train_l, test_l = root / "images", root / "train_labels", root / "test_labels"
    images.mkdir(parents=True)
    (images / "train.txt").write_text("abudhabi,beirut\n")
    (images / "test.txt").write_text("brasilia\n")
    rng = np.random.default_rng(5)
    res = {"B01": 60, "B09": 60, "B10": 60, "B05": 20, "B06": 20, "B07": 20, "B8A": 20, "B11": 20, "B12": 20}
    for city, labels in (("abudhabi", train_l), ("beirut", train_l), ("brasilia", test_l)):
        for date in ("imgs_1_rect", "imgs_2_rect"):
            (images / city / date).mkdir(parents=True)
            for band in ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]:
                r = res.get(band, 10)
                n = 60 // r
                profile = dict(driver="GTiff", width=n, height=n, count=1, dtype="uint16", crs="EPSG:32640",
                               transform=from_origin(200_000, 2_700_000, r, r))
                with rasterio.open(images / city / date / f"{band}.tif", "w", **profile) as dst:
                    dst.write(rng.integers(500, 3000, (1, n, n), dtype=np.uint16))
        (labels / city / "cm").mkdir(parents=True)
        cm = np.ones((6, 6), np.uint8)
        cm[1:3, 2:4] = 2
        Image.fromarray(cm).save(labels / city / "cm" / f"{city}-cm.tif")


@pytest.mark.parametrize(("name", "bands"), [("oscd", 4), ("oscd-13", 13)])
def test_oscd_original_layout(name: str, bands: int, tmp_path: Path) -> None:
    _write_oscd(tmp_path / "oscd")
    cfg = DataConfig(kind="standard", dataset=name, root=tmp_path / "oscd")
    train, val, test = (load_split(cfg, s) for s in ("train", "val", "test"))
    assert [p.id for p in train] == ["abudhabi", "beirut"] and val == [] and [p.id for p in test] == ["brasilia"]
    p = train[0]
    assert p.before.shape == (bands, 6, 6) and p.label.sum() == 4 and p.crs == "EPSG:32640"
    assert p.bands == list(STANDARD_DATASETS[name].bands)


def test_dataset_config_and_unknown_names(tmp_path: Path) -> None:
    cfg = config_from_dataset("LEVIR-CD", tmp_path, ["optim.epochs=2"])
    assert cfg.data.kind == "standard" and cfg.data.dataset == "levir-cd" and cfg.pixel_size_m == 0.5
    assert cfg.optim.epochs == 2
    with pytest.raises(ConfigError, match="unknown dataset 'levir'"):
        config_from_dataset("levir", tmp_path)
    with pytest.raises(ConfigError, match="needs 'dataset'"):
        config_from_dataset("levir-cd", tmp_path, ["data.dataset=null"])

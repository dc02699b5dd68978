"""Fine-tuning on field verifications: sparse windows, held-back scoring, bad inputs (issue 12, part 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from trainingtest_support import synthetic_pair

from cspon_rs.errors import LabelError, SchemaError

RES, SIZE, X0, Y0 = 10.0, 160, 500_000.0, 3_500_000.0


def _scene(folder: Path, seed: int = 3) -> tuple[Path, Path, np.ndarray]:
    import rasterio
    from rasterio.transform import from_origin

    a, b, lab = synthetic_pair(np.random.default_rng(seed), size=SIZE, bands=4, dtype="uint16")
    profile = dict(driver="GTiff", width=SIZE, height=SIZE, count=4, dtype="uint16", crs="EPSG:32650",
                   transform=from_origin(X0, Y0, RES, RES))
    paths = []
    for name, arr in (("before", a * 8), ("after", b * 8)):
        path = folder / f"{name}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr)
        paths.append(path)
    return paths[0], paths[1], lab


def _box(col: int, row: int, w: int, h: int) -> object:
    from shapely.geometry import box

    return box(X0 + col * RES, Y0 - (row + h) * RES, X0 + (col + w) * RES, Y0 - row * RES)


def _labels(folder: Path, before: Path, after: Path, *, checksums: bool = True) -> Path:
    """Three real-change and three false-change verifications, in EPSG:4326 like the store keeps them."""
    import geopandas as gpd

    from cspon_rs.geo.files import file_sha256

    boxes = [(10, 10, 12, 12, 1), (60, 20, 10, 8, 1), (110, 100, 14, 10, 1),
             (30, 90, 16, 16, 0), (90, 60, 12, 12, 0), (130, 20, 10, 10, 0)]
    rows = [{"geometry": _box(c, r, w, h), "label": lab, "verification_id": i + 1, "scene_before": str(before),
             "scene_after": str(after)} for i, (c, r, w, h, lab) in enumerate(boxes)]
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:32650").to_crs("EPSG:4326")
    if checksums:
        gdf["scene_before_sha256"], gdf["scene_after_sha256"] = file_sha256(before), file_sha256(after)
    path = folder / "verified.gpkg"
    gdf.to_file(path, driver="GPKG")
    return path


def _parent(folder: Path) -> Path:
    import torch

    from cspon_rs.models.card import ModelCard, Normalization
    from cspon_rs.models.checkpoint import save_checkpoint
    from cspon_rs.models.registry import create_model

    torch.manual_seed(0)
    kw = {"encoder_name": "mobilenet_v2", "encoder_depth": 4, "decoder_channels": [32, 24, 16, 8], "fusion": "absdiff"}
    model = create_model("siam_unet_lite", in_channels=4, **kw)
    card = ModelCard(name="tiny", version="0", architecture="siam_unet_lite", init_kwargs=kw,
                     bands=["B04", "B03", "B02", "B08"], normalization=Normalization(mean=[700.0] * 4, std=[300.0] * 4),
                     tile_size=64, pixel_size_m=10.0, threshold=0.5, training_data={"crop_size": 64})
    save_checkpoint(model, card, folder / "parent")
    return folder / "parent.safetensors"


def test_windows_are_sparse_and_labelled_by_verdict(tmp_path: Path) -> None:
    from cspon_rs.training.verified import read_verified_labels, verified_pairs

    before, after, _ = _scene(tmp_path)
    gdf = read_verified_labels(_labels(tmp_path, before, after))
    pairs, skipped = verified_pairs(gdf, ["B04", "B03", "B02", "B08"], context_px=8)
    assert skipped == [] and len(pairs) == 6
    first = pairs[0]  # 12 x 12 px real change with 8 px of context on each side
    assert first.before.shape[0] == 4  # 12 px + 2 x 8 px context (+1 for rounding after the 4326 round trip)
    assert all(abs(n - (12 + 17)) <= 1 for n in first.before.shape[1:])
    assert first.valid.sum() == pytest.approx(144, abs=26) and not first.valid.all()
    assert set(np.unique(first.label[first.valid])) == {1}
    assert first.label[~first.valid].sum() == 0  # context pixels carry no label
    negative = pairs[3]
    assert negative.valid.any() and negative.label[negative.valid].sum() == 0


def test_changed_or_missing_scene_is_listed_and_skipped(tmp_path: Path) -> None:
    from cspon_rs.training.verified import read_verified_labels, verified_pairs

    before, after, _ = _scene(tmp_path)
    gdf = read_verified_labels(_labels(tmp_path, before, after))
    with open(after, "ab") as fh:  # the after scene was overwritten since the field check
        fh.write(b"\0")
    pairs, skipped = verified_pairs(gdf, ["B04", "B03", "B02", "B08"])
    assert pairs == [] and len(skipped) == 6 and "changed since verification" in skipped[0]
    after.unlink()
    _, skipped = verified_pairs(gdf, ["B04", "B03", "B02", "B08"])
    assert "is gone" in skipped[0]


def test_bad_label_files(tmp_path: Path) -> None:
    import geopandas as gpd

    from cspon_rs.training.verified import read_verified_labels

    bad = gpd.GeoDataFrame({"label": [2], "scene_before": ["a"], "scene_after": ["b"]},
                           geometry=[_box(0, 0, 2, 2)], crs="EPSG:32650")
    bad.to_file(tmp_path / "bad.gpkg", driver="GPKG")
    with pytest.raises(LabelError, match=r"found \[2\]"):
        read_verified_labels(tmp_path / "bad.gpkg")
    bad.drop(columns="scene_after").to_file(tmp_path / "cols.gpkg", driver="GPKG")
    with pytest.raises(SchemaError, match="scene_after"):
        read_verified_labels(tmp_path / "cols.gpkg")


def test_holdout_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    from cspon_rs.training.verified import read_verified_labels, split_holdout

    before, after, _ = _scene(tmp_path)
    gdf = read_verified_labels(_labels(tmp_path, before, after))
    train, held = split_holdout(gdf, 0.3, seed=1)
    assert len(train) + len(held) == 6 and sorted(held["label"]) == [0, 1]
    assert list(split_holdout(gdf, 0.3, seed=1)[1]["verification_id"]) == list(held["verification_id"])
    assert len(split_holdout(gdf, 0.0)[1]) == 0


def test_fine_tune_scores_candidate_and_parent_on_held_back(tmp_path: Path) -> None:
    from cspon_rs.models.checkpoint import load_card
    from cspon_rs.training.finetune import fine_tune

    before, after, _ = _scene(tmp_path)
    labels = _labels(tmp_path, before, after)
    result = fine_tune(_parent(tmp_path), labels, tmp_path / "run", epochs=2, crops_per_epoch=8, batch_size=4,
                       crop_size=64, num_threads=1, progress=False)
    report = json.loads(result.holdout_json.read_text())
    assert report["metric"] == "f1" and report["labels"]["n_train"] == 4 and report["labels"]["n_holdout"] == 2
    for side in ("candidate", "parent"):
        assert {"f1", "warning_precision", "threshold", "verifications"} <= set(report[side])
        assert report[side]["verifications"] == 2
    card = load_card(result.checkpoint)
    assert card.threshold == pytest.approx(report["candidate"]["threshold"])
    assert card.training_data["verified_labels"]["sha256"] == report["labels"]["sha256"]
    assert card.training_data["parent"] == "tiny@0" and isinstance(result.better, bool)


def test_cli_fine_tune_and_its_bad_input(tmp_path: Path) -> None:
    before, after, _ = _scene(tmp_path)
    labels = _labels(tmp_path, before, after, checksums=False)
    cli = [sys.executable, "-m", "cspon_rs.cli", "train", "--labels", str(labels)]
    missing = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "--init-from" in missing.stderr and "Traceback" not in missing.stderr
    run = subprocess.run([*cli, "--init-from", str(_parent(tmp_path)), "--out", str(tmp_path / "run"),
                          "--epochs", "1", "--max-minutes", "2"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "held back" in run.stdout and "parent" in run.stdout and (tmp_path / "run" / "holdout.json").is_file()

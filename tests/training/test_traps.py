"""The four traps of issue 25: label encodings, one-class verifications, fine-tunes that get worse, the
threshold grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_verified import _parent, _scene
from trainingtest_support import cli_app, write_levir
from typer.testing import CliRunner

from cspon_rs.errors import LabelError
from cspon_rs.models.card import ModelCard, Normalization
from cspon_rs.training.datasets import ChangePair, decode_label, load_levir

# -- trap 1: the label encoding comes from the values ----------------------------------------------------------


def _codes(values: tuple[int, int]) -> np.ndarray:
    lab = np.full((8, 8), values[0], dtype=np.uint8)
    lab[2:5, 3:6] = values[1]
    return lab


@pytest.mark.parametrize("coding", [(0, 1), (0, 255), (1, 2)])
def test_known_encodings_are_found_from_the_values(coding: tuple[int, int]) -> None:
    label, labelled = decode_label(_codes(coding), "x.png")
    assert label.sum() == 9 and label[2:5, 3:6].all() and labelled.all()


def test_oscd_coded_labels_in_a_levir_folder_train_right(tmp_path: Path) -> None:
    root = write_levir(tmp_path / "oscd_like", n=3)
    want = {}
    for name in ("pair_0", "pair_1", "pair_2"):
        path = root / "label" / f"{name}.png"
        lab = (np.asarray(Image.open(path)) > 0).astype(np.uint8)
        Image.fromarray(lab + 1).save(path)  # OSCD coding: 1 = no change, 2 = change
        want[name] = lab
    for pair in load_levir(root):
        np.testing.assert_array_equal(pair.label, want[pair.id])


def test_threshold_that_empties_a_label_is_an_error_with_the_right_hint(tmp_path: Path) -> None:
    with pytest.raises(LabelError) as err:
        decode_label(_codes((1, 2)), "city-cm.tif", threshold=127)
    msg = str(err.value)
    assert "city-cm.tif" in msg and "no change" in msg and "[1, 2]" in msg
    assert "remove label_threshold" in msg and "label_threshold: 1" in msg
    label, _ = decode_label(_codes((1, 2)), "city-cm.tif", threshold=1)  # following the hint works
    assert label.sum() == 9
    # an all-zero label is fine (no change in that tile), not an error
    assert decode_label(np.zeros((4, 4), np.uint8), "z.png", threshold=127)[0].sum() == 0


def test_multiclass_labels_hint_at_a_mapping_and_the_mapping_decodes_them() -> None:
    lab = np.zeros((6, 6), np.uint8)
    lab[0, :] = 1  # new building
    lab[1, :] = 2  # demolition
    lab[2, :] = 3  # unsure
    with pytest.raises(LabelError) as err:
        decode_label(lab, "multi.tif")
    assert "label_map" in str(err.value) and "label_threshold: 127" not in str(err.value)
    label, labelled = decode_label(lab, "multi.tif", label_map={0: 0, 1: 1, 2: 1, 3: "ignore"})
    assert label[:2].all() and not label[2:].any()
    assert not labelled[2].any() and labelled[[0, 1, 3, 4, 5]].all()
    with pytest.raises(LabelError, match=r"\[3\] are not in data.label_map"):
        decode_label(lab, "multi.tif", label_map={0: 0, 1: 1, 2: 1})


def test_ambiguous_single_value_label_asks_for_a_mapping() -> None:
    with pytest.raises(LabelError, match="label_map"):
        decode_label(np.ones((4, 4), np.uint8), "ones.png")


def test_ignore_value_is_excluded(tmp_path: Path) -> None:
    lab = _codes((0, 1))
    lab[:, 6:] = 255
    label, labelled = decode_label(lab, "partial.png", ignore_value=255)
    assert labelled[:, :6].all() and not labelled[:, 6:].any() and label.sum() == 9


# -- trap 3: one-class verifications, fine-tunes scored against their parent ---------------------------------


def _positive_labels(folder: Path, before: Path, after: Path) -> Path:
    import geopandas as gpd
    from test_verified import _box

    boxes = [(10, 10, 12, 12), (60, 20, 10, 8), (110, 100, 14, 10), (30, 90, 16, 16), (90, 60, 12, 12)]
    rows = [
        {"geometry": _box(c, r, w, h), "label": 1, "verification_id": i + 1, "scene_before": str(before),
         "scene_after": str(after)}
        for i, (c, r, w, h) in enumerate(boxes)
    ]
    path = folder / "positives.gpkg"
    gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:32650").to_file(path, driver="GPKG")
    return path


def test_one_class_verifications_need_pixel_labels_or_positive_only(tmp_path: Path) -> None:
    from cspon_rs.training.finetune import fine_tune

    before, after, _ = _scene(tmp_path)
    labels, parent = _positive_labels(tmp_path, before, after), _parent(tmp_path)
    kw = {"epochs": 1, "crops_per_epoch": 4, "batch_size": 2, "crop_size": 64, "num_threads": 1, "progress": False}
    with pytest.raises(LabelError, match="--pixel-labels") as err:
        fine_tune(parent, labels, tmp_path / "refused", **kw)  # type: ignore[arg-type]
    assert "real change" in str(err.value)

    blind = fine_tune(parent, labels, tmp_path / "blind", positive_only=True, **kw)  # type: ignore[arg-type]
    report = json.loads(blind.holdout_json.read_text())
    assert not blind.comparable and not blind.better and report["comparable"] is False
    assert "one class" in report["why_not_comparable"]

    seen = fine_tune(parent, labels, tmp_path / "pixels", pixel_labels=True, **kw)  # type: ignore[arg-type]
    assert seen.comparable and json.loads(seen.holdout_json.read_text())["labels"]["mode"] == "pixel labels"


def test_cli_one_class_labels_say_how(tmp_path: Path) -> None:
    before, after, _ = _scene(tmp_path)
    labels, parent = _positive_labels(tmp_path, before, after), _parent(tmp_path)
    args = ["train", "--labels", str(labels), "--init-from", str(parent), "--out", str(tmp_path / "r"),
            "--epochs", "1"]
    refused = CliRunner().invoke(cli_app(), args)
    assert refused.exit_code != 0 and "--positive-only" in str(refused.exception)
    ran = CliRunner().invoke(cli_app(), [*args, "--positive-only"])
    assert ran.exit_code == 0, ran.output
    assert "cannot tell whether it is better" in ran.output and "better than the parent on" not in ran.output


def test_fine_tune_reports_parent_and_says_when_worse(levir_config: Path, tmp_path: Path) -> None:
    from cspon_rs.training.config import load_train_config
    from cspon_rs.training.loop import train

    cfg = load_train_config(levir_config)
    cfg.optim.epochs, cfg.optim.lr, cfg.data.crops_per_epoch = 4, 0.01, 32
    parent = train(cfg, out_dir=tmp_path / "parent", progress=False)
    assert parent.best_score > 0.3  # a parent that found the bright blocks
    # A learning rate far too high wrecks the parent's decoder: the run must say so.
    result = CliRunner().invoke(
        cli_app(),
        ["train", "--config", str(levir_config), "--init-from", str(parent.checkpoint), "--out",
         str(tmp_path / "ft"), "--lr", "3.0"],
    )
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "ft" / "best.json").read_text())
    pv = card["metrics"]["parent_val"]
    assert pv["score"] == pytest.approx(parent.best_score, abs=1e-6)  # scored before any step: the parent itself
    line = next(x for x in result.output.splitlines() if x.startswith("validation"))
    assert f"parent tiny@0.0.1 {pv['score']:.3f}" in line
    tuned = float(line.split("fine-tuned ")[1].split()[0])
    assert tuned < pv["score"] and "WORSE than the parent" in line


# -- trap 4: the threshold grid covers (0, 1) -----------------------------------------------------------------


class _FaintChange(torch.nn.Module):
    """A 'model' whose change probabilities are all below 0.05 (as a cautious fine-tune can give)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        diff = (b - a).abs().mean(dim=1, keepdim=True)
        return torch.where(diff > 1.0, -3.5, -6.0)  # sigmoid: 0.029 where changed, 0.0025 elsewhere


def test_threshold_search_finds_thresholds_below_0_05() -> None:
    from cspon_rs.training.loop import THRESHOLD_GRID, score_parent

    assert min(THRESHOLD_GRID) <= 0.01 and max(THRESHOLD_GRID) >= 0.99
    rng = np.random.default_rng(0)
    before = rng.normal(100, 5, (3, 32, 32)).astype(np.float32)
    after = before.copy()
    label = np.zeros((32, 32), np.uint8)
    label[4:12, 4:12] = 1
    after[:, label == 1] += 200
    pair = ChangePair("p", before, after, label, np.ones((32, 32), bool), ["R", "G", "B"], "mem")
    card = ModelCard(name="faint", version="0", architecture="x", bands=["R", "G", "B"],
                     normalization=Normalization(mean=[100.0] * 3, std=[50.0] * 3), threshold=0.5)
    figures = score_parent(_FaintChange(), card, [pair], torch.device("cpu"), "pooled_f1")
    assert figures["val_threshold"] < 0.05 and figures["val_f1_best"] == pytest.approx(1.0)
    assert figures["val_f1"] == 0.0  # at 0.5 it finds nothing

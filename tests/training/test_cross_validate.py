"""Leave-one-pair-out cross-validation (cspon-rs cross-validate), the per-band jitter, and the out-of-fold
patches of the warning classifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from trainingtest_support import cli_app
from typer.testing import CliRunner

from cspon_rs.cli import app as cspon_app
from cspon_rs.errors import ConfigError
from cspon_rs.models.checkpoint import load_card, load_checkpoint
from cspon_rs.training.augment import augment_batch
from cspon_rs.training.config import AugmentConfig, load_train_config
from cspon_rs.training.cross_validate import fold_config, fold_figures
from cspon_rs.training.datasets import load_split
from cspon_rs.training.evaluate import evaluate_pairs, model_proba, select_threshold


def test_fold_config_holds_out_one_pair_and_never_the_test_pair(levir_config: Path) -> None:
    cfg = load_train_config(levir_config)
    fold = fold_config(cfg, "pair_4", epochs=2)  # pair_4 is the config's validation pair
    assert fold.data.train == ["pair_0", "pair_1", "pair_2", "pair_3"]
    assert fold.data.val == ["pair_4"] and fold.data.test == []
    assert fold.optim.select_on == "last" and fold.optim.epochs == 2
    assert cfg.data.val != ["pair_4"] or cfg.optim.select_on != "last"  # the original config is untouched
    with pytest.raises(ConfigError, match="pair_5"):  # the test pair cannot be held out (nor trained on)
        fold_config(cfg, "pair_5")


def _add_unlabelled_blocks(levir: Path) -> None:
    """Paint a bright block the labels do not mark into every other pair's date 2: false patches to learn."""
    from PIL import Image

    for k, path in enumerate(sorted((levir / "B").glob("*.png"))):
        if k % 2 == 0:
            img = np.array(Image.open(path))
            img[44:54, 4:14] = 230
            Image.fromarray(img).save(path)


def test_cross_validate_end_to_end(levir_config: Path, tmp_path: Path) -> None:
    _add_unlabelled_blocks(levir_config.parent / "levir")
    out = tmp_path / "cv"
    # 8 short epochs at a high rate: enough for the tiny network to find bright blocks; 2 m pixels: over the MMU
    args = ["cross-validate", "--config", str(levir_config), "--out", str(out), "--epochs", "8",
            "--set", "data.crops_per_epoch=32", "--set", "optim.lr=0.01", "--set", "pixel_size_m=2.0"]
    result = CliRunner().invoke(cli_app(), args)
    assert result.exit_code == 0, result.output
    held = ["pair_0", "pair_1", "pair_2", "pair_3", "pair_4"]
    assert sorted(d.name for d in out.glob("fold_*")) == [f"fold_{h}" for h in held]
    cv = json.loads((out / "cv.json").read_text())
    chosen = cv["radiometry"]
    assert chosen != "none" and set(cv["methods"]) >= {"none", "gain", chosen}

    # each fold: trained without its pair, kept its last epoch
    cfg = load_train_config(levir_config, sets=["pixel_size_m=2.0"])
    pairs = {p.id: p for p in load_split(cfg.data, "train") + load_split(cfg.data, "val")}
    for h in held:
        card = load_card(out / f"fold_{h}" / "best.safetensors")
        assert h not in card.training_data["train"] and card.training_data["val"] == [h]
        assert "pair_5" not in card.training_data["train"] and card.metrics["best_epoch"] == 8

    # a pair's figures come from a threshold picked on the other pairs only (recomputed here without radiometry)
    figs = cv["methods"][chosen]
    for h in held:
        row = figs["per_pair"][h]
        assert 0.0 <= row["f1"] <= row["f1_oracle"] + 1e-9
    none = cv["methods"]["none"]
    probs = {}
    for h in held:
        loaded = load_checkpoint(out / f"fold_{h}" / "best.safetensors")
        # cv.json was written before the final run gave the folds its out-of-fold temperature
        probs[h] = model_proba(loaded.model, loaded.card, pairs[h].before, pairs[h].after, temperature=1.0)
    for h in held:
        others = [i for i in held if i != h]
        thr, _ = select_threshold([probs[i] for i in others], [pairs[i] for i in others])
        assert none["per_pair"][h]["threshold"] == pytest.approx(thr)
        f1 = evaluate_pairs([probs[h]], [pairs[h]], threshold=thr).f1
        assert none["per_pair"][h]["f1"] == pytest.approx(f1, abs=1e-6)
    assert fold_figures(probs, pairs).threshold == pytest.approx(none["threshold"])

    # the final model: every train/val pair, the pooled out-of-fold threshold and radiometry in its card
    final = load_card(out / "final" / "best.safetensors")
    assert sorted(final.training_data["train"]) == held and final.training_data["test"] == ["pair_5"]
    calibration = final.metrics["calibration"]
    assert calibration["pairs"] == held and calibration["temperature"] > 0
    assert final.temperature == pytest.approx(calibration["temperature"])
    assert final.threshold == pytest.approx(calibration["threshold"])
    for h in held:  # the fold networks share it, so their patches have the final model's probability scale
        assert load_card(out / f"fold_{h}" / "best.safetensors").temperature == pytest.approx(final.temperature)
    assert final.metrics["cross_validation"]["radiometry"] == chosen
    assert final.input is not None and final.input.radiometry == chosen
    assert "mean_f1" in final.input.radiometry_validation

    # the warning classifier's patches: each pair's from the fold network that held it out
    clf, rep = tmp_path / "clf.json", tmp_path / "clf_report.json"
    fit = ["classifier", "fit", "--checkpoint", str(out / "final" / "best.safetensors"), "--folds", str(out),
           "--perturbations", "1", "--out", str(clf), "--report", str(rep)]
    result = CliRunner().invoke(cspon_app, fit)
    assert result.exit_code == 0, result.output
    fitted = json.loads(clf.read_text())["fitted"]
    assert fitted["patches_from"].startswith("out-of-fold") and fitted["pairs"] == held
    assert json.loads(rep.read_text())["groups"] == held
    (out / "fold_pair_4" / "best.safetensors").rename(out / "fold_pair_4" / "moved.safetensors")
    result = CliRunner().invoke(cspon_app, fit)
    assert result.exit_code != 0 and "pair_4" in str(result.exception)
    (out / "fold_pair_4" / "moved.safetensors").rename(out / "fold_pair_4" / "best.safetensors")

    # a second run keeps the trained folds
    stamp = (out / "fold_pair_0" / "best.safetensors").stat().st_mtime_ns
    result = CliRunner().invoke(cli_app(), [*args, "--no-final"])
    assert result.exit_code == 0, result.output
    assert "already trained" in result.output
    assert (out / "fold_pair_0" / "best.safetensors").stat().st_mtime_ns == stamp


def test_band_jitter_shifts_each_band_and_date_on_its_own() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 4, 16, 16)).astype(np.float32)
    b = a.copy()
    lab = np.zeros((2, 16, 16), dtype=np.uint8)
    valid = np.ones((2, 16, 16), dtype=bool)
    cfg = AugmentConfig(flips=False, rot90=False, brightness=0.0, contrast=0.0, band_jitter=0.3)
    a2, b2, _, _ = augment_batch(a, b, lab, valid, np.random.default_rng(5), cfg)
    a3, _, _, _ = augment_batch(a, b, lab, valid, np.random.default_rng(5), cfg)
    np.testing.assert_array_equal(a2, a3)  # seeded
    # per band: out = in * g + o; g differs between bands and between the dates
    gains = np.array([[np.polyfit(x[0, c].ravel(), y[0, c].ravel(), 1)[0] for c in range(4)]
                      for x, y in ((a, a2), (b, b2))])
    assert np.all(np.abs(gains - 1.0) <= 0.3 + 1e-4)
    assert np.ptp(gains[0]) > 0.01 and np.abs(gains[0] - gains[1]).max() > 0.01
    off = AugmentConfig(flips=False, rot90=False, brightness=0.0, contrast=0.0)
    same, _, _, _ = augment_batch(a, b, lab, valid, np.random.default_rng(5), off)
    np.testing.assert_array_equal(same, a)

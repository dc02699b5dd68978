"""The warning classifier: scale-invariant features, deterministic fit, round trip, detect and warn use it."""

from __future__ import annotations

import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from inferencetest_support import BANDS, ScenePair, write_scene

from cspon_rs.inference.classify import (
    classifier_path_for,
    classify_patches,
    load_classifier,
    operating_point,
    save_classifier,
)
from cspon_rs.inference.features import feature_names, features_from_scenes
from cspon_rs.training.warning_classifier import PatchTable, fit_classifier, warning_curve


def _table(bands: list[str], n: int = 300, seed: int = 0) -> PatchTable:
    """Seeded patches whose label depends on two features (prob_mean up, edges before down) plus noise."""
    rng = np.random.default_rng(seed)
    names = feature_names(bands)
    x = pd.DataFrame(rng.normal(size=(n, len(names))), columns=names)
    x["prob_mean"] = rng.uniform(0.2, 1.0, n)
    logit = 6 * (x["prob_mean"] - 0.6) - 1.5 * x["grad_t1"]
    y = rng.random(n) < 1 / (1 + np.exp(-logit.to_numpy()))
    groups = np.array([f"pair{k % 6}" for k in range(n)], dtype=object)
    objects = [frozenset({f"pair{k % 6}#{k}"}) if y[k] else frozenset() for k in range(n)]
    return PatchTable(features=x, touches=y, objects=objects, group=groups,
                      variant=np.array(["as is"] * n, dtype=object),
                      n_objects={(f"pair{g}", "as is"): int(sum(y[k] for k in range(n) if k % 6 == g))
                                 for g in range(6)})


def _patches_on(path: Path, boxes: list[tuple[int, int, int, int]]) -> gpd.GeoDataFrame:
    """Rectangles given in pixels (row0, col0, rows, cols) as polygons in the scene's CRS, with area_m2."""
    import shapely

    with rasterio.open(path) as src:
        t, crs = src.transform, src.crs
    polys = []
    for r0, c0, h, w in boxes:
        x0, y0 = t * (c0, r0)
        x1, y1 = t * (c0 + w, r0 + h)
        polys.append(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    gdf = gpd.GeoDataFrame({"prob_mean": [0.7] * len(polys)}, geometry=polys, crs=crs)
    gdf["area_m2"] = gdf.geometry.area
    return gdf


BOXES = [(20, 20, 30, 40), (120, 100, 25, 25), (200, 180, 40, 20)]


def test_features_do_not_depend_on_the_radiometric_scale(scene_pair: ScenePair, tmp_path: Path) -> None:
    with rasterio.open(scene_pair.before) as a, rasterio.open(scene_pair.after) as b:
        da, db = a.read().astype(np.float64), b.read().astype(np.float64)
    top = max(da.max(), db.max())
    prob = np.full(da.shape[1:], 0.6, dtype="float32")
    prob_path = write_scene(tmp_path / "prob.tif", prob[None])
    patches = _patches_on(scene_pair.before, BOXES)
    rows = {}
    for name, data_a, data_b in (
        ("as is", da.astype("uint16"), db.astype("uint16")),
        ("16-bit x10", (da * 10).astype("uint16"), (db * 10).astype("uint16")),
        ("float 0-1", (da / top).astype("float32"), (db / top).astype("float32")),
    ):
        fa = write_scene(tmp_path / f"a_{name}.tif", data_a, descriptions=BANDS)
        fb = write_scene(tmp_path / f"b_{name}.tif", data_b, descriptions=BANDS)
        rows[name] = features_from_scenes(patches, fa, fb, prob_path, BANDS)
    ref = rows["as is"]
    assert list(ref.columns) == feature_names(BANDS)
    assert np.isfinite(ref.to_numpy()).all()
    for name, frame in rows.items():
        np.testing.assert_allclose(frame.to_numpy(), ref.to_numpy(), rtol=0.02, atol=0.02, err_msg=name)


def test_patch_and_ring_statistics_match_the_pixels(scene_pair: ScenePair, tmp_path: Path) -> None:
    import shapely
    from rasterio.features import rasterize

    from cspon_rs.inference.features import RING_PX

    with rasterio.open(scene_pair.before) as a:
        transform, shape = a.transform, (a.height, a.width)
    rng = np.random.default_rng(1)
    prob = rng.uniform(0, 1, shape).astype("float32")
    prob_path = write_scene(tmp_path / "prob.tif", prob[None])
    patches = _patches_on(scene_pair.before, BOXES)
    feats = features_from_scenes(patches, scene_pair.before, scene_pair.after, prob_path, BANDS, block_size=128)
    for k, geom in enumerate(patches.geometry):
        inside = rasterize([(geom, 1)], out_shape=shape, transform=transform, dtype="uint8") > 0
        grown = shapely.buffer(geom, RING_PX * abs(transform.a), quad_segs=2)
        ring = (rasterize([(grown.difference(geom), 1)], out_shape=shape, transform=transform, dtype="uint8") > 0)
        assert feats.loc[k, "prob_max"] == pytest.approx(prob[inside].max())
        assert feats.loc[k, "prob_mean"] == pytest.approx(prob[inside].mean(), rel=1e-6)
        assert feats.loc[k, "ring_prob_mean"] == pytest.approx(prob[ring & ~inside].mean(), rel=1e-6)
    # the blocks (128 px) cut the patches: sums over blocks equal sums over the scene
    whole = features_from_scenes(patches, scene_pair.before, scene_pair.after, prob_path, BANDS)
    np.testing.assert_allclose(feats.drop(columns=["grad_t1", "grad_t2", "grad_change"]).to_numpy(),
                               whole.drop(columns=["grad_t1", "grad_t2", "grad_change"]).to_numpy(), rtol=1e-6)


def test_fit_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    table = _table(BANDS)
    clf1, rep1 = fit_classifier(table, BANDS, seed=3)
    clf2, _ = fit_classifier(table, BANDS, seed=3)
    assert clf1.booster == clf2.booster and clf1.calibration == clf2.calibration
    assert rep1["out_of_fold"]["auc"] > 0.7  # the planted signal is learned out of fold
    path = tmp_path / "x.classifier.json"
    save_classifier(clf1, path)
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    again = load_classifier(path)
    np.testing.assert_array_equal(again.confidence(table.features), clf1.confidence(table.features))
    conf = clf1.confidence(table.features)
    assert ((conf >= 0) & (conf <= 1)).all()
    # calibrated: among patches scored high, most are real
    assert table.touches[conf >= 0.7].mean() > 0.6


def test_operating_point_reaches_the_target_precision() -> None:
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    real = np.array([1, 1, 1, 0, 1, 0, 0, 0], dtype=bool)
    assert operating_point(conf, real, 0.75) == pytest.approx(0.5)  # 4 of 5 kept are real
    assert operating_point(conf, real, 1.0) == pytest.approx(0.7)
    # the 1.0 target keeps 3 of 4 real patches; with 4 of 4 required it gives way to the highest confidence
    # that keeps them all; an unreachable target under the bound does too
    assert operating_point(conf, real, 1.0, min_recall=0.75) == pytest.approx(0.7)
    assert operating_point(conf, real, 1.0, min_recall=1.0) == pytest.approx(0.5)
    assert operating_point(conf, real, 0.99, min_recall=0.5) == pytest.approx(0.7)
    assert operating_point(conf, real, None, min_recall=1.0) == pytest.approx(0.5)
    curve = warning_curve(conf, real, [frozenset({str(k)}) if r else frozenset() for k, r in enumerate(real)], 4,
                          [0.0, 0.5])
    assert curve[1]["warning_precision"] == pytest.approx(0.8) and curve[1]["object_recall"] == pytest.approx(1.0)


def test_classify_keeps_every_patch_and_says_why(tmp_path: Path) -> None:
    table = _table(BANDS)
    clf, _ = fit_classifier(table, BANDS, seed=0)
    patches = gpd.GeoDataFrame(
        {"prob_mean": table.features["prob_mean"].to_numpy()[:40], "suppressed_by": [None] * 39 + ["mmu"],
         "suppress_reason": [None] * 39 + ["small"]},
        geometry=gpd.points_from_xy(np.arange(40), np.zeros(40)).buffer(0.4), crs="EPSG:32650",
    )
    res = classify_patches(patches, table.features.iloc[:40], clf, min_confidence=0.5)
    out = res.patches
    assert len(out) == 40
    assert out.loc[39, "suppressed_by"] == "mmu"  # an earlier cue stays the reason
    low = out["suppressed_by"] == "classifier"
    assert low.sum() == res.n_suppressed > 0
    assert (out.loc[low, "confidence"] < 0.5).all() and (out.loc[~low & out.index.isin(range(39)),
                                                                  "confidence"] >= 0.5).all()
    assert all("confidence" in r and "<" in r for r in out.loc[low, "suppress_reason"])
    assert all(len(str(r).split("; ")) == 3 for r in out.loc[:38, "confidence_reason"])  # top three features


def test_detect_uses_the_checkpoint_classifier_and_old_cards_still_work(
    scene_pair: ScenePair, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from cspon_rs.inference.detect import detect_pair

    plain = detect_pair(scene_pair.before, scene_pair.after, tmp_path / "plain", checkpoint=tiny_checkpoint,
                        progress=False, min_area_m2=0.0)
    base = gpd.read_file(plain.patches_path)
    assert len(base) > 0
    assert np.allclose(base["confidence"], base["prob_mean"])  # no classifier: confidence = prob_mean
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    for f in tiny_checkpoint.parent.iterdir():
        shutil.copy(f, ckpt_dir / f.name)
    weights = ckpt_dir / tiny_checkpoint.name
    clf, _ = fit_classifier(_table(BANDS), BANDS, seed=0)
    save_classifier(clf.model_copy(update={"min_confidence": 0.5}), classifier_path_for(weights))
    res = detect_pair(scene_pair.before, scene_pair.after, tmp_path / "clf", checkpoint=weights, progress=False,
                      min_area_m2=0.0)
    got = gpd.read_file(res.patches_path)
    assert len(got) == len(base)  # nothing deleted
    scored = got["suppressed_by"].isna() | (got["suppressed_by"] == "classifier")
    assert got.loc[scored, "confidence"].between(0, 1).all()
    assert ((got["suppressed_by"] == "classifier") == (scored & (got["confidence"] < 0.5))).all()
    assert "classifier" in res.summary()
    off = detect_pair(scene_pair.before, scene_pair.after, tmp_path / "off", checkpoint=weights, progress=False,
                      min_area_m2=0.0, classifier="none")
    assert (gpd.read_file(off.patches_path)["suppressed_by"] != "classifier").all()


def test_a_classifier_for_other_bands_is_refused(scene_pair: ScenePair, tiny_checkpoint: Path,
                                                 tmp_path: Path) -> None:
    from cspon_rs.errors import ConfigError
    from cspon_rs.inference.detect import detect_pair

    rgb = ["R", "G", "B"]
    clf, _ = fit_classifier(_table(rgb), rgb, seed=0)
    path = tmp_path / "rgb.classifier.json"
    save_classifier(clf, path)
    with pytest.raises(ConfigError, match="bands"):
        detect_pair(scene_pair.before, scene_pair.after, tmp_path / "x", checkpoint=tiny_checkpoint,
                    progress=False, min_area_m2=0.0, classifier=path)

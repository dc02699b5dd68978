"""Evaluating like a bureau: predicted patches, warning/top-k precision, per-km² figures, baselines, CLI.

Real tiny rasters are written by seeded fixtures: a georeferenced 10 m GeoTIFF pair (EPSG:32650) with a
hand-made label of three objects, where the after date changes two of them and adds one unlabelled change.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from trainingtest_support import cli_app, write_levir
from typer.testing import CliRunner

from cspon_rs.errors import ConfigError
from cspon_rs.geo.pixels import pixel_area_m2
from cspon_rs.models.card import ModelCard, Normalization
from cspon_rs.models.checkpoint import load_card, save_checkpoint
from cspon_rs.models.registry import create_model
from cspon_rs.training.datasets import load_levir, load_pair_folder
from cspon_rs.training.evaluate import (
    build_detector,
    evaluate,
    evaluate_unlabelled,
    load_unlabelled_pair,
    patch_figures,
    pool_patch_figures,
)

SIZE = 64
RES = 10.0
OBJ_A = (slice(5, 15), slice(5, 15))  # labelled, changed in the imagery
OBJ_B = (slice(5, 15), slice(40, 50))  # labelled, changed
OBJ_C = (slice(40, 50), slice(5, 15))  # labelled, not visible in the imagery (missed)
FALSE = (slice(45, 49), slice(45, 49))  # changed in the imagery, not labelled (a false alarm, 16 px = 1600 m²)
KM2 = SIZE * SIZE * RES * RES / 1e6




def _label() -> np.ndarray:
    label = np.zeros((SIZE, SIZE), dtype=np.uint8)
    for sl in (OBJ_A, OBJ_B, OBJ_C):
        label[sl] = 1
    return label


@pytest.fixture()
def bureau_pair(tmp_path: Path) -> Path:
    """A pair folder (before_*.tif, after_*.tif, label.tif): 4-band uint16, 10 m, EPSG:32650."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(7)
    before = rng.integers(800, 1200, size=(4, SIZE, SIZE)).astype(np.uint16)
    after = before.copy()  # identical except where something changed
    for sl in (OBJ_A, OBJ_B, FALSE):
        after[:, sl[0], sl[1]] = 3000
    folder = tmp_path / "pair"
    folder.mkdir()
    profile = dict(
        driver="GTiff",
        width=SIZE,
        height=SIZE,
        count=4,
        dtype="uint16",
        crs="EPSG:32650",
        transform=from_origin(500_000.0, 3_500_000.0, RES, RES),
    )
    with rasterio.open(folder / "before_2020.tif", "w", **profile) as dst:
        dst.write(before)
    with rasterio.open(folder / "after_2021.tif", "w", **profile) as dst:
        dst.write(after)
    with rasterio.open(folder / "label.tif", "w", **{**profile, "count": 1, "dtype": "uint8"}) as dst:
        dst.write(_label()[None])
    return folder


def _tiny_checkpoint(path: Path, bands: list[str], **card_kw: object) -> Path:
    kw: dict[str, Any] = {"encoder_depth": 3, "decoder_channels": [16, 16, 8]}
    torch.manual_seed(3)
    model = create_model("siam_unet_lite", in_channels=len(bands), **kw).eval()
    card = ModelCard(
        name="tiny",
        version="0",
        architecture="siam_unet_lite",
        init_kwargs=kw,
        bands=bands,
        normalization=Normalization(mean=[100.0] * len(bands), std=[50.0] * len(bands)),
        **card_kw,  # type: ignore[arg-type]
    )
    weights, _ = save_checkpoint(model, card, path)
    return weights


def test_patch_figures_hand_made_label() -> None:
    label = _label()
    prob = np.full((SIZE, SIZE), 0.1, dtype=np.float32)
    prob[7:12, 7:12] = 0.6  # part of A
    prob[5:15, 38:45] = 0.7  # overlaps B and spills outside it
    prob[FALSE] = 0.9  # the most confident patch is the false one
    fig = patch_figures(prob, 0.5, None, label == 1, pixel_area_m2=RES * RES)
    assert fig.n == 3 and fig.touching == 2
    assert fig.warning_precision == pytest.approx(2 / 3)
    assert (fig.objects, fig.objects_touched) == (3, 2) and fig.object_recall == pytest.approx(2 / 3)
    assert fig.top_k_precision(1) == 0.0
    assert fig.top_k_precision(2) == pytest.approx(0.5)
    assert fig.top_k_precision(3) == pytest.approx(2 / 3)
    assert fig.top_k_precision(10) is None  # fewer than 10 patches
    np.testing.assert_allclose(sorted(fig.confidence), [0.6, 0.7, 0.9], rtol=1e-6)
    d = fig.as_dict()
    assert d["patches_per_km2"] == pytest.approx(3 / KM2)
    assert d["flagged_area_m2"] == pytest.approx((25 + 70 + 16) * 100.0)
    assert d["top_k_precision"] == {"10": None, "20": None, "50": None}
    # minimum mapping unit: the 16-pixel false patch (1600 m²) goes, the others stay
    mmu = patch_figures(prob, 0.5, None, label == 1, pixel_area_m2=RES * RES, min_area_m2=2000)
    assert (mmu.n, mmu.dropped, mmu.warning_precision) == (2, 1, 1.0)
    assert mmu.object_recall == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match="pixel size"):
        patch_figures(prob, 0.5, None, label == 1, min_area_m2=2000)
    # invalid pixels are no patches; an unlabelled pair has no label figures
    valid = np.ones((SIZE, SIZE), dtype=bool)
    valid[FALSE] = False
    unl = patch_figures(prob, 0.5, valid, None, pixel_area_m2=RES * RES)
    assert unl.n == 2 and unl.warning_precision is None and "warning_precision" not in unl.as_dict()


def test_patches_are_8_connected_and_pooling() -> None:
    prob = np.zeros((20, 20), dtype=np.float32)
    prob[2, 2] = prob[3, 3] = 1.0  # diagonal neighbours: one patch
    prob[10, 10] = 1.0
    truth = np.zeros((20, 20), dtype=bool)
    truth[3, 3] = True
    a = patch_figures(prob, 0.5, None, truth, pixel_area_m2=1.0)
    assert a.n == 2 and a.touching == 1
    b = patch_figures(prob, 0.5, None, np.zeros((20, 20), dtype=bool), pixel_area_m2=1.0)
    pooled = pool_patch_figures([a, b], top_k=(1, 2, 3))
    assert pooled["patches"] == 4 and pooled["warning_precision"] == pytest.approx(0.25)
    # top-2: mean over the pairs with >= 2 patches; top-3: no pair qualifies
    assert pooled["top_k_precision"]["2"] == {"precision": pytest.approx(0.25), "pairs": 2, "of_pairs": 2}
    assert pooled["top_k_precision"]["3"] == {"precision": None, "pairs": 0, "of_pairs": 2}
    assert pooled["objects"] == 1 and pooled["object_recall"] == 1.0
    assert pooled["patches_per_km2"] == pytest.approx(4 / (800 / 1e6))


def test_pixel_area_from_transform() -> None:
    assert pixel_area_m2("EPSG:32650", (10.0, 0.0, 5e5, 0.0, -10.0, 3.5e6)) == pytest.approx(100.0)
    # 1e-4 degree at the equator: about 11.13 m (longitude) x 11.06 m (latitude)
    geo = pixel_area_m2("EPSG:4326", (1e-4, 0.0, 114.0, 0.0, -1e-4, 0.005), (100, 100))
    assert geo == pytest.approx(11.132 * 11.057, rel=0.01)
    assert pixel_area_m2(None, None) is None


def test_evaluate_spectral_and_all_change_on_georeferenced_pair(bureau_pair: Path, tmp_path: Path) -> None:
    pair = load_pair_folder(bureau_pair)
    spec = evaluate("spectral", [pair], out_dir=tmp_path / "spec", print_table=False)
    p = spec.per_pair[pair.id]
    assert p["pixel_size_source"] == "transform" and p["pixel_area_m2"] == pytest.approx(100.0)
    f = spec.patches
    assert f["patches"] == 3 and f["touching_change"] == 2 and f["warning_precision"] == pytest.approx(2 / 3)
    assert f["objects"] == 3 and f["object_recall"] == pytest.approx(2 / 3)
    assert f["patches_per_km2"] == pytest.approx(3 / KM2)
    assert f["top_k_precision"]["10"] == {"precision": None, "pairs": 0, "of_pairs": 1}
    assert spec.metrics.precision == pytest.approx(200 / 216) and spec.metrics.recall == pytest.approx(200 / 300)
    saved = json.loads((tmp_path / "spec" / "report.json").read_text())
    assert saved["patches"]["patches"] == 3 and 0.0 <= saved["ece"] <= 1.0

    mmu = evaluate("spectral", [pair], min_area_m2=2000, print_table=False)
    assert mmu.patches["patches"] == 2 and mmu.patches["warning_precision"] == 1.0

    every = evaluate(build_detector("all-change"), [pair], print_table=False)
    assert every.detector == "flag-every-pixel" and every.metrics.recall == 1.0
    assert every.patches["patches"] == 1 and every.patches["warning_precision"] == 1.0
    assert every.ece == pytest.approx(1 - 300 / SIZE**2)


def test_cli_evaluate_writes_json_with_every_figure(tmp_path: Path) -> None:
    levir = write_levir(tmp_path / "levir", n=3, seed=4)
    ck = _tiny_checkpoint(tmp_path / "ck" / "tiny", ["R", "G", "B"])
    out_json = tmp_path / "figures.json"
    args = ["evaluate", "--checkpoint", str(ck), "--data", str(levir), "--pixel-size", "0.5", "--json", str(out_json)]
    result = CliRunner().invoke(cli_app(), args)
    assert result.exit_code == 0, result.output
    assert "warn. prec." in result.output and "top-20" in result.output and "pooled" in result.output
    d = json.loads(out_json.read_text())
    top = {"detector", "labelled", "threshold", "temperature", "min_area_m2", "metrics", "ece", "reliability"}
    assert top | {"patches", "per_pair"} <= set(d) and d["labelled"] is True
    assert {
        "patches",
        "touching_change",
        "warning_precision",
        "top_k_precision",
        "objects",
        "objects_touched",
        "object_recall",
        "valid_area_km2",
        "patches_per_km2",
        "flagged_area_m2",
        "flagged_m2_per_km2",
    } <= set(d["patches"])
    assert set(d["patches"]["top_k_precision"]) == {"10", "20", "50"}
    assert d["patches"]["valid_area_km2"] == pytest.approx(3 * 64 * 64 * 0.25 / 1e6)
    one = d["per_pair"]["pair_0"]
    assert one["pixel_size_source"] == "given" and {"f1", "ece", "patches"} <= set(one)
    assert {"mean_predicted", "observed", "count", "ece"} <= set(d["reliability"])

    # the trivial baseline: one patch per pair, each touching change (every crop has change)
    result = CliRunner().invoke(
        cli_app(),
        ["evaluate", "--checkpoint", "all-change", "--data", str(levir), "--like", str(ck), "--json", str(out_json)],
    )
    assert result.exit_code == 0, result.output
    d = json.loads(out_json.read_text())
    assert d["detector"] == "flag-every-pixel" and d["patches"]["patches"] == 3
    assert d["patches"]["warning_precision"] == 1.0 and d["metrics"]["recall"] == 1.0

    # a minimum mapping unit needs a pixel size: LEVIR crops have no georeferencing, the card none
    result = CliRunner().invoke(
        cli_app(), ["evaluate", "--checkpoint", str(ck), "--data", str(levir), "--min-area-m2", "50"]
    )
    assert isinstance(result.exception, ConfigError) and "--pixel-size" in str(result.exception)


def test_cli_evaluate_unlabelled_pair(bureau_pair: Path, tmp_path: Path) -> None:
    before, after = bureau_pair / "before_2020.tif", bureau_pair / "after_2021.tif"
    out_json = tmp_path / "naip_like.json"
    args = ["evaluate", "--checkpoint", "spectral", "--before", str(before), "--after", str(after)]
    result = CliRunner().invoke(cli_app(), [*args, "--min-area-m2", "2000", "--json", str(out_json)])
    assert result.exit_code == 0, result.output
    assert "patches/km²" in result.output and "warn. prec." not in result.output
    d = json.loads(out_json.read_text())
    assert d["labelled"] is False and d["min_area_m2"] == 2000
    assert d["patches"]["patches"] == 2 and d["patches"]["dropped_below_mmu"] == 1
    assert d["patches"]["patches_per_km2"] == pytest.approx(2 / KM2)
    assert d["patches"]["flagged_m2_per_km2"] == pytest.approx(200 * 100.0 / KM2)
    assert "warning_precision" not in d["patches"]
    # the Python API agrees
    pair = load_unlabelled_pair(before, after)
    assert pair.id == "before_2020->after_2021" and pair.valid.all()
    rep = evaluate_unlabelled("spectral", [pair], print_table=False)
    assert rep.patches["patches"] == 3
    result = CliRunner().invoke(cli_app(), [*args[:-2]])
    assert isinstance(result.exception, ConfigError) and "--after" in str(result.exception)


def test_cli_calibrate_writes_card_and_backup(tmp_path: Path) -> None:
    levir = write_levir(tmp_path / "levir", n=3, seed=4)
    ck = _tiny_checkpoint(tmp_path / "ck" / "tiny", ["R", "G", "B"], training_data={"test": ["pair_2"]})
    card_path = ck.with_suffix(".json")
    old_text = card_path.read_text()
    result = CliRunner().invoke(
        cli_app(), ["calibrate", "--checkpoint", str(ck), "--data", str(levir), "--ids", "pair_0,pair_1"]
    )
    assert result.exit_code == 0, result.output
    assert "temperature T =" in result.output and "ECE" in result.output and "threshold" in result.output
    assert (card_path.parent / "tiny.json.bak").read_text() == old_text
    card = load_card(card_path)
    cal = card.metrics["calibration"]
    assert card.temperature == pytest.approx(cal["temperature"], rel=1e-5) and cal["pairs"] == ["pair_0", "pair_1"]
    assert f"T = {card.temperature:.4f}" in result.output
    assert not list(card_path.parent.glob("*.tmp"))
    # the card's test pairs are refused
    result = CliRunner().invoke(
        cli_app(), ["calibrate", "--checkpoint", str(ck), "--data", str(levir), "--ids", "pair_2"]
    )
    assert isinstance(result.exception, ConfigError) and "test split" in str(result.exception)


def test_evaluate_scores_exactly_the_patches_detect_delivers(bureau_pair: Path, tmp_path: Path) -> None:
    """#20 item 5: on a georeferenced pair, evaluate's patches are detect's (same radiometry, MMU, suppression)."""
    import geopandas as gpd
    import shapely

    from cspon_rs.inference.config import DetectConfig
    from cspon_rs.inference.detect import detect_pair
    from cspon_rs.inference.vectorize import PATCH_LAYER
    from cspon_rs.models.checkpoint import shipped_checkpoint

    ck = shipped_checkpoint("s2-rgbn")
    cfg = DetectConfig.model_validate({"backend": "torch", "device": "cpu", "threshold": 0.3,
                                       "suppress": {"mmu": {"min_area_m2": 2000}}})
    kw = cfg.detect_kwargs()
    kw.pop("checkpoint")
    det = detect_pair(bureau_pair / "before_2020.tif", bureau_pair / "after_2021.tif", tmp_path / "detect",
                      checkpoint=ck, progress=False, **kw)
    pair = load_pair_folder(bureau_pair)
    rep = evaluate(ck, [pair], out_dir=tmp_path / "eval", detect_config=cfg, print_table=False, panels=False)
    pp = rep.per_pair[pair.id]
    assert rep.pipeline == "detect" and pp["pipeline"] == "detect" and pp["mmu_m2"] == 2000
    got = gpd.read_file(pp["patches_path"], layer=PATCH_LAYER)
    want = gpd.read_file(det.patches_path, layer=PATCH_LAYER)
    assert len(want) >= 2 and len(got) == len(want)
    assert list(got["patch_id"]) == list(want["patch_id"])
    assert all(shapely.equals(a, b) for a, b in zip(got.geometry, want.geometry, strict=True))
    assert np.allclose(got["prob_mean"], want["prob_mean"])
    assert list(got["suppressed_by"]) == list(want["suppressed_by"])
    kept = int(want["suppressed_by"].isna().sum())
    f = rep.patches
    assert f["patches"] == kept and f["suppressed"] == len(want) - kept
    assert f["patches_per_km2"] == pytest.approx(kept / KM2)
    assert {"warning_precision", "object_recall", "top_k_precision", "pr_curve"} <= set(f)
    curve = f["pr_curve"]
    assert curve and curve[-1]["patches"] == kept
    assert curve[-1]["precision"] == pytest.approx(f["warning_precision"])
    assert curve[-1]["object_recall"] == pytest.approx(f["object_recall"])
    assert all(a["object_recall"] <= b["object_recall"] for a, b in itertools.pairwise(curve))
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["pipeline"] == "detect" and saved["per_pair"][pair.id]["radiometry"].startswith("before: 16-bit")
    # the raw-pixel pipeline is still there, and differs (no radiometry, no suppression)
    raw = evaluate(ck, [pair], pipeline="pixels", print_table=False)
    assert raw.pipeline == "pixels" and raw.per_pair[pair.id]["pipeline"] == "pixels"


def test_unreferenced_pairs_take_the_pixel_size_for_the_mmu_and_per_km2(tmp_path: Path) -> None:
    """PNG pairs: --pixel-size (or the card's) gives detect a metre grid, so MMU and per-km² mean the same."""
    levir = write_levir(tmp_path / "levir", n=2, seed=4)
    ck = _tiny_checkpoint(tmp_path / "ck" / "tiny", ["R", "G", "B"], pixel_size_m=0.5)
    rep = evaluate(ck, load_levir(levir), print_table=False, panels=False)
    one = next(iter(rep.per_pair.values()))
    assert one["pixel_size_source"] == "card" and one["pixel_area_m2"] == pytest.approx(0.25)
    assert one["mmu_m2"] == 50.0  # auto rule at 0.5 m
    assert rep.patches["valid_area_km2"] == pytest.approx(2 * 64 * 64 * 0.25 / 1e6)
    given = evaluate(ck, load_levir(levir), print_table=False, panels=False, pixel_size_m=2.0)
    one = next(iter(given.per_pair.values()))
    assert one["pixel_size_source"] == "given" and one["mmu_m2"] == 50.0
    assert given.patches["valid_area_km2"] == pytest.approx(2 * 64 * 64 * 4.0 / 1e6)


def test_cli_evaluate_radiometry_flag_reaches_detect(tmp_path: Path) -> None:
    levir = write_levir(tmp_path / "levir", n=1, seed=4)
    ck = _tiny_checkpoint(tmp_path / "ck" / "tiny", ["R", "G", "B"])
    base = ["evaluate", "--checkpoint", str(ck), "--data", str(levir), "--pixel-size", "0.5"]
    out_json = tmp_path / "r.json"
    result = CliRunner().invoke(cli_app(), [*base, "--radiometry", "none", "--json", str(out_json)])
    assert result.exit_code == 0, result.output
    one = json.loads(out_json.read_text())["per_pair"]["pair_0"]
    assert one["pipeline"] == "detect" and "not rescaled" in one["radiometry"]
    result = CliRunner().invoke(cli_app(), [*base, "--radiometry", "gain"])  # an old card has no statistics
    assert isinstance(result.exception, ConfigError) and "input statistics" in str(result.exception)
    result = CliRunner().invoke(cli_app(), [*base, "--radiometry", "bogus"])
    assert isinstance(result.exception, ConfigError) and "radiometry" in str(result.exception)

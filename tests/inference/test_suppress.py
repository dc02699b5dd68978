"""False-alarm suppression (cspon_rs.inference.suppress) on seeded synthetic 4-band GeoTIFFs, no mocks.

The after scene holds four changed places on a grass/soil background: a field that turned green (NDVI ~0.8),
a new pond (NDWI ~0.5), a 6-pixel speck of roof (600 m², below the 700 m² mapping unit) and a large bare
bright site (new construction). Patches come from a real mask through ``vectorize_mask``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from inferencetest_support import SCENE_CRS, write_scene
from pydantic import ValidationError
from rasterio.transform import from_origin

from cspon_rs.config import load_yaml_config
from cspon_rs.errors import ConfigError
from cspon_rs.geo.vector import write_vector_atomic
from cspon_rs.inference.config import DetectConfig
from cspon_rs.inference.suppress import (
    SUPPRESS_COLUMNS,
    SuppressConfig,
    apply_suppression,
    band_roles,
    patch_index_stats,
)
from cspon_rs.inference.vectorize import PATCH_COLUMNS, PATCH_LAYER, PatchAttributes, vectorize_mask

SIZE = 120
TRANSFORM = from_origin(205000.0, 2475000.0, 10.0, 10.0)
S2_BANDS = ["B04", "B03", "B02", "B08"]
BACKGROUND = (1200.0, 1100.0, 1000.0, 1800.0)  # R, G, B, NIR: sparse grass / soil, NDVI 0.2
#: name -> (row0, row1, col0, col1), after-date R, G, B, NIR
PLACES: dict[str, tuple[tuple[int, int, int, int], tuple[float, float, float, float]]] = {
    "vegetation": ((10, 30, 10, 30), (400.0, 600.0, 400.0, 3500.0)),
    "water": ((10, 30, 60, 80), (500.0, 700.0, 800.0, 250.0)),
    "speck": ((60, 62, 10, 13), (2600.0, 2500.0, 2400.0, 2700.0)),
    "bare": ((70, 100, 60, 90), (2600.0, 2500.0, 2400.0, 2700.0)),
}


def _scenes(seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.array(BACKGROUND)[:, None, None]
    before = base + rng.normal(0, 30, (4, SIZE, SIZE))
    after = base + rng.normal(0, 30, (4, SIZE, SIZE))
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    for (r0, r1, c0, c1), values in PLACES.values():
        after[:, r0:r1, c0:c1] = np.array(values)[:, None, None] + rng.normal(0, 25, (4, r1 - r0, c1 - c0))
        mask[r0:r1, c0:c1] = 1
    return np.clip(before, 1, 10000).astype(np.uint16), np.clip(after, 1, 10000).astype(np.uint16), mask


def _write_float(path: Path, data: np.ndarray, nodata: float) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=1, dtype=data.dtype.name,
                       crs=SCENE_CRS, transform=TRANSFORM, nodata=nodata) as dst:
        dst.write(data[None])
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Scenes (4-band and RGB-only), and the detector's patches of the four places, in a dict."""
    folder = tmp_path_factory.mktemp("suppress")
    before, after, mask = _scenes()
    paths = {
        "before": write_scene(folder / "before_20240101.tif", before, transform=TRANSFORM, descriptions=S2_BANDS),
        "after": write_scene(folder / "after_20240701.tif", after, transform=TRANSFORM, descriptions=S2_BANDS),
        "before_rgb": write_scene(folder / "before_rgb.tif", before[:3], transform=TRANSFORM,
                                  descriptions=S2_BANDS[:3]),
        "after_rgb": write_scene(folder / "after_rgb.tif", after[:3], transform=TRANSFORM,
                                 descriptions=S2_BANDS[:3]),
    }
    mask_path = _write_float(folder / "mask.tif", mask, 255)
    prob_path = _write_float(folder / "prob.tif", np.where(mask == 1, 0.9, 0.1).astype("float32"), -1)
    attrs = PatchAttributes("2024-01-01", "2024-07-01", "before_20240101.tif", "after_20240701.tif", "test")
    patches = vectorize_mask(mask_path, prob_path, attrs, min_area_m2=200.0, simplify_m=1.0)
    assert len(patches) == 4
    return {"folder": folder, "patches": patches, **paths}


def _place_of(patches: gpd.GeoDataFrame) -> list[str]:
    """Which synthetic place each patch is (by its centroid's pixel)."""
    names = []
    for geom in patches.geometry:
        col, row = ~TRANSFORM @ (geom.centroid.x, geom.centroid.y)
        for name, ((r0, r1, c0, c1), _) in PLACES.items():
            if r0 <= row <= r1 and c0 <= col <= c1:
                names.append(name)
    assert len(names) == len(patches)
    return names


def test_each_cue_suppresses_its_patch_and_keeps_bare_construction(scene: dict[str, object]) -> None:
    patches = scene["patches"]
    assert isinstance(patches, gpd.GeoDataFrame)
    res = apply_suppression(patches, SuppressConfig(), before=scene["before"],  # type: ignore[arg-type]
                            after=scene["after"], bands=S2_BANDS)  # type: ignore[arg-type]
    out = res.patches
    assert list(out.columns) == [*PATCH_COLUMNS, *SUPPRESS_COLUMNS, "geometry"]
    by = dict(zip(_place_of(out), out["suppressed_by"], strict=True))
    assert by == {"vegetation": "vegetation", "water": "water", "speck": "mmu", "bare": None}
    assert res.counts == {"mmu": 1, "vegetation": 1, "water": 1}
    assert res.n_suppressed == 3 and res.skipped == []
    row = dict(zip(_place_of(out), out.itertuples(), strict=True))
    assert row["vegetation"].ndvi_t2 > 0.7 and row["vegetation"].ndvi_t1 == pytest.approx(0.2, abs=0.03)
    assert row["water"].ndwi_t2 > 0.4
    assert row["bare"].ndvi_t2 < 0.1 and row["bare"].ndwi_t2 < 0.0 and row["bare"].suppress_reason is None
    assert "NDVI 0.7" in row["vegetation"].suppress_reason or "NDVI 0.8" in row["vegetation"].suppress_reason
    assert "minimum mapping unit 700" in row["speck"].suppress_reason
    # every cue can be switched off, and thresholds move the decision
    off = SuppressConfig.model_validate({"mmu": {"enabled": False}, "water": {"ndwi_after_min": 0.9}})
    res_off = apply_suppression(patches, off, before=scene["before"], after=scene["after"],  # type: ignore[arg-type]
                                bands=S2_BANDS)
    assert dict(zip(_place_of(res_off.patches), res_off.patches["suppressed_by"], strict=True)) == {
        "vegetation": "vegetation", "water": None, "speck": None, "bare": None}


def test_index_stats_match_the_pixels(scene: dict[str, object]) -> None:
    patches = scene["patches"]
    assert isinstance(patches, gpd.GeoDataFrame)
    stats = patch_index_stats(patches.to_crs(4326), scene["before"], scene["after"],  # type: ignore[arg-type]
                              band_roles(S2_BANDS), block_size=50)  # blocks cut the patches; any CRS works
    with rasterio.open(scene["after"]) as src:  # type: ignore[call-overload]
        after = src.read().astype(float)
    names = _place_of(patches)
    for k, name in enumerate(names):
        (r0, r1, c0, c1), _ = PLACES[name]
        red, nir = after[0, r0:r1, c0:c1], after[3, r0:r1, c0:c1]
        assert stats["ndvi_t2"].iloc[k] == pytest.approx(float(((nir - red) / (nir + red)).mean()), abs=1e-6)
        assert stats["n_pixels"].iloc[k] == (r1 - r0) * (c1 - c0)


def test_band_roles() -> None:
    assert band_roles(S2_BANDS) == band_roles(["red", "green", "blue", "nir"])
    roles = band_roles(["R", "G", "B", "NIR"])
    assert (roles.red, roles.green, roles.nir) == (0, 1, 3) and roles.has_ndvi and roles.has_ndwi
    assert band_roles(["B02", "B03", "B04", "B8A", "B08"]).nir == 4  # B08 preferred over B8A
    rgb = band_roles(["R", "G", "B"])
    assert rgb.nir is None and not rgb.has_ndvi and not rgb.has_ndwi
    assert not band_roles([None, None, None, None]).has_ndvi  # unnamed bands are never guessed


def test_rgb_checkpoint_skips_nir_cues_and_says_so(scene: dict[str, object], caplog: pytest.LogCaptureFixture) -> None:
    patches = scene["patches"]
    assert isinstance(patches, gpd.GeoDataFrame)
    with caplog.at_level(logging.WARNING, logger="cspon_rs.inference.suppress"):
        res = apply_suppression(patches, SuppressConfig(), before=scene["before_rgb"],  # type: ignore[arg-type]
                                after=scene["after_rgb"], bands=S2_BANDS[:3])  # type: ignore[arg-type]
    by = dict(zip(_place_of(res.patches), res.patches["suppressed_by"], strict=True))
    assert by == {"vegetation": None, "water": None, "speck": "mmu", "bare": None}
    assert res.counts == {"mmu": 1}
    assert len(res.skipped) == 2 and all("no" in m and "NIR" in m for m in res.skipped)
    assert "vegetation cue skipped" in caplog.text and "water cue skipped" in caplog.text
    assert "skipped" in res.summary() and res.patches["ndvi_t2"].isna().all()


def test_config_section_rejects_unknown_keys(tmp_path: Path, repo_root: Path) -> None:
    with pytest.raises(ValidationError, match="extra"):
        DetectConfig.model_validate({"suppress": {"water": {"ndwi": 0.1}}})
    with pytest.raises(ValidationError):
        SuppressConfig.model_validate({"vegetation": {"ndvi_after_min": 1.5}})
    bad = tmp_path / "detect.yaml"
    bad.write_text("suppress:\n  mmu:\n    min_area: 500\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="min_area"):
        load_yaml_config(bad, DetectConfig)
    shipped = load_yaml_config(repo_root / "configs" / "detect.yaml", DetectConfig)
    assert shipped.suppress == SuppressConfig()  # the YAML documents the defaults
    assert shipped.detect_kwargs()["suppress"] == SuppressConfig()
    assert SuppressConfig(enabled=False).enabled_cues() == []


def test_suppressed_patches_do_not_become_warnings(scene: dict[str, object], tmp_path: Path) -> None:
    from cspon_rs.rules.inputs import load_patches
    from cspon_rs.rules.pipeline import run_warning_pipeline
    from cspon_rs.rules.synthetic import permits_frame

    patches = scene["patches"]
    assert isinstance(patches, gpd.GeoDataFrame)
    res = apply_suppression(patches, SuppressConfig(), before=scene["before"],  # type: ignore[arg-type]
                            after=scene["after"], bands=S2_BANDS)  # type: ignore[arg-type]
    changes = tmp_path / "change_patches.gpkg"
    write_vector_atomic(res.patches, changes, layer=PATCH_LAYER, driver="GPKG", geometry_type="Polygon")
    bare_id = res.patches.loc[res.patches["suppressed_by"].isna(), "patch_id"].tolist()
    assert len(bare_id) == 1

    everything = load_patches(changes, include_suppressed=True)
    assert len(everything) == 4 and everything["suppressed_by"].notna().sum() == 3
    kept = load_patches(changes)
    assert kept["patch_id"].tolist() == bare_id
    assert any("3 change patch(es) suppressed" in m for m in kept.attrs["messages"])

    permits = tmp_path / "permits.gpkg"
    far = gpd.GeoSeries.from_xy([215000.0], [2465000.0], crs=SCENE_CRS).buffer(50)
    permits_frame([{"permit_no": "P-1", "approved_on": "2023-01-01"}], list(far), SCENE_CRS
                  ).to_file(permits, layer="permits", driver="GPKG")
    run = run_warning_pipeline(changes, permits, None, period="2024Q3", county_code="510000",
                               out_dir=tmp_path / "warnings", progress=False)
    assert run.warnings is not None
    flagged = run.warnings[run.warnings["is_warning"].astype(bool)]
    assert flagged["patch_id"].tolist() == bare_id and run.n_warnings == 1
    assert any("suppressed" in m for m in run.messages)
    # every patch suppressed: no warning, and the dates still come from the layer
    write_vector_atomic(res.patches.assign(suppressed_by="water"), changes, layer=PATCH_LAYER, driver="GPKG",
                        geometry_type="Polygon")
    empty = run_warning_pipeline(changes, permits, None, period="2024Q3", county_code="510001",
                                 out_dir=tmp_path / "warnings2", progress=False)
    assert empty.n_warnings == 0 and str(empty.t2) == "2024-07-01"


def test_detect_pair_writes_flagged_patches(scene: dict[str, object], tmp_path: Path) -> None:
    from cspon_rs.inference.detect import detect_pair

    res = detect_pair(scene["before"], scene["after"], tmp_path / "out", checkpoint="spectral",  # type: ignore[arg-type]
                      progress=False, suppress=SuppressConfig())
    layer = gpd.read_file(res.patches_path, layer=PATCH_LAYER)
    assert set(SUPPRESS_COLUMNS) <= set(layer.columns)
    assert res.n_suppressed == int(layer["suppressed_by"].notna().sum()) >= 2
    assert {"vegetation", "water"} <= set(layer["suppressed_by"].dropna())
    assert "suppressed" in res.summary() and "vegetation" in res.suppression
    plain = detect_pair(scene["before"], scene["after"], tmp_path / "plain", checkpoint="spectral",  # type: ignore[arg-type]
                        progress=False)
    plain_layer = gpd.read_file(plain.patches_path, layer=PATCH_LAYER)
    assert plain.n_suppressed == 0 and plain_layer["suppressed_by"].isna().all()
    assert len(plain_layer) == len(layer)

"""Bad and awkward inputs: overlap, bands, CRS, corrupt files, AOI, nodata, atomic outputs, other CRSs."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from inferencetest_support import BANDS, SCENE_TRANSFORM, make_pair_arrays, write_scene
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds
from shapely.geometry import box

from cspon_rs.errors import BandMismatchError, CorruptFileError, CRSError, GridMismatchError, InputRangeError
from cspon_rs.inference.detect import MASK_NAME, PATCHES_NAME, PROB_NAME, InferenceWarning, detect_pair
from cspon_rs.inference.suppress import SUPPRESS_COLUMNS
from cspon_rs.inference.vectorize import PATCH_COLUMNS, PATCH_LAYER

FINAL_NAMES = {PROB_NAME, MASK_NAME, PATCHES_NAME}


def _run(before: Path, after: Path, out: Path, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("checkpoint", "spectral")
    return detect_pair(before, after, out, progress=False, device="cpu", **kw)


def test_scenes_that_do_not_overlap(scene_pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, after = make_pair_arrays(1)
    far = write_scene(tmp_path / "far.tif", after, transform=from_origin(905000.0, 2475000.0, 10.0, 10.0))
    with pytest.raises(GridMismatchError, match="do not overlap"):
        _run(scene_pair.before, far, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not set(p.name for p in (tmp_path / "out").iterdir())


def test_band_count_differs_from_the_checkpoint(scene_pair, tiny_checkpoint: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, after = make_pair_arrays(1)
    three = write_scene(tmp_path / "three.tif", after[:3])
    with pytest.raises(BandMismatchError, match=r"has 3 bands.*expects 4 bands"):
        _run(scene_pair.before, three, tmp_path / "out", checkpoint=tiny_checkpoint)
    with pytest.raises(BandMismatchError, match=r"has 3 bands but .* has 4"):
        _run(scene_pair.before, three, tmp_path / "out")


def test_scene_without_crs(scene_pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, after = make_pair_arrays(1)
    no_crs = write_scene(tmp_path / "nocrs.tif", after, crs=None)
    with pytest.raises(CRSError, match="nocrs.tif.*no CRS"):
        _run(scene_pair.before, no_crs, tmp_path / "out")


def test_corrupt_file(scene_pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00 this is not really a tiff" * 10)
    with pytest.raises(CorruptFileError, match="bad.tif") as info:
        _run(bad, scene_pair.after, tmp_path / "out")
    assert "\n" not in str(info.value)


def _corrupt_one_tile(src_path: Path, dst_path: Path) -> None:
    """Copy a tiled DEFLATE GeoTIFF and overwrite the compressed bytes of one inner tile with garbage."""
    with rasterio.open(src_path) as src:
        profile = src.profile | {"compress": "deflate", "tiled": True, "blockxsize": 64, "blockysize": 64}
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(src.read())
    with rasterio.open(dst_path) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_2_2", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_2_2", "TIFF", bidx=1))
    with open(dst_path, "r+b") as fh:
        fh.seek(offset)
        fh.write(bytes(range(256)) * (size // 256) + b"\xff" * (size % 256))


def test_failure_mid_run_leaves_no_output_that_looks_complete(  # type: ignore[no-untyped-def]
    scene_pair, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "after_broken.tif"
    _corrupt_one_tile(scene_pair.after, broken)
    out = tmp_path / "out"
    with pytest.raises(CorruptFileError, match="after_broken.tif: pixels unreadable"):
        _run(scene_pair.before, broken, out, block_size=128, checkpoint=tiny_checkpoint)
    # The radiometry check reads every date first, so the broken tile now stops the run before out/ exists.
    assert not out.exists() or list(out.iterdir()) == [], "no final or temporary file may remain after a failed run"

    # A failed re-run into a folder holding good results keeps them intact.
    _run(scene_pair.before, scene_pair.after, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(CorruptFileError, match="after_broken.tif.*unreadable"):
        _run(scene_pair.before, broken, out)  # spectral: fails while estimating its threshold
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_aoi_in_another_crs_limits_the_change(scene_pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Left half of the scene (columns < 150), written in EPSG:4326 while the scene is EPSG:32650.
    left, top = SCENE_TRANSFORM.c, SCENE_TRANSFORM.f
    half = box(left, top - 260 * 10.0, left + 150 * 10.0, top)
    aoi_path = tmp_path / "county.gpkg"
    gpd.GeoDataFrame({"name": ["county"]}, geometry=[half], crs=32650).to_crs(4326).to_file(aoi_path)
    full = _run(scene_pair.before, scene_pair.after, tmp_path / "full", min_area_m2=0.0)
    clipped = _run(scene_pair.before, scene_pair.after, tmp_path / "aoi", aoi=aoi_path, min_area_m2=0.0)
    with rasterio.open(clipped.mask_path) as src:
        mask = src.read(1)
    with rasterio.open(full.mask_path) as src:
        full_mask = src.read(1)
    assert (mask[:, 152:] == 255).all(), "pixels outside the AOI are nodata, never change"
    assert (mask[:, :148] != 255).all()
    assert mask[20:35, 30:52].mean() > 0.9, "the change inside the AOI is found"
    assert full_mask[100:130, 140:160].mean() > 0.9 and (mask[100:130, 152:160] == 255).all()
    assert 0 < clipped.changed_pixels < full.changed_pixels
    patches = gpd.read_file(clipped.patches_path, layer=PATCH_LAYER)
    assert len(patches) > 0
    assert patches.geometry.within(half.buffer(20.0)).all()


def test_nodata_in_either_date_is_never_change(scene_pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _before, after = make_pair_arrays()
    after[:, 95:140, :] = 0  # covers the change rectangle at rows 100-130
    holed = write_scene(tmp_path / "holed.tif", after, nodata=0, descriptions=BANDS)
    res = _run(scene_pair.before, holed, tmp_path / "out", min_area_m2=0.0)
    with rasterio.open(res.mask_path) as src:
        mask = src.read(1)
    assert (mask[95:140] == 255).all()
    assert (mask[:95] != 255).all() and mask[20:35, 30:52].mean() > 0.9


def test_all_nodata_scene_is_refused_before_any_output(scene_pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An all-nodata date cannot give patches: one error naming the file, nothing written (was: empty outputs)."""
    empty = write_scene(tmp_path / "empty.tif", np.zeros((4, 260, 300), np.uint16), nodata=0)
    with pytest.raises(InputRangeError, match=r"empty\.tif: 100\.0% of the pixels are nodata"):
        _run(empty, scene_pair.after, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_no_valid_pixel_inside_the_aoi_gives_empty_outputs_and_a_warning(  # type: ignore[no-untyped-def]
    scene_pair, tmp_path: Path
) -> None:
    """Dates with data whose valid pixels never meet (date 1 left half, date 2 right half)."""
    before, after = make_pair_arrays()
    before[:, :, 150:] = 0
    after[:, :, :150] = 0
    b = write_scene(tmp_path / "b.tif", before, nodata=0)
    a = write_scene(tmp_path / "a.tif", after, nodata=0)
    with pytest.warns(InferenceWarning, match="no valid pixel"):
        res = _run(b, a, tmp_path / "out")
    assert res.n_patches == 0 and res.valid_pixels == 0 and res.warnings
    assert res.empty_reason.startswith("0 patches: no valid pixel")
    assert {p.name for p in (tmp_path / "out").iterdir()} == FINAL_NAMES
    info = pyogrio.read_info(res.patches_path, layer=PATCH_LAYER)
    fields = list(info["fields"])
    assert info["features"] == 0 and fields[: len(PATCH_COLUMNS)] == list(PATCH_COLUMNS)
    assert set(SUPPRESS_COLUMNS) <= set(fields)
    with rasterio.open(res.mask_path) as src:
        assert (src.read(1) == 255).all()


def _crop(src_path: Path, window: Window, dst: Path) -> Path:
    with rasterio.open(src_path) as src:
        data = src.read(window=window)
        profile = src.profile | {
            "width": data.shape[2], "height": data.shape[1], "transform": src.window_transform(window),
            "tiled": False,
        }
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
    return dst


def test_pair_in_different_crs_is_aligned_on_the_before_grid(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """xView2 Joplin: pre tile in EPSG:26915 (0.6 m), post tile in EPSG:4326 (6e-6 deg)."""
    pre = shared_data / "xView2-deploy-Joplin" / "raw" / "A" / "tile_337-10160.tif"
    post = shared_data / "xView2-deploy-Joplin" / "raw" / "B" / "tile_31500-6161.tif"
    if not (pre.is_file() and post.is_file()):
        pytest.skip(f"xView2-Joplin raw tiles not found under {pre.parent.parent}")
    with rasterio.open(pre) as a, rasterio.open(post) as b:
        assert a.crs != b.crs
        left, bottom, right, top = transform_bounds(b.crs, a.crs, *b.bounds)
        inter = (max(left, a.bounds.left), max(bottom, a.bounds.bottom),
                 min(right, a.bounds.right), min(top, a.bounds.top))
        cx, cy = (inter[0] + inter[2]) / 2, (inter[1] + inter[3]) / 2
        row, col = a.index(cx, cy)
        pre_win = Window(col - 128, row - 128, 256, 256)
        crop_bounds = rasterio.windows.bounds(pre_win, a.transform)
        post_bounds = transform_bounds(a.crs, b.crs, *crop_bounds)
        post_win = from_bounds(*post_bounds, transform=b.transform).round_offsets().round_lengths()
        post_win = Window(post_win.col_off - 20, post_win.row_off - 20, post_win.width + 40, post_win.height + 40)
    before = _crop(pre, pre_win, tmp_path / "pre_20110520.tif")
    after = _crop(post, post_win, tmp_path / "post_20110524.tif")
    res = _run(before, after, tmp_path / "out", tile_size=128, min_area_m2=20.0)
    assert res.warped
    with rasterio.open(before) as ref, rasterio.open(res.prob_path) as out:
        assert out.crs == ref.crs and out.crs.to_epsg() == 26915
        assert out.transform.almost_equals(ref.transform) and out.shape == ref.shape
        prob = out.read(1)
    assert (prob != -1.0).mean() > 0.95, "date 2 covers the crop, so almost every pixel is valid"
    patches = gpd.read_file(res.patches_path, layer=PATCH_LAYER)
    assert patches.crs.to_epsg() == 26915
    assert (patches["t1"] == "2011-05-20").all() and (patches["t2"] == "2011-05-24").all()
    # GDAL opens every output cleanly (what gdalinfo / ogrinfo would say): COG layout, overviews readable,
    # and not one GDAL warning or error logged while reading them.
    with caplog.at_level(logging.WARNING):
        for path in (res.prob_path, res.mask_path):
            with rasterio.open(path) as ds:
                assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", path
                ds.read(1)
                for factor in ds.overviews(1):
                    ds.read(1, out_shape=(ds.height // factor, ds.width // factor))
        info = pyogrio.read_info(res.patches_path, layer=PATCH_LAYER)
        assert info["crs"] and info["features"] == len(patches)
    assert not [r for r in caplog.records if r.name.startswith(("rasterio", "pyogrio", "fiona"))], caplog.text


def test_copied_inputs_are_not_modified(scene_pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    before = shutil.copy(scene_pair.before, tmp_path / "b.tif")
    digest = Path(before).read_bytes()
    _run(Path(before), scene_pair.after, tmp_path / "out")
    assert Path(before).read_bytes() == digest

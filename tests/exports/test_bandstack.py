"""Scenes as one file per band (Sentinel-2 / OSCD naming) or a described multi-band raster → one stack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from cspon_rs.errors import BandMismatchError, MissingFileError
from cspon_rs.geo.bandstack import S2_RGBN, as_scene, band_descriptions, find_band_files

_BANDS = {"B02": 10, "B03": 10, "B04": 10, "B08": 10, "B8A": 20, "B11": 20}


def _band_folder(folder: Path) -> dict[str, np.ndarray]:
    """OSCD-style folder: T50QKK_20180323T024539_<band>.tif, 10 m bands 40×30 px, 20 m bands 20×15 px."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5)
    values = {}
    for band, res in _BANDS.items():
        scale = res // 10
        data = rng.integers(100, 3000, size=(30 // scale, 40 // scale), dtype=np.uint16)
        values[band] = data
        with rasterio.open(folder / f"T50QKK_20180323T024539_{band}.tif", "w", driver="GTiff", width=data.shape[1],
                           height=data.shape[0], count=1, dtype="uint16", crs="EPSG:32650",
                           transform=from_origin(800_000, 2_470_000, res, res)) as dst:
            dst.write(data, 1)
    return values


def test_band_folder_becomes_a_described_stack(tmp_path: Path) -> None:
    values = _band_folder(tmp_path / "hongkong")
    stack = as_scene(tmp_path / "hongkong", cache_dir=tmp_path / "stacks")
    assert band_descriptions(stack) == S2_RGBN
    assert stack.name == "T50QKK_20180323T024539_B04_B03_B02_B08.tif"  # the date stays in the name
    with rasterio.open(stack) as src:
        assert (src.count, src.width, src.height) == (4, 40, 30) and src.crs.to_epsg() == 32650
        for i, band in enumerate(S2_RGBN, start=1):
            np.testing.assert_array_equal(src.read(i), values[band])
    assert as_scene(tmp_path / "hongkong", cache_dir=tmp_path / "stacks") == stack  # reused, not rebuilt
    mixed = as_scene(tmp_path / "hongkong", bands=("B04", "B8A", "B11"), cache_dir=tmp_path / "stacks")
    with rasterio.open(mixed) as src:  # 20 m bands resampled onto the 10 m grid
        assert (src.count, src.width, src.height) == (3, 40, 30)
        assert abs(float(src.read(2).mean()) - float(values["B8A"].mean())) < 0.1 * float(values["B8A"].mean())


def test_described_raster_is_reordered_or_used_as_is(tmp_path: Path) -> None:
    values = _band_folder(tmp_path / "scene")
    ordered = as_scene(tmp_path / "scene", cache_dir=tmp_path)
    assert as_scene(ordered) == ordered  # already B04,B03,B02,B08
    shuffled = tmp_path / "shuffled.tif"
    with rasterio.open(ordered) as src:
        profile = src.profile
        with rasterio.open(shuffled, "w", **profile) as dst:
            for i, band in enumerate(("B08", "B02", "B03", "B04"), start=1):
                dst.write(values[band], i)
                dst.set_band_description(i, band)
    fixed = as_scene(shuffled, cache_dir=tmp_path / "out")
    assert fixed != shuffled and band_descriptions(fixed) == S2_RGBN
    with rasterio.open(fixed) as src:
        np.testing.assert_array_equal(src.read(1), values["B04"])
    with pytest.raises(BandMismatchError, match="lack"):
        as_scene(shuffled, bands=("B04", "B11"), cache_dir=tmp_path / "out")


def test_missing_band_names_what_is_there(tmp_path: Path) -> None:
    _band_folder(tmp_path / "scene")
    (tmp_path / "scene" / "T50QKK_20180323T024539_B02.tif").unlink()
    with pytest.raises(MissingFileError, match="no file for band B02.*B03"):
        find_band_files(tmp_path / "scene")
    with pytest.raises(MissingFileError, match="scene not found"):
        as_scene(tmp_path / "nowhere")

"""``cspon-rs detect`` end to end, as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from inferencetest_support import write_scene

from cspon_rs.inference.suppress import SUPPRESS_COLUMNS
from cspon_rs.inference.vectorize import PATCH_COLUMNS, PATCH_LAYER

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "cspon_rs.cli", "detect", *map(str, args)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


def test_detect_on_the_demo_pair(sample_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _cli("--before", sample_dir / "before_20160927.tif", "--after", sample_dir / "after_20180323.tif",
                "--checkpoint", "spectral", "--out", out, "--min-area", "300", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "patches" in proc.stdout and "warped onto" in proc.stdout
    with rasterio.open(out / "change_mask.tif") as mask, rasterio.open(sample_dir / "before_20160927.tif") as ref:
        assert mask.crs == ref.crs and mask.transform.almost_equals(ref.transform)
        changed = mask.read(1) == 1
    with rasterio.open(sample_dir / "label.tif") as lab:
        label = lab.read(1) == 1
    # The spectral baseline is crude, but it must find the labelled urban change far above chance.
    assert changed[label].mean() > 2 * changed[~label].mean()
    gdf = pyogrio.read_dataframe(out / "change_patches.gpkg", layer=PATCH_LAYER)
    columns = list(gdf.columns)  # the warning classifier may add its columns after these
    assert columns[: len(PATCH_COLUMNS) + len(SUPPRESS_COLUMNS)] == [*PATCH_COLUMNS, *SUPPRESS_COLUMNS]
    assert columns[-1] == "geometry"
    assert len(gdf) > 0 and (gdf["area_m2"] >= 300).all()
    assert "suppression " in proc.stdout and gdf["suppressed_by"].notna().any()  # cues on by default
    assert (gdf["t1"] == "2016-09-27").all() and (gdf["t2"] == "2018-03-23").all()


def test_detect_with_the_shipped_checkpoint(sample_dir: Path, tmp_path: Path) -> None:
    from cspon_rs.models.checkpoint import default_checkpoint

    if not default_checkpoint().is_file():
        pytest.skip(f"shipped checkpoint not found: {default_checkpoint()}")
    proc = _cli("--before", sample_dir / "before_20160927.tif", "--after", sample_dir / "after_20180323.tif",
                "--out", tmp_path, "--config", REPO / "configs" / "detect.yaml", "--device", "cpu", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    gdf = pyogrio.read_dataframe(tmp_path / "change_patches.gpkg", layer=PATCH_LAYER)
    assert (gdf["detector"].str.contains("@")).all()


def _main(monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> int:
    """Run ``cspon_rs.cli.main`` in this process (the same code path as the script, minus start-up)."""
    from cspon_rs.cli import main

    monkeypatch.setattr(sys, "argv", ["cspon-rs", "detect", *map(str, args)])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_bad_input_is_one_line_and_exit_2(  # type: ignore[no-untyped-def]
    scene_pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with rasterio.open(scene_pair.after) as src:
        data = src.read()
    no_crs = write_scene(tmp_path / "nocrs.tif", data, crs=None)
    code = _main(monkeypatch, "--before", scene_pair.before, "--after", no_crs, "--checkpoint", "spectral",
                 "--out", tmp_path / "o")
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and "nocrs.tif" in err and "CRS" in err
    assert "Traceback" not in err


def test_all_nodata_scene_is_one_line_and_exit_2(  # type: ignore[no-untyped-def]
    scene_pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An all-nodata date is refused before any output (#20: never 0 patches in silence); was exit 0."""
    empty = write_scene(tmp_path / "empty.tif", np.zeros((4, 260, 300), np.uint16), nodata=0)
    code = _main(monkeypatch, "--before", empty, "--after", scene_pair.after, "--checkpoint", "spectral",
                 "--out", tmp_path / "o", "--no-progress")
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and "empty.tif: 100.0% of the pixels are nodata" in err
    assert not (tmp_path / "o" / "change_patches.gpkg").exists()


def _band_folder(scene: Path, folder: Path, product: str) -> None:
    """Split a stacked B04,B03,B02,B08 scene into one file per band, named as in an OSCD/SAFE granule."""
    folder.mkdir()
    with rasterio.open(scene) as src:
        profile = {**src.profile, "count": 1}
        for index, band in enumerate(("B04", "B03", "B02", "B08"), start=1):
            with rasterio.open(folder / f"{product}_{band}.tif", "w", **profile) as dst:
                dst.write(src.read(index), 1)


def test_detect_reads_folders_of_band_files(sample_dir: Path, tmp_path: Path) -> None:
    before, after = sample_dir / "before_20160927.tif", sample_dir / "after_20180323.tif"
    _band_folder(before, tmp_path / "B", "T49QHE_20160927T030542")
    _band_folder(after, tmp_path / "A", "T49QHE_20180323T025539")
    common = ("--checkpoint", "spectral", "--min-area", "300", "--no-progress", "--no-suppress")
    stacked = _cli("--before", before, "--after", after, "--out", tmp_path / "stacked", *common)
    folders = _cli("--before", tmp_path / "B", "--after", tmp_path / "A", "--out", tmp_path / "folders", *common)
    assert stacked.returncode == 0, stacked.stderr
    assert folders.returncode == 0, folders.stderr
    assert "folder of band files" in folders.stdout
    with rasterio.open(tmp_path / "stacked" / "change_mask.tif") as a, \
            rasterio.open(tmp_path / "folders" / "change_mask.tif") as b:
        assert a.crs == b.crs and a.transform.almost_equals(b.transform)
        np.testing.assert_array_equal(a.read(1), b.read(1))
    # Dates come from the product names, as they do from the sample's file names.
    gdf = pyogrio.read_dataframe(tmp_path / "folders" / "change_patches.gpkg", layer=PATCH_LAYER)
    assert len(gdf) > 0 and (gdf["t1"] == "2016-09-27").all() and (gdf["t2"] == "2018-03-23").all()

"""Training without YAML (issue 25): pairs CSV, dataset init, --set overrides, config schema, windowed reads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from trainingtest_support import cli_app
from typer.testing import CliRunner

from cspon_rs.errors import ConfigError
from cspon_rs.training.config import PairSpec, load_train_config
from cspon_rs.training.datasets import load_geotiff_pair
from cspon_rs.training.pairs_csv import config_from_pairs_csv

REPO = Path(__file__).resolve().parents[2]


def test_set_overrides_any_field_and_names_bad_ones(levir_config: Path) -> None:
    cfg = load_train_config(
        levir_config,
        sets=["optim.epochs=3", "augment.flips=false", "data.label_map={0: 0, 255: 1, 7: ignore}", "optim.lr=2e-4"],
    )
    assert cfg.optim.epochs == 3 and cfg.augment.flips is False and cfg.optim.lr == pytest.approx(2e-4)
    assert cfg.data.label_map == {0: 0, 255: 1, 7: "ignore"}
    with pytest.raises(ConfigError, match="crop_szie"):
        load_train_config(levir_config, sets=["data.crop_szie=64"])
    with pytest.raises(ConfigError, match="crop_size.*multiple of 32"):
        load_train_config(levir_config, sets=["data.crop_size=33"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_train_config(levir_config, sets=["optim.epochs"])


def _csv(folder: Path, text: str) -> Path:
    path = folder / "pairs.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_pairs_csv_reads_raster_and_vector_labels(geotiff_dataset: Path) -> None:
    csv_path = _csv(
        geotiff_dataset,
        "before,after,label,split,pixel_size\n"
        "p0_before.tif,p0_after.tif,p0_changes.gpkg,train,10\n"
        "p1_before.tif,p1_after.tif,p1_label.tif,val,10\n",
    )
    cfg = config_from_pairs_csv(csv_path, ["optim.epochs=2"])
    p0, p1 = cfg.data.pairs
    assert p0.label_vector == Path("p0_changes.gpkg") and p0.label is None
    assert p1.label == Path("p1_label.tif") and p1.label_vector is None
    assert cfg.data.train == ["p0_before"] and cfg.data.val == ["p1_before"]
    assert cfg.pixel_size_m == 10.0 and cfg.optim.epochs == 2 and cfg.data.root == geotiff_dataset.resolve()
    assert cfg.output.dir == geotiff_dataset.resolve() / "runs" / "train"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("before,after\na.tif,b.tif\n", r"missing column\(s\) \['label'\]"),
        ("before,after,label,split\na.tif,b.tif,l.tif,training\n", "row 2: split 'training'"),
        ("before,after,label,pixel_size\na.tif,b.tif,l.tif,10\nc.tif,d.tif,l.tif,2\n", "pixel_size differs"),
        ("before,after,label,colour\na.tif,b.tif,l.tif,red\n", "unknown column"),
        ("before,after,label\na.tif,b.tif,\n", "row 2: column 'label' is empty"),
    ],
)
def test_pairs_csv_errors_name_the_row(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_pairs_csv(_csv(tmp_path, text))


def test_dataset_init_splits_scenes_in_blocks(geotiff_dataset: Path) -> None:
    from cspon_rs.training.dataset_init import init_dataset

    csv_path, config_path, rows = init_dataset(geotiff_dataset, split="blocks", window=32, val=0.25, test=0.25)
    assert {r["label"] for r in rows} == {"p0_changes.gpkg", "p1_changes.gpkg"}
    for pid in ("p0", "p1"):  # 96 px wide: 3 stripes of 32 px columns -> train | val | test, no interleaving
        cols = {r["split"]: int(r["window"].split()[0]) for r in rows if r["id"].startswith(pid)}
        assert cols == {"train": 0, "val": 32, "test": 64}
    cfg = load_train_config(config_path)  # the written config is valid and names the same pairs
    assert [p.id for p in cfg.data.pairs] == [r["id"] for r in rows]
    assert oct(os.stat(csv_path).st_mode & 0o777) == oct(0o666 & ~_umask())
    pairs = config_from_pairs_csv(csv_path).data.pairs
    assert pairs[0].window == (0, 0, 32, 32)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_dataset_init_random_and_pairs_splits_are_seeded(geotiff_dataset: Path, tmp_path: Path) -> None:
    from cspon_rs.training.dataset_init import find_pairs, split_rows

    found = find_pairs(geotiff_dataset)
    a = split_rows(found, geotiff_dataset, split="random", window=32, seed=1)
    b = split_rows(found, geotiff_dataset, split="random", window=32, seed=1)
    assert [r["split"] for r in a] == [r["split"] for r in b] and {"train", "val", "test"} <= {r["split"] for r in a}
    assert len(a) == 18  # 2 scenes x 3 x 3 blocks
    whole = split_rows(found, geotiff_dataset, split="pairs", val=0.5, test=0.0)
    assert sorted(r["split"] for r in whole) == ["train", "val"] and all("window" not in r for r in whole)


def test_window_reads_only_the_window(tmp_path: Path) -> None:
    """A 8192 x 8192 x 3 scene (192 MiB as uint8, 768 MiB as float32): one 128 px block costs kilobytes."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    size = 8192
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32650",
                   transform=from_origin(500_000, 3_500_000, 1.0, 1.0), tiled=True, blockxsize=256,
                   blockysize=256, compress="deflate")
    strip = np.full((3, 1024, size), 90, np.uint8)
    for name in ("a.tif", "b.tif"):
        with rasterio.open(tmp_path / name, "w", **profile) as dst:
            for r in range(0, size, 1024):
                dst.write(strip, window=Window(0, r, size, 1024))
    lab = np.zeros((1, 1024, size), np.uint8)
    with rasterio.open(tmp_path / "l.tif", "w", **{**profile, "count": 1}) as dst:
        for r in range(0, size, 1024):
            dst.write(lab, window=Window(0, r, size, 1024))
    del strip, lab
    spec = PairSpec(
        id="w", before=Path("a.tif"), after=Path("b.tif"), label=Path("l.tif"), window=(4096, 2048, 128, 96)
    )
    tracemalloc.start()
    pair = load_geotiff_pair(spec, tmp_path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert pair.before.shape == (3, 96, 128) and pair.label.shape == (96, 128)
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB: the whole scene was read"
    assert pair.transform is not None and pair.transform[2] == 500_000 + 4096 and pair.transform[5] == 3_500_000 - 2048


def test_config_schema_is_generated_and_committed() -> None:
    from cspon_rs.training.schema_doc import config_reference

    text = config_reference()
    for key in ("label_map", "ignore_value", "window", "band_indexes", "encoder_lr_factor", "init_from"):
        assert f"| `{key}` |" in text
    result = CliRunner().invoke(cli_app(), ["config", "schema"])
    assert result.exit_code == 0 and result.output == text
    committed = (REPO / "docs" / "config_reference.md").read_text(encoding="utf-8")
    assert committed == text, "docs/config_reference.md is stale: cspon-rs config schema --out docs/config_reference.md"
    schema = json.loads(CliRunner().invoke(cli_app(), ["config", "schema", "--format", "json"]).output)
    assert "data" in schema["properties"]


def test_folder_to_detect_in_three_commands(geotiff_dataset: Path, tmp_path: Path) -> None:
    """dataset init -> train --pairs -> detect, no YAML written by hand."""
    folder = tmp_path / "county"
    shutil.copytree(geotiff_dataset, folder)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "cspon_rs.cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    run("dataset", "init", str(folder), "--split", "pairs", "--val", "0.5", "--test", "0")
    run("train", "--pairs", str(folder / "pairs.csv"), "--out", str(tmp_path / "run"),
        "--set", "optim.epochs=1", "--set", "data.crop_size=64", "--set", "data.crops_per_epoch=4",
        "--set", "optim.batch_size=2", "--set", "optim.num_threads=1", "--set", "model.pretrained=false")
    ckpt = tmp_path / "run" / "best.safetensors"
    assert oct(os.stat(ckpt).st_mode & 0o777) == oct(0o666 & ~_umask())
    card = json.loads((tmp_path / "run" / "best.json").read_text())
    prov = card["training_data"]["provenance"]
    assert prov["seed"] == 0 and prov["config"]["optim"]["epochs"] == 1
    assert len(prov["data_files"]) == 6  # 2 x (before, after, polygons)
    assert all(len(h) == 64 for h in prov["data_files"].values())
    run("detect", "--before", str(folder / "p0_before.tif"), "--after", str(folder / "p0_after.tif"),
        "--checkpoint", str(ckpt), "--out", str(tmp_path / "det"))
    assert (tmp_path / "det" / "change_prob.tif").is_file()

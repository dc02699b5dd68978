"""Fixtures of the training tests: tiny seeded LEVIR-style and GeoTIFF-pair datasets written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from trainingtest_support import synthetic_pair, write_levir, write_tiny_config

torch.set_num_threads(1)


@pytest.fixture()
def levir_dir(tmp_path: Path) -> Path:
    """A tiny LEVIR-style dataset: 6 RGB 64x64 pairs (4 train, 1 val, 1 test)."""
    return write_levir(tmp_path / "levir")


@pytest.fixture()
def levir_config(tmp_path: Path, levir_dir: Path) -> Path:
    """Config training on the tiny LEVIR folder: 64 px crops, 4 crops an epoch, 1 epoch."""
    data = f"""data:
  kind: levir
  root: {levir_dir}
  train: list/train.txt
  val: list/val.txt
  test: list/test.txt
  crop_size: 64
  crops_per_epoch: 4"""
    return write_tiny_config(tmp_path / "train_levir.yaml", data, tmp_path / "run")


@pytest.fixture()
def geotiff_dataset(tmp_path: Path) -> Path:
    """Two 4-band uint16 GeoTIFF pairs in EPSG:32650 (date 2 on a slightly shifted 10 m grid in EPSG:4326
    for the second pair) with change polygons in a GeoPackage (EPSG:4490)."""
    import geopandas as gpd
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.warp import transform_bounds
    from shapely.geometry import box

    rng = np.random.default_rng(11)
    root = tmp_path / "tifs"
    root.mkdir()
    x0, y0, res, size = 500_000.0, 3_500_000.0, 10.0, 96
    for k in range(2):
        a, b, lab = synthetic_pair(rng, size=size, bands=4, dtype="uint16")
        a, b = a * 8, b * 8
        transform = from_origin(x0 + k * 5000, y0, res, res)
        profile = dict(
            driver="GTiff",
            width=size,
            height=size,
            count=4,
            dtype="uint16",
            crs="EPSG:32650",
            transform=transform,
        )
        with rasterio.open(root / f"p{k}_before.tif", "w", **profile) as dst:
            dst.write(a)
        if k == 1:  # date 2 in geographic coordinates, slightly different grid: must be warped
            left, bottom, right, top = transform_bounds(
                "EPSG:32650", "EPSG:4326", *rasterio.transform.array_bounds(size, size, transform)
            )
            t2 = from_origin(left, top, (right - left) / size, (top - bottom) / size)
            profile2 = {**profile, "crs": "EPSG:4326", "transform": t2}
            from rasterio.warp import Resampling, reproject

            b_warped = np.zeros_like(b)
            reproject(
                b,
                b_warped,
                src_transform=transform,
                src_crs="EPSG:32650",
                dst_transform=t2,
                dst_crs="EPSG:4326",
                resampling=Resampling.nearest,
            )
            with rasterio.open(root / f"p{k}_after.tif", "w", **profile2) as dst:
                dst.write(b_warped)
        else:
            with rasterio.open(root / f"p{k}_after.tif", "w", **profile) as dst:
                dst.write(b)
        # label polygons: boxes around labelled components, stored in CGCS2000 geographic
        from scipy import ndimage

        comps, _ = ndimage.label(lab)
        geoms = []
        for sl in ndimage.find_objects(comps):
            r0, r1, c0, c1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
            gx0, gy1 = transform @ (c0, r0)
            gx1, gy0 = transform @ (c1, r1)
            geoms.append(box(gx0, gy0, gx1, gy1))
        gdf = gpd.GeoDataFrame({"kind": ["new"] * len(geoms)}, geometry=geoms, crs="EPSG:32650").to_crs(
            "EPSG:4490"
        )
        gdf.to_file(root / f"p{k}_changes.gpkg", layer="changes", driver="GPKG")
    return root

"""CRS choice, areas in m² and mu, raster alignment and clear errors, on real files."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from cspon_rs.errors import CorruptFileError, CRSError, GridMismatchError, MissingFileError
from cspon_rs.geo.crs import SQM_PER_MU, area_crs_for, area_m2, gk_zone_epsg, to_mu, utm_epsg
from cspon_rs.geo.raster import aligned_pair, grid_info, open_raster
from cspon_rs.geo.vector import read_vector, repair_geometries


def write_tif(path: Path, *, crs: str | None, transform: rasterio.Affine, shape: tuple[int, int, int],
              seed: int = 0) -> Path:
    data = np.random.default_rng(seed).integers(0, 3000, size=shape, dtype=np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=shape[2], height=shape[1], count=shape[0],
                       dtype="uint16", crs=crs, transform=transform) as dst:
        dst.write(data)
    return path


def test_mu_is_a_fifteenth_of_a_hectare() -> None:
    assert SQM_PER_MU == pytest.approx(666.667, abs=1e-3)
    assert to_mu(10000.0) == pytest.approx(15.0)


@pytest.mark.parametrize(("lon", "epsg"), [(114.2, 4526), (75.0, 4513), (135.0, 4533), (116.39, 4527)])
def test_gauss_kruger_zone_of_longitude(lon: float, epsg: int) -> None:
    assert gk_zone_epsg(lon) == epsg


def test_gauss_kruger_zone_outside_china_is_an_error() -> None:
    with pytest.raises(CRSError, match="outside"):
        gk_zone_epsg(2.35)


def test_utm_zone() -> None:
    assert utm_epsg(2.35, 48.85) == 32631
    assert utm_epsg(-47.9, -15.8) == 32723


def test_area_of_a_cgcs2000_square_is_measured_in_its_gk_zone() -> None:
    # A 100 m x 100 m square built in GK zone 38 (EPSG:4526, northing/easting axis order), stored in EPSG:4490.
    square = gpd.GeoDataFrame(geometry=[box(38_500_000, 2_470_000, 38_500_100, 2_470_100)], crs=4526).to_crs(4490)
    assert area_crs_for(square).to_epsg() == 4526
    assert area_m2(square).iloc[0] == pytest.approx(10_000.0, rel=1e-6)


def test_area_outside_china_uses_utm() -> None:
    square = gpd.GeoDataFrame(geometry=[box(448_000, 5_411_000, 448_050, 5_411_040)], crs=32631).to_crs(4326)
    assert area_crs_for(square).to_epsg() == 32631
    assert area_m2(square).iloc[0] == pytest.approx(2_000.0, rel=1e-5)


def test_aligned_pair_warps_after_onto_before_grid(sample_dir: Path) -> None:
    before, after = sample_dir / "before_20160927.tif", sample_dir / "after_20180323.tif"
    assert grid_info(before).width != grid_info(after).width  # the sample's date 2 is on its own grid
    with aligned_pair(before, after) as (src_a, src_b):
        assert (src_b.width, src_b.height) == (src_a.width, src_a.height)
        assert src_b.transform == src_a.transform
        window = rasterio.windows.Window(100, 100, 64, 64)
        a, b = src_a.read(window=window), src_b.read(window=window)
        assert a.shape == b.shape == (4, 64, 64)
        # Same place on the ground: the two dates are strongly correlated band by band.
        assert np.corrcoef(a[3].ravel(), b[3].ravel())[0, 1] > 0.5


def test_non_overlapping_scenes_are_rejected(tmp_path: Path) -> None:
    a = write_tif(tmp_path / "a.tif", crs="EPSG:32650", transform=from_origin(500_000, 2_500_000, 10, 10),
                  shape=(3, 32, 32))
    b = write_tif(tmp_path / "b.tif", crs="EPSG:32650", transform=from_origin(600_000, 2_500_000, 10, 10),
                  shape=(3, 32, 32))
    with pytest.raises(GridMismatchError, match="do not overlap"), aligned_pair(a, b):
        pass


def test_band_count_mismatch_is_rejected(tmp_path: Path) -> None:
    a = write_tif(tmp_path / "a.tif", crs="EPSG:32650", transform=from_origin(500_000, 2_500_000, 10, 10),
                  shape=(3, 32, 32))
    b = write_tif(tmp_path / "b.tif", crs="EPSG:32650", transform=from_origin(500_000, 2_500_000, 10, 10),
                  shape=(4, 32, 32))
    with pytest.raises(GridMismatchError, match="band counts differ"), aligned_pair(a, b):
        pass


def test_raster_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="nope.tif"), open_raster(tmp_path / "nope.tif"):
        pass
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00 definitely not a tiff")
    with pytest.raises(CorruptFileError, match="corrupt.tif"), open_raster(corrupt):
        pass
    no_crs = write_tif(tmp_path / "nocrs.tif", crs=None, transform=from_origin(0, 0, 1, 1), shape=(1, 8, 8))
    with pytest.raises(CRSError, match="nocrs.tif"), open_raster(no_crs):
        pass


def test_vector_reading_reprojects_and_reports_bad_layers(tmp_path: Path) -> None:
    path = tmp_path / "layers.gpkg"
    gdf = gpd.GeoDataFrame({"name": ["a"]}, geometry=[box(38_500_000, 2_470_000, 38_500_100, 2_470_100)], crs=4526)
    gdf.to_file(path, layer="permits", engine="pyogrio")
    back = read_vector(path, layer="permits", to_crs=4490)
    assert back.crs.to_epsg() == 4490
    # Axis order: x stays easting/longitude (~114.0 in zone 38), y latitude (~22.3).
    minx, miny, _, _ = back.total_bounds
    assert 113.0 < minx < 115.0 and 20.0 < miny < 24.0
    with pytest.raises(CorruptFileError, match="no layer 'parcels'"):
        read_vector(path, layer="parcels")


def test_self_intersecting_polygon_is_repaired_and_reported() -> None:
    from shapely.geometry import Polygon

    bowtie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10), (0, 0)])
    gdf = gpd.GeoDataFrame({"id": [1, 2]}, geometry=[bowtie, box(0, 0, 1, 1)], crs=32650)
    fixed, messages = repair_geometries(gdf, what="permits.gpkg")
    assert len(fixed) == 2 and fixed.is_valid.all()
    assert fixed.geometry.iloc[0].area == pytest.approx(50.0)
    assert len(messages) == 1 and "Self-intersection" in messages[0] and "feature 0" in messages[0]

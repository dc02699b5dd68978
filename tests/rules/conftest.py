"""Fixtures for the warning-rule tests: a metre grid in GK zone 38 and layer builders."""

from __future__ import annotations

import geopandas as gpd
import pytest
from shapely.geometry.base import BaseGeometry

from cspon_rs.rules.config import RulesConfig
from cspon_rs.rules.inputs import load_permits
from cspon_rs.rules.synthetic import LocalFrame, patches_frame, permits_frame

T1 = "2025-03-01"
T2 = "2025-09-01"


@pytest.fixture
def grid() -> LocalFrame:
    """Metre offsets around 114.0°E 22.3°N in CGCS2000 GK zone 38 (EPSG:4526)."""
    return LocalFrame((114.0, 22.3), 4526)


@pytest.fixture
def rules() -> RulesConfig:
    return RulesConfig()


class Scenario:
    """Builds patches/permits in a target CRS and loads the permits through the real loader (GPKG)."""

    def __init__(self, grid: LocalFrame, crs: str, tmp_path: object) -> None:
        self.grid = grid
        self.crs = crs
        self.tmp_path = tmp_path
        self.n = 0

    def patches(self, geoms: list[BaseGeometry], **kwargs: object) -> gpd.GeoDataFrame:
        return patches_frame(geoms, self.grid.crs, to_crs=self.crs, t1=T1, t2=T2, **kwargs)  # type: ignore[arg-type]

    def permits(self, rows: list[dict[str, object]], geoms: list[BaseGeometry]) -> gpd.GeoDataFrame:
        self.n += 1
        path = self.tmp_path / f"permits{self.n}.gpkg"  # type: ignore[operator]
        frame = permits_frame(rows, geoms, self.grid.crs, to_crs=self.crs)
        frame.to_file(path, layer="permits", driver="GPKG", engine="pyogrio")
        return load_permits(path)


@pytest.fixture(params=["EPSG:4526", "EPSG:4490"], ids=["gk38", "cgcs2000"])
def scenario(request: pytest.FixtureRequest, grid: LocalFrame, tmp_path: object) -> Scenario:
    """Same hand-made geometry delivered in a Gauss-Krüger zone and in geographic CGCS2000."""
    return Scenario(grid, request.param, tmp_path)

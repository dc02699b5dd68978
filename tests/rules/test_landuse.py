"""Land class before the change: a synthetic DLTB (耕地, 林地, 建设用地) over the demo area, cut per warning."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
from openpyxl import load_workbook

from cspon_rs.exports.lists import LIST_COLUMNS
from cspon_rs.rules.landuse import load_code_table
from cspon_rs.rules.pipeline import run_warning_pipeline
from cspon_rs.rules.synthetic import LocalFrame, patches_frame

GRID = LocalFrame((114.0, 22.3), 4526)  # the demo area (Hong Kong), metres in GK zone 38


@pytest.fixture
def dltb(tmp_path: Path) -> Path:
    """三调-style DLTB in EPSG:4490: 旱地 x<150, 乔木林地 150-450, 工业用地 450-800, an unknown code 0199."""
    g = GRID
    geoms = [g.rect(-500, -500, 650, 1500), g.rect(150, -500, 300, 1500), g.rect(450, -500, 250, 1500),
             g.rect(700, -500, 100, 1500)]
    frame = gpd.GeoDataFrame({"DLBM": ["0103", "0301", "0601", "0199"], "DLMC": ["旱地", "乔木林地", "工业用地", "?"]},
                             geometry=geoms, crs=g.crs).to_crs(4490)
    path = tmp_path / "dltb.gpkg"
    frame.to_file(path, layer="DLTB", driver="GPKG", engine="pyogrio")
    return path


@pytest.fixture
def changes(tmp_path: Path) -> Path:
    g = GRID
    path = tmp_path / "change_patches.gpkg"
    patches_frame(
        [g.rect(100, 0, 100, 100),                                     # 旱地 / 林地, half each
         g.polygon([(120, 200), (520, 230), (480, 330), (140, 310)]),  # 耕地, 林地, 建设用地, skewed edges
         g.rect(600, 0, 150, 80),                                      # 工业用地 + unknown code
         g.rect(300, 500, 60, 60)],                                    # 林地 only
        g.crs, t1="2025-03-01", t2="2025-09-01",
    ).to_file(path, layer="change_patches", driver="GPKG")
    return path


def test_per_warning_land_class_areas_add_up(dltb: Path, changes: Path, tmp_path: Path) -> None:
    control = tmp_path / "control_lines.gpkg"
    gpd.GeoDataFrame({"XZQDM": ["510000"], "VERSION": ["2023"], "VALID_FROM": ["2023-01-01"]},
                     geometry=[GRID.rect(0, -50, 150, 200)], crs=GRID.crs).to_file(control, layer="YJJBNT",
                                                                                   driver="GPKG")
    result = run_warning_pipeline(changes, None, control, period="2025Q3", county_code="510000",
                                  out_dir=tmp_path / "out", landuse_path=dltb, progress=False)
    w = result.warnings
    assert w is not None and len(w) == 4
    for _, row in w.iterrows():
        total = sum(row["landuse_areas"].values())
        assert total == pytest.approx(row["area_m2"], rel=1e-3), row["patch_id"]
    first = w.set_index("patch_id").loc["p0001"]
    assert first["landuse_areas"] == pytest.approx({"0103": 5000.0, "0301": 5000.0}, abs=1.0)
    assert first["cropland_m2"] == pytest.approx(5000.0, abs=1.0)
    assert first["farmland_overlap_m2"] == pytest.approx(5000.0, abs=1.0)  # 占用永久基本农田 (YJJBNT line)
    skewed = w.set_index("patch_id").loc["p0002"]
    assert set(skewed["landuse_areas"]) == {"0103", "0301", "0601"} and skewed["landuse_main"] == "0301"
    industrial = w.set_index("patch_id").loc["p0003"]
    assert industrial["landuse_areas"] == pytest.approx({"0601": 8000.0, "0199": 4000.0}, abs=1.0)
    assert industrial["cropland_m2"] == 0.0
    unknown = [m for m in result.messages if "0199" in m]
    assert len(unknown) == 1 and "GB/T 21010" in unknown[0]

    with sqlite3.connect(tmp_path / "out" / "warnings.sqlite") as db:  # stored (revision 0007)
        stored = dict(db.execute("SELECT patch_id, cropland_m2 FROM warnings").fetchall())
        main = dict(db.execute("SELECT patch_id, landuse_main FROM warnings").fetchall())
    assert stored["p0001"] == pytest.approx(5000.0, abs=1.0) and main["p0003"] == "0601"

    sheet = load_workbook(result.xlsx)["预警清单 warnings"]
    columns = [c for c, *_ in LIST_COLUMNS]
    rows = {sheet.cell(row=r, column=2).value: r for r in range(3, 7)}
    r1 = rows[first["warning_id"]]
    assert sheet.cell(row=r1, column=columns.index("cropland_m2") + 1).value == pytest.approx(5000.0, abs=1.0)
    assert "耕地" in sheet.cell(row=r1, column=columns.index("landuse_zh") + 1).value
    summary = [[c.value for c in row] for row in load_workbook(result.xlsx)["汇总 summary"].iter_rows()]
    assert any(row[0] and "占用耕地" in str(row[0]) for row in summary)

    assert result.shp is not None
    layer = pyogrio.read_dataframe(result.shp).set_index("TBBH")
    assert layer.loc[first["warning_id"], "ZYGDMJ"] == pytest.approx(5000.0, abs=1.0)
    assert layer.loc[first["warning_id"], "DLBM"] in ("0103", "0301")
    assert layer.loc[industrial["warning_id"], "DLMC"] == "0601 工业用地"


def test_code_table_normalises_survey_codes() -> None:
    table = load_code_table()
    assert table.normalise("0201K") == "0201"  # 三调 可调整地类
    assert table.normalise(101) == "0101"       # a numeric DBF field
    assert table.normalise(" 05h1 ") == "05H1"
    assert table.known("1207") and not table.known("0199")
    assert table.first_level("0103") == "耕地" and table.is_cropland("0102") and not table.is_cropland("0301")


def test_landuse_layer_errors_name_the_field(tmp_path: Path, changes: Path) -> None:
    from cspon_rs.errors import SchemaError

    bad = tmp_path / "bad.gpkg"
    gpd.GeoDataFrame({"CODE": ["0101"]}, geometry=[GRID.rect(0, 0, 10, 10)], crs=GRID.crs).to_file(
        bad, layer="DLTB", driver="GPKG")
    with pytest.raises(SchemaError, match="DLBM"):
        run_warning_pipeline(changes, None, None, period="2025Q3", county_code="510000",
                             out_dir=tmp_path / "out", landuse_path=bad, progress=False)


def test_rerun_with_landuse_fills_stored_warnings(dltb: Path, changes: Path, tmp_path: Path) -> None:
    kwargs = dict(period="2025Q3", county_code="510000", out_dir=tmp_path / "out", progress=False)
    first = run_warning_pipeline(changes, None, None, **kwargs)  # type: ignore[arg-type]
    with sqlite3.connect(tmp_path / "out" / "warnings.sqlite") as db:
        assert {r[0] for r in db.execute("SELECT cropland_m2 FROM warnings")} == {None}
    again = run_warning_pipeline(changes, None, None, landuse_path=dltb, **kwargs)  # type: ignore[arg-type]
    assert again.created == [] and sorted(again.unchanged) == sorted(first.created)
    with sqlite3.connect(tmp_path / "out" / "warnings.sqlite") as db:
        stored = dict(db.execute("SELECT patch_id, cropland_m2 FROM warnings").fetchall())
        events = [r[0] for r in db.execute("SELECT event FROM warning_history WHERE event = 'landuse'")]
    assert stored["p0001"] == pytest.approx(5000.0, abs=1.0) and len(events) == 4
    layer = pyogrio.read_dataframe(again.shp).set_index("TBBH")  # type: ignore[arg-type]
    assert layer["ZYGDMJ"].notna().all()

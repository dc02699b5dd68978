"""Loading bureau layers: field mapping, Chinese values, bad inputs named precisely."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import geopandas as gpd
import pytest

from cspon_rs.errors import SchemaError
from cspon_rs.rules.config import ControlLineFields, PermitFields, load_fields_config, load_rules_config
from cspon_rs.rules.inputs import load_control_lines, load_patches, load_permits, load_townships, parse_date
from cspon_rs.rules.synthetic import LocalFrame, patches_frame, permits_frame


@pytest.fixture
def grid() -> LocalFrame:
    return LocalFrame((114.0, 22.3), 4526)


def _write(gdf: gpd.GeoDataFrame, path: Path, layer: str | None = "permits") -> Path:
    driver = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".shp": "ESRI Shapefile"}[path.suffix]
    gdf.to_file(path, layer=layer if driver == "GPKG" else None, driver=driver, engine="pyogrio")
    return path


def test_bundled_configs_load() -> None:
    rules = load_rules_config()
    fields = load_fields_config()
    assert rules.coverage_tolerance_share == 0.05 and rules.not_built_min_age_days == 730
    assert fields.permits.fields["permit_no"] == "PZWH" and fields.permits.status_values["已批"] == "approved"
    assert fields.control_lines.layers == {"YJJBNT": "YJJBNT", "STBHHX": "STBHHX", "CZKFBJ": "CZKFBJ"}


def test_load_permits_maps_codes_and_chinese_values(grid: LocalFrame, tmp_path: Path) -> None:
    rows = [
        {"permit_no": "A", "permit_type": "农转用", "approved_on": "2024-01-05", "status": "已批"},
        {"permit_no": "B", "permit_type": "建设工程规划许可", "approved_on": None, "status": "待批"},
        {"permit_no": "C", "permit_type": "临时用地", "approved_on": "2023/2/3", "status": "撤销"},
        {"permit_no": "D", "permit_type": "设施农用地", "approved_on": "2020年5月6日", "expires_on": "20230101",
         "status": "过期"},
        {"permit_no": "E", "permit_type": "供地", "approved_on": "2024-01-05", "status": "approved"},
    ]
    geoms = [grid.rect(i * 200, 0, 100, 100) for i in range(5)]
    path = _write(permits_frame(rows, geoms, grid.crs, to_crs="EPSG:4490"), tmp_path / "p.gpkg")
    permits = load_permits(path)
    assert list(permits["permit_type"]) == [
        "land_use_approval", "planning_permit", "temporary_use", "facility_agricultural", "land_supply"]
    assert list(permits["status"]) == ["approved", "pending", "revoked", "expired", "approved"]
    assert permits["approved_on"].iloc[0] == dt.date(2024, 1, 5) and permits["approved_on"].iloc[1] is None
    assert permits["approved_on"].iloc[2] == dt.date(2023, 2, 3)
    assert permits["expires_on"].iloc[3] == dt.date(2023, 1, 1)
    assert permits["approved_area_m2"].iloc[0] == pytest.approx(10000, abs=1)
    assert permits.crs.to_epsg() == 4490 and list(permits["source_row"]) == [1, 2, 3, 4, 5]


def test_load_permits_other_formats(grid: LocalFrame, tmp_path: Path) -> None:
    frame = permits_frame([{"permit_no": "A", "approved_on": "2024-01-05"}], [grid.rect(0, 0, 10, 10)], grid.crs)
    for name in ("p.geojson", "p.shp"):
        permits = load_permits(_write(frame, tmp_path / name))
        assert list(permits["permit_no"]) == ["A"]
    assert (tmp_path / "p.shp").exists()  # the user's file is left where it was


def test_missing_required_field_is_named(grid: LocalFrame, tmp_path: Path) -> None:
    frame = permits_frame([{"permit_no": "A"}], [grid.rect(0, 0, 10, 10)], grid.crs).drop(columns=["ZT"])
    path = _write(frame, tmp_path / "nostatus.gpkg")
    with pytest.raises(SchemaError, match=r"status \(ZT\)") as info:
        load_permits(path)
    assert "nostatus.gpkg" in str(info.value)


def test_unparseable_date_names_row_and_value(grid: LocalFrame, tmp_path: Path) -> None:
    rows = [{"permit_no": "A", "approved_on": "2024-01-05"}, {"permit_no": "B", "approved_on": "next spring"}]
    path = _write(permits_frame(rows, [grid.rect(0, 0, 10, 10), grid.rect(20, 0, 10, 10)], grid.crs),
                  tmp_path / "dates.gpkg")
    with pytest.raises(SchemaError, match=r"row 2: cannot parse date 'next spring'"):
        load_permits(path)


def test_unknown_status_is_an_error_and_mapping_extends(grid: LocalFrame, tmp_path: Path) -> None:
    rows = [{"permit_no": "A", "approved_on": "2024-01-05", "status": "挂起"}]
    path = _write(permits_frame(rows, [grid.rect(0, 0, 10, 10)], grid.crs), tmp_path / "s.gpkg")
    with pytest.raises(SchemaError, match="unknown status '挂起'"):
        load_permits(path)
    mapping = PermitFields(status_values={"挂起": "pending"})
    assert list(load_permits(path, mapping=mapping)["status"]) == ["pending"]


def test_self_intersecting_polygon_repaired_and_reported(grid: LocalFrame, tmp_path: Path) -> None:
    bowtie = grid.polygon([(0, 0), (100, 100), (100, 0), (0, 100), (0, 0)])
    assert not bowtie.is_valid
    frame = permits_frame([{"permit_no": "BOW"}, {"permit_no": "OK"}], [bowtie, grid.rect(500, 0, 10, 10)], grid.crs)
    permits = load_permits(_write(frame, tmp_path / "bow.gpkg"))
    assert len(permits) == 2 and permits.geometry.is_valid.all()
    assert permits.geometry.iloc[0].area == pytest.approx(5000, rel=1e-6)
    messages = permits.attrs["messages"]
    assert len(messages) == 1 and "feature 0" in messages[0] and "repaired" in messages[0]


def test_empty_layer_is_fine(grid: LocalFrame, tmp_path: Path) -> None:
    frame = permits_frame([], [], grid.crs)
    frame = frame.astype({c: "object" for c in frame.columns if c != "geometry"})
    path = tmp_path / "empty.gpkg"
    frame.to_file(path, layer="permits", driver="GPKG", engine="pyogrio")
    permits = load_permits(path)
    assert len(permits) == 0 and "permit_no" in permits.columns


def test_control_lines_layers_and_type_field(grid: LocalFrame, tmp_path: Path) -> None:
    path = tmp_path / "cl.gpkg"
    for code in ("YJJBNT", "STBHHX", "CZKFBJ"):
        gpd.GeoDataFrame({"XZQDM": ["510000"], "VERSION": ["2023"], "VALID_FROM": ["2023-01-01"]},
                         geometry=[grid.rect(0, 0, 10, 10)], crs=grid.crs).to_file(path, layer=code, driver="GPKG")
    lines = load_control_lines(path)
    assert sorted(lines["kind"]) == ["CZKFBJ", "STBHHX", "YJJBNT"]
    assert lines["valid_from"].iloc[0] == dt.date(2023, 1, 1) and lines["county_code"].iloc[0] == "510000"

    single = tmp_path / "one.gpkg"
    gpd.GeoDataFrame({"KZXLX": ["永久基本农田", "生态保护红线"], "XZQDM": ["1", "1"]},
                     geometry=[grid.rect(0, 0, 10, 10), grid.rect(20, 0, 10, 10)], crs=grid.crs
                     ).to_file(single, layer="kzx", driver="GPKG")
    lines = load_control_lines(single, mapping=ControlLineFields(type_layer="kzx"))
    assert list(lines["kind"]) == ["YJJBNT", "STBHHX"]
    bad = tmp_path / "bad.gpkg"
    gpd.GeoDataFrame({"KZXLX": ["湿地"]}, geometry=[grid.rect(0, 0, 1, 1)], crs=grid.crs).to_file(
        bad, layer="kzx", driver="GPKG")
    with pytest.raises(SchemaError, match="unknown control-line type '湿地'"):
        load_control_lines(bad)


def test_townships_and_patches(grid: LocalFrame, tmp_path: Path) -> None:
    towns = tmp_path / "t.gpkg"
    gpd.GeoDataFrame({"XZQDM": ["510000001"], "XZQMC": ["甲镇"]}, geometry=[grid.rect(0, 0, 10, 10)],
                     crs=grid.crs).to_file(towns, driver="GPKG")
    t = load_townships(towns)
    assert list(t["township_code"]) == ["510000001"] and list(t["township_name"]) == ["甲镇"]

    path = tmp_path / "change_patches.gpkg"
    patches_frame([grid.rect(0, 0, 10, 10)], grid.crs).to_file(path, layer="change_patches", driver="GPKG")
    patches = load_patches(path)
    assert patches["t1"].iloc[0] == dt.date(2025, 3, 1)
    broken = tmp_path / "broken.gpkg"
    patches_frame([grid.rect(0, 0, 10, 10)], grid.crs).drop(columns=["prob_mean"]).to_file(
        broken, layer="change_patches", driver="GPKG")
    with pytest.raises(SchemaError, match="prob_mean"):
        load_patches(broken)


def test_parse_date_forms() -> None:
    assert parse_date("2024-03-05T10:00:00") == dt.date(2024, 3, 5)
    assert parse_date(dt.datetime(2024, 3, 5, 1, 2)) == dt.date(2024, 3, 5)
    assert parse_date(float("nan")) is None and parse_date("  ") is None
    with pytest.raises(ValueError):
        parse_date("2024-02-30")




def test_gbk_shapefile_without_cpg_is_detected(grid: LocalFrame, tmp_path: Path) -> None:
    rows = [
        {"permit_no": "粤府批〔2018〕12号", "permit_type": "农转用", "approved_on": "2018-01-05", "status": "已批"},
        {"permit_no": "深规土〔2017〕3号", "permit_type": "临时用地", "approved_on": "2017-03-01", "status": "撤销"},
    ]
    frame = permits_frame(rows, [grid.rect(0, 0, 50, 50), grid.rect(100, 0, 50, 50)], grid.crs)
    for encoding in ("GBK", "UTF-8"):
        folder = tmp_path / encoding
        folder.mkdir()
        frame.to_file(folder / "p.shp", driver="ESRI Shapefile", engine="pyogrio", encoding=encoding)
        (folder / "p.cpg").unlink(missing_ok=True)  # as handed over by a bureau: no code page file
        permits = load_permits(folder / "p.shp")
        assert list(permits["permit_no"]) == ["粤府批〔2018〕12号", "深规土〔2017〕3号"], encoding
        assert list(permits["status"]) == ["approved", "revoked"]


def test_shapefile_in_neither_encoding_is_a_clear_error(grid: LocalFrame, tmp_path: Path) -> None:
    frame = permits_frame([{"permit_no": "A", "approved_on": "2024-01-05", "status": "approved"}],
                          [grid.rect(0, 0, 10, 10)], grid.crs)
    path = tmp_path / "p.shp"
    frame.assign(PZWH="AAAA").to_file(path, driver="ESRI Shapefile", engine="pyogrio")
    (tmp_path / "p.cpg").unlink(missing_ok=True)
    dbf = path.with_suffix(".dbf")
    data = dbf.read_bytes()
    at = data.index(b"AAAA")
    dbf.write_bytes(data[:at] + b"\xff\xff\xff\xff" + data[at + 4:])  # invalid in UTF-8 and in GBK
    with pytest.raises(SchemaError, match=r"neither UTF-8 nor GBK.*\.cpg"):
        load_permits(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_permit_with_nan_or_inf_coordinates_is_named(grid: LocalFrame, tmp_path: Path, bad: float) -> None:
    from shapely.geometry import Polygon

    ok = grid.rect(0, 0, 10, 10)
    x0, y0 = ok.exterior.coords[0]
    broken = Polygon([(x0, y0), (x0 + 10, y0), (bad, y0 + 10), (x0, y0)])
    rows = [{"permit_no": "A", "approved_on": "2024-01-05"}, {"permit_no": "B", "approved_on": None}]
    frame = permits_frame(rows, [ok, broken], grid.crs)
    path = _write(frame, tmp_path / "p.gpkg")
    with pytest.raises(SchemaError, match=r"p\.gpkg: feature\(s\) 2 have NaN or infinite coordinates"):
        load_permits(path)

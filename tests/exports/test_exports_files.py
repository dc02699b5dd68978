"""Warning lists (XLSX/CSV/GPKG), patrol files (KML/GPX/GeoJSON) and chips, re-opened with real readers."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from openpyxl import load_workbook
from PIL import Image

from cspon_rs.errors import SchemaError
from cspon_rs.exports.chips import write_chips
from cspon_rs.exports.lists import LIST_COLUMNS, write_warning_csv, write_warning_gpkg, write_warning_xlsx
from cspon_rs.exports.patrol import order_route, route_length, write_patrol


def _no_temp_files(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_xlsx_has_two_header_rows_and_summary(warnings: gpd.GeoDataFrame, tmp_path: Path) -> None:
    path = write_warning_xlsx(warnings, tmp_path / "list.xlsx", title="510000 2025Q3")
    book = load_workbook(path)
    assert book.sheetnames == ["预警清单 warnings", "汇总 summary"]
    sheet = book["预警清单 warnings"]
    assert [c.value for c in sheet[1]][:3] == ["排名", "预警编号", "期次"]
    assert [c.value for c in sheet[2]][:3] == ["rank", "warning id", "period"]
    assert sheet.freeze_panes == "C3"
    n_warnings = int(warnings["is_warning"].sum())
    assert sheet.max_row == 2 + n_warnings + 1 == 8  # two header rows, the warnings, the 合计 row
    assert sheet.cell(row=sheet.max_row, column=1).value == "合计"
    ids = [sheet.cell(row=r, column=2).value for r in range(3, sheet.max_row)]
    ranked = warnings[warnings["is_warning"]].sort_values("rank")["warning_id"].tolist()
    assert ids == ranked
    first = {LIST_COLUMNS[j][0]: sheet.cell(row=3, column=j + 1).value for j in range(len(LIST_COLUMNS))}
    assert first["flags"] == "YJJBNT" and first["category_zh"] == "未批先建"
    summary = [[c.value for c in row] for row in book["汇总 summary"].iter_rows()]
    flat = [v for row in summary for v in row if v is not None]
    assert "未批先建" in flat and "合法(已批)" not in flat and "按乡镇 by township" in flat  # only warnings counted
    _no_temp_files(tmp_path)


def test_csv_has_bom_and_rows(warnings: gpd.GeoDataFrame, tmp_path: Path) -> None:
    path = write_warning_csv(warnings, tmp_path / "list.csv")
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    table = pd.read_csv(path, encoding="utf-8-sig")
    assert len(table) == int(warnings["is_warning"].sum())
    assert table.columns[1] == "预警编号 (warning id)"
    assert table["面积(m²) (area (m²))"].iloc[0] > 0


def test_gpkg_layer(warnings: gpd.GeoDataFrame, tmp_path: Path) -> None:
    path = write_warning_gpkg(warnings, tmp_path / "list.gpkg")
    assert [row[0] for row in pyogrio.list_layers(path)] == ["warnings"]
    back = gpd.read_file(path, layer="warnings")
    assert len(back) == len(warnings) and back.crs == warnings.crs
    assert json.loads(back["reasons"].iloc[0])[0]["code"]
    write_warning_gpkg(warnings.iloc[:2], path)  # rewriting replaces the layer
    assert len(gpd.read_file(path, layer="warnings")) == 2
    _no_temp_files(tmp_path)


@pytest.mark.parametrize("fmt", ["kml", "gpx", "geojson"])
def test_patrol_files_reopen_in_wgs84(warnings: gpd.GeoDataFrame, tmp_path: Path, fmt: str) -> None:
    selected = warnings[warnings["is_warning"]]
    start = gpd.GeoSeries([selected.geometry.iloc[-1].centroid], crs=selected.crs).to_crs(4326).iloc[0]
    result = write_patrol(selected, tmp_path / f"route.{fmt}", start_lonlat=(start.x, start.y))
    layer = "waypoints" if fmt == "gpx" else None
    back = pyogrio.read_dataframe(result.path, layer=layer)
    assert len(back) == len(selected) and back.crs.to_epsg() == 4326
    assert result.order[0] == selected["warning_id"].iloc[-1]  # nearest to the start comes first
    assert sorted(result.order) == sorted(selected["warning_id"])
    lon, lat = back.geometry.x.iloc[0], back.geometry.y.iloc[0]
    assert 113.9 < lon < 114.1 and 22.2 < lat < 22.4
    names = {"kml": "Name", "gpx": "name", "geojson": "warning_id"}
    assert str(back[names[fmt]].iloc[0]).endswith(result.order[0])
    text = result.path.read_text(encoding="utf-8")
    assert "未批先建" in text and "built_before_approval" in text and "m²" in text
    _no_temp_files(tmp_path)


def test_patrol_bad_format(warnings: gpd.GeoDataFrame, tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="unknown patrol format"):
        write_patrol(warnings, tmp_path / "x.txt", start_lonlat=(114.0, 22.3))


def test_route_is_short() -> None:
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 1000, size=(30, 2))
    start = np.array([0.0, 0.0])
    order = order_route(points, start)
    assert sorted(order) == list(range(30))
    identity = route_length(points, start, list(range(30)))
    assert route_length(points, start, order) < 0.5 * identity
    line = np.array([[5.0, 0], [1.0, 0], [3.0, 0], [2.0, 0], [4.0, 0]])
    assert order_route(line, (0.0, 0.0)) == [1, 3, 2, 4, 0]


def test_chips_from_warped_pair(warnings: gpd.GeoDataFrame, raster_pair: tuple[Path, Path], tmp_path: Path) -> None:
    before, after = raster_pair
    selected = warnings[warnings["is_warning"]]
    out = tmp_path / "chips"
    written = write_chips(selected, before, after, out, progress=False)
    assert sorted(written) == sorted(selected["warning_id"])
    image = np.asarray(Image.open(written[selected["warning_id"].iloc[0]]).convert("RGB"))
    assert image.shape[0] > 200 and image.shape[1] > 2 * 200
    red = (image[..., 0] > 200) & (image[..., 1] < 80) & (image[..., 2] < 80)
    assert red.sum() > 50  # the patch outline is drawn
    half = image.shape[1] // 2
    assert image[30:, half + 10:].mean() > image[30:, : half - 10].mean()  # the after scene is brighter
    _no_temp_files(out)

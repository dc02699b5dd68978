"""Bureau deliverables in 卫片执法 form, re-opened with real readers: the 图斑 layer (Shapefile in UTF-8 and
GBK, GeoPackage 1.2/1.3), the print-ready XLSX, the PDF report, file modes, and field results that reach
the next export."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import subprocess
import warnings as pywarnings
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
from openpyxl import load_workbook
from PIL import Image
from pyproj import CRS, Transformer
from shapely.geometry import box

from cspon_rs.exports.bundle import export_period
from cspon_rs.exports.chips import CHANGE_RGB, write_chips
from cspon_rs.exports.layers import write_tuban, zip_shapefile
from cspon_rs.exports.lists import LIST_COLUMNS, NUMBER_FORMATS, write_warning_csv, write_warning_xlsx
from cspon_rs.exports.schema import load_export_schema
from cspon_rs.geo.areas import ellipsoidal_area_m2, gk_crs_for, planar_area_m2
from cspon_rs.geo.crs import SQM_PER_MU


@pytest.fixture
def umask022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _column(name: str) -> int:
    return [c for c, *_ in LIST_COLUMNS].index(name) + 1


# --- areas -------------------------------------------------------------------------------------------------


def test_planar_gk_area_exceeds_ellipsoidal_by_the_scale_factor() -> None:
    """A 1 km square on the central meridian of GK zone 38 and one 150 km east of it: the planar GK area
    exceeds the ellipsoidal one by k² ≈ 1 + x²/R² (x: distance from the central meridian)."""
    gk = CRS.from_epsg(4526)  # CGCS2000 3° GK zone 38, CM 114°E, false easting 38 500 000 m
    to_gk = Transformer.from_crs(4490, gk, always_xy=True)
    x_cm, y = to_gk.transform(114.0, 30.0)
    squares = gpd.GeoSeries([box(x_cm, y, x_cm + 1000, y + 1000),
                             box(x_cm + 150_000, y, x_cm + 151_000, y + 1000)], crs=gk)
    planar = planar_area_m2(squares, gk)
    ellipsoidal = ellipsoidal_area_m2(squares)
    assert planar == pytest.approx([1e6, 1e6])
    ratio = planar / ellipsoidal
    radius = 6_371_000.0
    assert abs(ratio[0] - 1) < 1e-5  # on the central meridian GK is (nearly) true to scale
    expected = (150_500.0 / radius) ** 2
    assert ratio[1] - 1 == pytest.approx(expected, rel=0.05)
    assert gk_crs_for(squares.to_crs(4490)).to_epsg() == 4526


# --- the 图斑 layer -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["UTF-8", "GBK"])
def test_shapefile_keeps_chinese_in_both_encodings(warnings: gpd.GeoDataFrame, tmp_path: Path, encoding: str,
                                                   umask022: None) -> None:
    path = write_tuban(warnings, tmp_path / "shp" / "tuban.shp", encoding=encoding, out_crs="EPSG:4490")
    assert path.with_suffix(".cpg").read_text() == encoding
    info = pyogrio.read_info(path)
    schema = load_export_schema()
    assert list(info["fields"]) == [f.code for f in schema.fields]
    assert all(len(name.encode()) <= 10 for name in info["fields"])
    assert CRS.from_user_input(info["crs"]).to_epsg() == 4490
    back = pyogrio.read_dataframe(path)
    n = int(warnings["is_warning"].sum())
    assert len(back) == n
    first = back.sort_values("TBBH").iloc[0]
    assert first["YJLX"] == "未批先建" and first["BHLX"] == "新增建设用地"  # the category has its own field
    assert first["HCJG"] == "未核查" and first["ZT"] == "待核查"
    assert str(first["QSX"])[:10] == "2025-03-01"  # a DBF Date field
    assert info["dtypes"][list(info["fields"]).index("QSX")].startswith("datetime64")
    raw = path.with_suffix(".dbf").read_bytes()
    assert "未批先建".encode("gbk" if encoding == "GBK" else "utf-8") in raw
    if encoding == "GBK":
        assert "未批先建".encode() not in raw
    for part in tmp_path.joinpath("shp").iterdir():
        assert part.stat().st_mode & 0o777 == 0o644, part
    assert not [p for p in tmp_path.joinpath("shp").iterdir() if p.name.startswith(".")]
    archive = zip_shapefile(path, tmp_path / "tuban.zip")
    import zipfile

    assert {".shp", ".shx", ".dbf", ".prj", ".cpg"} <= {Path(n).suffix for n in zipfile.ZipFile(archive).namelist()}


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_gpkg_version_names_and_area_metadata(warnings: gpd.GeoDataFrame, tmp_path: Path, version: str) -> None:
    path = write_tuban(warnings, tmp_path / "tuban.gpkg", gpkg_version=version)  # type: ignore[arg-type]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == {"1.2": 10200, "1.3": 10300}[version]
    with pywarnings.catch_warnings():
        pywarnings.simplefilter("error")  # GDAL would warn about a partially supported version
        info = pyogrio.read_info(path, layer="TB")
    assert "AREA_METHOD" in info["layer_metadata"] and "Geod" in info["layer_metadata"]["AREA_METHOD"]
    assert CRS.from_user_input(info["crs"]).to_epsg() == 4526  # auto-gk: zone 38 for 114°E
    back = gpd.read_file(path, layer="TB")
    expected = {"图斑编号", "行政区代码", "乡镇", "面积(亩)", "椭球面积(平方米)", "核查结果", "实际用途"}
    assert expected <= set(back.columns)
    row = back.sort_values("图斑编号").iloc[0]
    assert row["面积(亩)"] == pytest.approx(row["面积(平方米)"] / SQM_PER_MU, rel=1e-4)
    assert row["中心点X"] > 38_000_000  # GK easting with the zone prefix
    assert 113.9 < row["中心点经度"] < 114.1


# --- the quarterly list -------------------------------------------------------------------------------------


def test_xlsx_formats_print_setup_totals_and_links(warnings: gpd.GeoDataFrame, raster_pair: tuple[Path, Path],
                                                   tmp_path: Path, umask022: None) -> None:
    selected = warnings[warnings["is_warning"]]
    chips = write_chips(selected, *raster_pair, tmp_path / "chips", progress=False)
    path = write_warning_xlsx(warnings, tmp_path / "list.xlsx", title="510000 2025Q3", chips=chips)
    assert path.stat().st_mode & 0o777 == 0o644
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in chips.values())
    sheet = load_workbook(path)["预警清单 warnings"]
    n = len(selected)
    for name in ("area_m2", "area_mu", "t1", "due_date"):
        assert sheet.cell(row=3, column=_column(name)).number_format == NUMBER_FORMATS[name]
    assert NUMBER_FORMATS["area_mu"] == "0.00" and NUMBER_FORMATS["area_m2"] == "#,##0"
    assert isinstance(sheet.cell(row=3, column=_column("t1")).value, dt.datetime)
    assert sheet.cell(row=3, column=_column("status")).value == "待核查"
    assert sheet.cell(row=3, column=_column("suspected")).value == "疑似"
    assert sheet.cell(row=3, column=_column("result_zh")).value == "未核查"
    assert sheet.cell(row=3, column=_column("reason_zh")).alignment.wrap_text
    total = sheet.cell(row=n + 3, column=_column("area_m2")).value
    assert sheet.cell(row=n + 3, column=1).value == "合计"
    assert total == pytest.approx(sum(sheet.cell(row=r, column=_column("area_m2")).value for r in range(3, n + 3)))
    link = sheet.cell(row=3, column=_column("chip")).hyperlink
    assert link is not None and (tmp_path / link.target).is_file()
    assert sheet.page_setup.orientation == "landscape"
    assert sheet.page_setup.fitToWidth == 1 and sheet.page_setup.fitToHeight == 0
    assert sheet.sheet_properties.pageSetUpPr.fitToPage
    assert sheet.print_title_rows == "$1:$2"
    assert "&P" in sheet.oddFooter.center.text
    summary = load_workbook(path)["汇总 summary"]
    rows = [[c.value for c in row] for row in summary.iter_rows()]
    start = next(i for i, r in enumerate(rows) if r[0] == "按乡镇 by township")
    totals = [r for r in rows[start:] if r[0] == "合计"]
    assert totals[0][1] == n  # the township summary counts warnings only (the legal patch is left out)
    csv = write_warning_csv(warnings, tmp_path / "list.csv", chips=chips)
    assert csv.stat().st_mode & 0o777 == 0o644
    import pandas as pd

    table = pd.read_csv(csv, encoding="utf-8-sig")
    assert len(table) == n and list(table["状态 (status)"].unique()) == ["待核查"]
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice:  # renders in headless LibreOffice without error
        profile = f"-env:UserInstallation={(tmp_path / 'lo-profile').as_uri()}"  # no clash with a running office
        done = subprocess.run([soffice, profile, "--headless", "--convert-to", "pdf", "--outdir",
                               str(tmp_path / "lo"), str(path)], capture_output=True, text=True, timeout=180)
        assert done.returncode == 0 and (tmp_path / "lo" / "list.pdf").stat().st_size > 1000, done.stderr


# --- a verification reaches the next export -----------------------------------------------------------------


def test_verification_changes_the_next_export(warnings: gpd.GeoDataFrame, tmp_path: Path) -> None:
    from cspon_rs.store.crud import assign_warning, get_warning, record_verification, save_warnings
    from cspon_rs.store.db import open_store, sqlite_url

    sessions = open_store(sqlite_url(tmp_path / "warnings.sqlite"))
    try:
        with sessions() as session:
            saved = save_warnings(session, warnings.drop(columns=["warning_id"]), period="2025Q3",
                                  county_code="510000")
        first = sorted(v for v in saved.ids.values() if v)[0]
        with sessions() as session:
            out1 = export_period(session, tmp_path / "e1", period="2025Q3", county_code="510000",
                                 formats=["xlsx", "shp"])
        with sessions() as session:
            assign_warning(session, first, team="一组", due_date=dt.date(2025, 10, 15), by="bureau")
        with sessions() as session:
            version = get_warning(session, first).version
            record_verification(session, first, result="illegal", expected_version=version, actual_use="厂房",
                                observed_at=dt.datetime(2025, 10, 1, 2, 30, tzinfo=dt.UTC), by="张三")
        with sessions() as session:
            out2 = export_period(session, tmp_path / "e2", period="2025Q3", county_code="510000",
                                 formats=["xlsx", "shp"])
    finally:
        sessions.kw["bind"].dispose()

    def xlsx_row(path: Path) -> dict[str, object]:
        sheet = load_workbook(path)["预警清单 warnings"]
        for r in range(3, sheet.max_row + 1):
            if sheet.cell(row=r, column=2).value == first:
                return {c: sheet.cell(row=r, column=j).value for j, (c, *_) in enumerate(LIST_COLUMNS, start=1)}
        raise AssertionError(f"{first} not in {path}")

    before, after = xlsx_row(out1.files["xlsx"]), xlsx_row(out2.files["xlsx"])
    assert before["result_zh"] == "未核查" and before["suspected"] == "疑似" and before["actual_use"] is None
    assert after["result_zh"] == "违法用地" and after["status"] == "已核查" and after["suspected"] == "已核查"
    assert after["actual_use"] == "厂房" and after["assigned_team"] == "一组"
    assert after["verified_at"] == dt.datetime(2025, 10, 1, 10, 30)  # 02:30 UTC shown in Asia/Shanghai
    shp = pyogrio.read_dataframe(out2.files["shp"])
    row = shp[shp["TBBH"] == first].iloc[0]
    assert row["HCJG"] == "违法用地" and row["SJYT"] == "厂房"
    assert row["HCSJ"] == "2025-10-01 10:30"  # in the configured zone, one style, no offset or "CST"
    assert row["HCZ"] == "一组" and str(row["HCQX"])[:10] == "2025-10-15"


# --- pictures -------------------------------------------------------------------------------------------------


def test_chip_of_approved_not_built_draws_no_change_outline(warnings: gpd.GeoDataFrame,
                                                            raster_pair: tuple[Path, Path], tmp_path: Path) -> None:
    row = warnings[warnings["is_warning"]].iloc[[0]].copy()
    row["category"] = "approved_not_built"
    tiny = warnings[warnings["is_warning"]].iloc[[1]].copy()
    tiny["warning_id"] = "tiny"
    tiny = tiny.set_geometry([tiny.geometry.iloc[0].centroid.buffer(8, cap_style="square")], crs=tiny.crs)
    written = write_chips(gpd.GeoDataFrame(pd_concat([row, tiny]), crs=warnings.crs), *raster_pair,
                          tmp_path, progress=False, min_size_px=4, min_extent_m=300)
    image = np.asarray(Image.open(written[str(row["warning_id"].iloc[0])]).convert("RGB")).astype(int)
    red = (np.abs(image - np.array(CHANGE_RGB)).sum(axis=2) < 30).sum()
    yellow = ((image[..., 0] > 230) & (image[..., 1] > 200) & (image[..., 2] < 40)).sum()
    assert red < 20 and yellow > 100  # the permit is drawn as a permit, not as change
    small = np.asarray(Image.open(written["tiny"]).convert("RGB")).astype(int)
    red_small = np.abs(small - np.array(CHANGE_RGB)).sum(axis=2) < 30
    _, cols = np.nonzero(red_small[62:-24, :256])  # the change outline in the before panel
    width = cols.max() - cols.min()
    assert 5 < width < 60  # a 16 m patch in a ≥300 m window: small but visible, not a speck filling the panel


def pd_concat(frames: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    import pandas as pd

    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True))


# --- the report -----------------------------------------------------------------------------------------------


def test_report_has_one_sheet_per_selected_warning(warnings: gpd.GeoDataFrame, raster_pair: tuple[Path, Path],
                                                   tmp_path: Path, umask022: None) -> None:
    from pypdf import PdfReader

    from cspon_rs.exports.fonts import find_cjk_font
    from cspon_rs.exports.report import SHEET_TITLE, write_report

    if find_cjk_font(warn=False) is None:
        pytest.skip("no CJK font installed (apt-get install fonts-noto-cjk)")
    selected = warnings[warnings["is_warning"]]
    chosen = list(selected["warning_id"].iloc[[0, 2]])
    photo = tmp_path / "field.jpg"
    Image.new("RGB", (320, 240), (30, 120, 60)).save(photo, format="JPEG")
    path = write_report(warnings, tmp_path / "report.pdf", county_code="510000", period="2025Q3",
                        before=raster_pair[0], after=raster_pair[1], sheet_ids=chosen, top_n=2,
                        photos={chosen[0]: [photo]})
    assert path.stat().st_mode & 0o777 == 0o644
    texts = ["".join(page.extract_text().replace("\x00", "").split()) for page in PdfReader(path).pages]
    sheets = [t for t in texts if SHEET_TITLE in t]
    assert len(sheets) == 2
    assert [next(i for i in chosen if i in t) for t in sheets] == chosen
    assert "按类型统计" in texts[0] and "核查进度" in "".join(texts[:2])
    reader = PdfReader(path)
    sheet_pages = [p for p, t in zip(reader.pages, texts, strict=True) if SHEET_TITLE in t]
    images = [len(p.images) for p in sheet_pages]
    assert images[0] == images[1] + 1  # the first selected warning has a field photo, the second none
    fonts = [f.get_object() for p in reader.pages for f in (p["/Resources"].get("/Font") or {}).values()]
    descendants = [d.get_object() for f in fonts for d in f.get("/DescendantFonts", [])]
    assert any("/FontFile2" in d["/FontDescriptor"] or "/FontFile3" in d["/FontDescriptor"]
               for d in descendants)  # the CJK font is embedded
    full = write_report(warnings, tmp_path / "all.pdf", county_code="510000", period="2025Q3", top_n=0)
    all_texts = ["".join(p.extract_text().replace("\x00", "").split()) for p in PdfReader(full).pages]
    assert sum(SHEET_TITLE in t for t in all_texts) == len(selected)

"""The 图斑 layer files carry the schema's widths and decimals (no String(80)/Real(24.15), no -0.000), the DBF
language driver of the encoding (0x4D for GBK at byte 29) and TEXT(n) widths in the GeoPackage."""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest

from cspon_rs.exports.layers import write_tuban
from cspon_rs.exports.schema import load_export_schema


def _dbf_fields(path: Path) -> tuple[int, list[tuple[str, str, int, int]]]:
    """LDID byte and (name, type, width, decimals) of each field, read from the .dbf header."""
    data = path.read_bytes()
    header_length = struct.unpack("<H", data[8:10])[0]
    fields = []
    for offset in range(32, header_length - 1, 32):
        raw = data[offset:offset + 32]
        fields.append((raw[:11].split(b"\x00")[0].decode("ascii"), chr(raw[11]), raw[16], raw[17]))
    return data[29], fields


@pytest.mark.parametrize(("encoding", "ldid"), [("GBK", 0x4D), ("UTF-8", 0x00)])
def test_shapefile_fields_have_the_declared_widths_and_ldid(warnings: gpd.GeoDataFrame, tmp_path: Path,
                                                             encoding: str, ldid: int) -> None:
    frame = warnings.copy()
    frame["redline_overlap_m2"] = -0.0001  # rounds to zero: written 0.00, never -0.00
    path = write_tuban(frame, tmp_path / "tuban.shp", encoding=encoding, out_crs="EPSG:4490")
    byte29, fields = _dbf_fields(path.with_suffix(".dbf"))
    assert byte29 == ldid
    assert path.with_suffix(".cpg").read_text() == encoding
    schema = load_export_schema()
    expected = {f.code: f for f in schema.fields}
    assert [name for name, *_ in fields] == [f.code for f in schema.fields]
    for name, kind, width, decimals in fields:
        spec = expected[name]
        if spec.type == "date":
            assert (kind, width) == ("D", 8), name
        elif spec.type == "str":
            assert (kind, width) == ("C", spec.width or 254), name
        else:
            assert kind == "N" and width == spec.width and decimals == spec.decimals, name
    assert not any(w == 80 for _, k, w, _ in fields if k == "C") or any(
        f.width == 80 for f in schema.fields)  # nothing left at GDAL's default String(80)
    raw = path.with_suffix(".dbf").read_bytes()
    assert b"-0.00" not in raw and b"000000000000" not in raw
    back = pyogrio.read_dataframe(path)  # GDAL reads the rewritten table
    assert len(back) == int(warnings["is_warning"].sum())
    first = back.sort_values("TBBH").iloc[0]
    assert first["YJLX"] == "未批先建" and first["BHLX"] == "新增建设用地" and first["ZYSTHXMJ"] == 0.0
    source = warnings[warnings["is_warning"]].sort_values("warning_id").iloc[0]
    assert first["TBMJM"] == pytest.approx(round(float(source["area_mu"]), 4), abs=1e-3)
    assert str(first["QSX"])[:10] == "2025-03-01"
    text = raw.decode("gbk" if encoding == "GBK" else "utf-8", errors="replace")
    tbmjm = next(f for f in schema.fields if f.code == "TBMJM")
    assert f"{first['TBMJM']:.{tbmjm.decimals}f}" in text  # written with exactly the declared decimals


def test_geopackage_declares_text_widths(warnings: gpd.GeoDataFrame, tmp_path: Path) -> None:
    path = write_tuban(warnings, tmp_path / "tuban.gpkg", out_crs="EPSG:4490")
    schema = load_export_schema()
    with sqlite3.connect(path) as db:
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (schema.layer_name,)).fetchone()[0]
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for spec in schema.fields:
        if spec.type == "str" and spec.width:
            assert f'"{spec.alias}" TEXT({spec.width})' in sql, spec.alias
    back = pyogrio.read_dataframe(path)
    assert len(back) == int(warnings["is_warning"].sum()) and "图斑编号" in back.columns


def test_xlsx_title_totals_order_heights_and_footer(warnings: gpd.GeoDataFrame, tmp_path: Path) -> None:
    import datetime as dt

    from openpyxl import load_workbook

    from cspon_rs.exports.lists import LIST_COLUMNS, write_warning_xlsx
    from cspon_rs.rules.config import CATEGORIES

    frame = warnings.copy()
    frame["area_m2"] = frame["area_m2"] + 0.333  # sums whose 亩 rounding differs row by row and in total
    path = write_warning_xlsx(frame, tmp_path / "list.xlsx")
    book = load_workbook(path)
    sheet, summary = book["预警清单 warnings"], book["汇总 summary"]
    title = summary.cell(row=1, column=1).value
    assert title == "未配置（510000） 2025Q3 疑似违法用地预警清单"  # county not in the schema: named as such
    assert sheet.oddHeader.center.text == title
    assert sheet.oddFooter.right.text == f"cspon-rs {dt.date.today().isoformat()}" or \
        sheet.oddFooter.right.text.startswith("cspon-rs 20")  # an ISO date, not Excel's locale &D
    assert "&D" not in sheet.oddFooter.right.text
    columns = [c for c, *_ in LIST_COLUMNS]
    total_row = sheet.max_row
    list_mu = sheet.cell(row=total_row, column=columns.index("area_mu") + 1).value
    list_m2 = sheet.cell(row=total_row, column=columns.index("area_m2") + 1).value
    rows = [[c.value for c in r] for r in summary.iter_rows()]
    totals = [r for r in rows if r[0] == "合计"]
    assert len(totals) == 2  # by category and by township
    for r in totals:
        m2, mu = [v for v in r if isinstance(v, int | float)][-2:]
        assert round(mu, 2) == round(list_mu, 2) and round(m2) == round(list_m2)  # one 合计
    start = next(i for i, r in enumerate(rows) if r[0] == "按类型 by category") + 3
    listed = [r[1] for r in rows[start:] if r[0] != "合计"][: next(i for i, r in enumerate(rows[start:])
                                                                if r[0] == "合计")]
    assert listed == sorted(listed, key=CATEGORIES.index)  # in the order of the rules
    heights = [sheet.row_dimensions[r].height for r in range(3, total_row)]
    assert len(set(heights)) > 1 and min(heights) < 60  # fitted to the text, not one fixed height


def test_report_sheet_has_signoff_lines_and_one_date_style(warnings: gpd.GeoDataFrame,
                                                           raster_pair: tuple[Path, Path], tmp_path: Path) -> None:
    from pypdf import PdfReader

    from cspon_rs.exports.fonts import find_cjk_font
    from cspon_rs.exports.report import SHEET_TITLE, write_report

    if find_cjk_font(warn=False) is None:
        pytest.skip("no CJK font installed (apt-get install fonts-noto-cjk)")
    chosen = [str(warnings[warnings["is_warning"]]["warning_id"].iloc[0])]
    path = write_report(warnings, tmp_path / "report.pdf", county_code="510000", period="2025Q3",
                        after=raster_pair[1], sheet_ids=chosen, top_n=0)
    texts = ["".join(page.extract_text().replace("\x00", "").split()) for page in PdfReader(path).pages]
    sheet = next(t for t in texts if SHEET_TITLE in t)
    assert "核查人员签字" in sheet and "负责人签字" in sheet and "盖章" in sheet
    assert "CST" not in "".join(texts) and "年" in texts[0] and "(Asia/Shanghai)" in texts[0]
    assert "未配置（510000）" in texts[0]

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
    assert first["BHLX"] == "未批先建" and first["ZYSTHXMJ"] == 0.0
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

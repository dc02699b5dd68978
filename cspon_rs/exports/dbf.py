"""Declared field widths in the 图斑 layer files: the Shapefile's dBASE table and the GeoPackage's TEXT(n).

GDAL (through pyogrio) creates every Shapefile text field as ``String(80)`` and every number as
``Real(24.15)``, and writes the language-driver byte (LDID, byte 29 of the ``.dbf`` header) as 0. Provincial
卫片执法 templates give each field its width and decimals (``configs/export_fields.yaml``), and ArcGIS reads the
code page of a GBK table from its LDID (0x4D, "Chinese GBK (PRC)", code page 936). :func:`write_dbf` writes the
attribute table itself (dBASE III: ``C`` text of ``width`` bytes in the file's encoding, ``N`` numbers with
``width``/``decimals``, ``D`` dates ``YYYYMMDD``), replacing the one GDAL wrote; the ``.shp``/``.shx``/``.prj``
stay GDAL's. :func:`declare_text_widths` sets ``TEXT(n)`` in a GeoPackage table's declaration (allowed by the
GeoPackage 1.2/1.3 data types), which GDAL reads back as the field width.

Numbers are written rounded to their decimals, never as ``-0.000``; a value too wide for its field is written
as ``*`` (the dBASE overflow mark, read as null) rather than cut.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sqlite3
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = ["LDID", "DbfField", "declare_text_widths", "write_dbf"]

#: Language driver id (byte 29) by encoding; UTF-8 has none (the ``.cpg`` names it).
LDID: dict[str, int] = {"GBK": 0x4D, "CP936": 0x4D, "GB18030": 0x4D, "UTF-8": 0x00}
_CODEC = {"UTF-8": "utf-8", "GBK": "gbk", "CP936": "gbk", "GB18030": "gb18030"}


class DbfField:
    """One dBASE field: name (ASCII, ≤ 10 bytes), kind, width and decimals."""

    def __init__(self, name: str, kind: Literal["str", "int", "float", "date"], width: int = 0, decimals: int = 0
                 ) -> None:
        self.name = name
        self.kind = kind
        if kind == "date":
            self.width, self.decimals = 8, 0
        elif kind == "int":
            self.width, self.decimals = width or 10, 0
        elif kind == "float":
            self.width, self.decimals = width or 19, decimals
        else:
            self.width, self.decimals = min(width or 254, 254), 0

    @property
    def type_code(self) -> bytes:
        return {"str": b"C", "int": b"N", "float": b"N", "date": b"D"}[self.kind]


def number_text(value: Any, width: int, decimals: int) -> bytes:
    """A right-aligned dBASE number (blank for null, ``*`` when it does not fit), never ``-0.0``."""
    if value is None or (isinstance(value, float | np.floating) and not math.isfinite(float(value))):
        return b" " * width
    number = round(float(value), decimals)
    if number == 0:
        number = 0.0  # no "-0.000"
    text = f"{number:.{decimals}f}" if decimals else str(int(number))
    if len(text) > width:
        return b"*" * width
    return text.rjust(width).encode("ascii")


def _cell(field: DbfField, value: Any, codec: str) -> bytes:
    if field.kind in ("int", "float"):
        missing = value is None or (isinstance(value, float | np.floating) and math.isnan(float(value)))
        return number_text(None if missing else value, field.width, field.decimals)
    if field.kind == "date":
        if value is None or (isinstance(value, np.datetime64) and np.isnat(value)):
            return b" " * 8
        day = value.astype("datetime64[D]").item() if isinstance(value, np.datetime64) else value
        return day.strftime("%Y%m%d").encode("ascii") if isinstance(day, dt.date) else b" " * 8
    if value is None:
        return b" " * field.width
    data = str(value).encode(codec, errors="replace")
    if len(data) > field.width:  # cut on a character boundary
        data = data[:field.width].decode(codec, errors="ignore").encode(codec)
    return data.ljust(field.width, b" ")


def write_dbf(path: str | Path, fields: Sequence[DbfField], columns: Sequence[Sequence[Any]], encoding: str,
              *, today: dt.date | None = None) -> Path:
    """Write a dBASE III table (``.dbf``) with the fields' declared widths and the encoding's LDID.

    Args:
        path: Target ``.dbf`` (replaced).
        fields: Field definitions, in order.
        columns: One value sequence per field, all of the same length (rows in the order of the geometries).
        encoding: ``UTF-8``, ``GBK`` (``CP936``) or ``GB18030``.
        today: Date written in the header (default today).
    """
    key = encoding.upper()
    codec = _CODEC.get(key, key.lower())
    n = len(columns[0]) if columns else 0
    record_length = 1 + sum(f.width for f in fields)
    header_length = 32 + 32 * len(fields) + 1
    day = today or dt.date.today()
    header = struct.pack("<BBBBIHH17xB2x", 0x03, day.year - 1900, day.month, day.day, n, header_length,
                         record_length, LDID.get(key, 0x00))
    parts = [header]
    for field in fields:
        name = field.name.encode("ascii")[:10].ljust(11, b"\x00")
        parts.append(struct.pack("<11sc4xBB14x", name, field.type_code, field.width, field.decimals))
    parts.append(b"\x0d")
    for i in range(n):
        parts.append(b" " + b"".join(_cell(f, col[i], codec) for f, col in zip(fields, columns, strict=True)))
    parts.append(b"\x1a")
    path = Path(path)
    path.write_bytes(b"".join(parts))
    return path


def declare_text_widths(gpkg: str | Path, table: str, widths: dict[str, int]) -> None:
    """Declare ``TEXT(n)`` for the given columns of a GeoPackage table (read by GDAL as the field width)."""
    if not widths:
        return
    with sqlite3.connect(str(gpkg)) as db:
        row = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        if row is None:
            return
        sql = str(row[0])
        for name, width in widths.items():
            if width > 0:
                sql = re.sub(rf'("{re.escape(name)}"\s+)TEXT\b(?!\()', rf"\1TEXT({int(width)})", sql)
        version = int(db.execute("PRAGMA schema_version").fetchone()[0])
        db.execute("PRAGMA writable_schema = ON")
        db.execute("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?", (sql, table))
        db.execute(f"PRAGMA schema_version = {version + 1}")
        db.execute("PRAGMA writable_schema = OFF")
    with sqlite3.connect(str(gpkg)) as db:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise RuntimeError(f"{gpkg}: integrity check after declaring widths: {check}")

"""Quarterly warning lists for bureaus: XLSX (Chinese + English headers), CSV (UTF-8 with BOM), GeoPackage.

All writers take a warnings GeoDataFrame -- the output of :func:`cspon_rs.rules.engine.classify` with a
``warning_id`` column added, or :func:`cspon_rs.store.crud.warnings_frame` of stored warnings -- and write
to a temporary file beside the target that is renamed into place at the end (never a half-written list).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from cspon_rs.geo.crs import SQM_PER_MU
from cspon_rs.rules.config import CATEGORY_ZH

__all__ = [
    "LIST_COLUMNS",
    "list_frame",
    "summary_tables",
    "write_warning_csv",
    "write_warning_gpkg",
    "write_warning_xlsx",
]

#: (column, Chinese header, English header, Excel width) of the warning list, in order.
LIST_COLUMNS: tuple[tuple[str, str, str, int], ...] = (
    ("rank", "排名", "rank", 6),
    ("warning_id", "预警编号", "warning id", 22),
    ("period", "期次", "period", 9),
    ("county_code", "县级代码", "county code", 10),
    ("township_code", "乡镇代码", "township code", 13),
    ("township_name", "乡镇名称", "township", 12),
    ("category_zh", "预警类型", "category (zh)", 11),
    ("category", "类型代码", "category", 22),
    ("flags", "管控线标记", "control-line flags", 16),
    ("area_m2", "面积(m²)", "area (m²)", 11),
    ("area_mu", "面积(亩)", "area (mu)", 10),
    ("excess_m2", "超批面积(m²)", "excess (m²)", 11),
    ("farmland_overlap_m2", "占永久基本农田(m²)", "YJJBNT overlap (m²)", 12),
    ("redline_overlap_m2", "占生态保护红线(m²)", "STBHHX overlap (m²)", 12),
    ("outside_urban_m2", "城镇开发边界外(m²)", "outside CZKFBJ (m²)", 12),
    ("permit_nos", "相关批准文号", "permits", 28),
    ("reason_zh", "预警原因", "reasons (zh)", 60),
    ("reason_en", "预警原因(英文)", "reasons (en)", 60),
    ("confidence", "模型置信度", "confidence", 10),
    ("priority", "优先级得分", "priority score", 10),
    ("status", "状态", "status", 9),
    ("suspected", "疑似(待核查)", "suspected", 9),
    ("centroid_lon", "经度", "longitude", 12),
    ("centroid_lat", "纬度", "latitude", 12),
    ("t1", "前时相", "t1", 11),
    ("t2", "后时相", "t2", 11),
)


def _join_reasons(reasons: Any, key: str, sep: str) -> str:
    if not isinstance(reasons, list | tuple):
        return ""
    return sep.join(str(r.get(key, "")) for r in reasons if isinstance(r, dict))


def list_frame(warnings: gpd.GeoDataFrame, *, only_warnings: bool = True) -> pd.DataFrame:
    """The warning list as a plain table with the :data:`LIST_COLUMNS` columns (no geometry).

    Args:
        warnings: Classified or stored warnings (any CRS).
        only_warnings: Leave out legal rows (category ``none`` without flags).
    """
    frame = pd.DataFrame(warnings.drop(columns=warnings.geometry.name))
    if "warning_id" not in frame.columns:
        frame["warning_id"] = frame.get("source_key")
    if only_warnings and "is_warning" in frame.columns:
        frame = frame[frame["is_warning"].astype(bool)]
    if "category_zh" not in frame.columns:
        frame["category_zh"] = frame["category"].map(CATEGORY_ZH)
    if "reason_zh" not in frame.columns:
        frame["reason_zh"] = [_join_reasons(r, "zh", "；") for r in frame["reasons"]]
    if "reason_en" not in frame.columns:
        frame["reason_en"] = [_join_reasons(r, "en", "; ") for r in frame["reasons"]]
    if "permit_nos" not in frame.columns:
        frame["permit_nos"] = [
            ", ".join(dict.fromkeys(str(p.get("permit_no")) for p in (ps or []))) for ps in frame["permits"]
        ]
    if "suspected" not in frame.columns:
        frame["suspected"] = True
    frame["flags"] = [", ".join(f) if isinstance(f, list | tuple) else (f or "") for f in frame["flags"]]
    for column, *_ in LIST_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    out = frame[[c for c, *_ in LIST_COLUMNS]].copy()
    sort_rank = pd.to_numeric(out["rank"], errors="coerce").fillna(1e12)
    out = out.assign(_r=sort_rank).sort_values(["_r", "warning_id"]).drop(columns="_r")
    return out.reset_index(drop=True)


def summary_tables(warnings: gpd.GeoDataFrame) -> dict[str, pd.DataFrame]:
    """Counts and areas (m², mu) per category and per township (all rows, legal ones included)."""
    frame = pd.DataFrame(warnings.drop(columns=warnings.geometry.name))
    if "category_zh" not in frame.columns:
        frame["category_zh"] = frame["category"].map(CATEGORY_ZH)
    frame["township_name"] = frame.get("township_name", pd.Series(dtype=object)).fillna("(未分配 unassigned)")
    out: dict[str, pd.DataFrame] = {}
    for name, keys in (("category", ["category_zh", "category"]), ("township", ["township_name"])):
        if len(frame):
            table = frame.groupby(keys, dropna=False).agg(count=("area_m2", "size"), area_m2=("area_m2", "sum"))
            table = table.reset_index()
        else:
            table = pd.DataFrame({**{k: [] for k in keys}, "count": [], "area_m2": []})
        table["area_m2"] = table["area_m2"].astype(float).round(1)
        table["area_mu"] = (table["area_m2"] / SQM_PER_MU).round(2)
        out[name] = table
    return out


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _cell(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and pd.isna(value):
        return None
    if value is pd.NA:
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def write_warning_xlsx(warnings: gpd.GeoDataFrame, path: str | Path, *, title: str | None = None) -> Path:
    """Write the warning list as an Excel workbook.

    Sheet ``预警清单 warnings``: Chinese headers in row 1, English in row 2 (frozen), one warning per row,
    ranked. Sheet ``汇总 summary``: counts and areas (m², mu) per category and per township.
    """
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    path = Path(path)
    table = list_frame(warnings)
    book = Workbook()
    sheet = book.active
    sheet.title = "预警清单 warnings"
    bold = Font(bold=True)
    fill = PatternFill("solid", fgColor="DDEBF7")
    for j, (_, zh, en, width) in enumerate(LIST_COLUMNS, start=1):
        for row, label in ((1, zh), (2, en)):
            cell = sheet.cell(row=row, column=j, value=label)
            cell.font = bold
            cell.fill = fill
            cell.alignment = Alignment(wrap_text=True, vertical="center")
        sheet.column_dimensions[get_column_letter(j)].width = width
    for i, record in enumerate(table.itertuples(index=False), start=3):
        for j, value in enumerate(record, start=1):
            sheet.cell(row=i, column=j, value=_cell(value))
    sheet.freeze_panes = "C3"
    if len(table):
        sheet.auto_filter.ref = f"A2:{get_column_letter(len(LIST_COLUMNS))}{len(table) + 2}"
    summary = book.create_sheet("汇总 summary")
    row = 1
    if title:
        summary.cell(row=1, column=1, value=title).font = Font(bold=True, size=13)
        row = 3
    headers = {
        "category": (("预警类型", "category (zh)"), ("类型代码", "category"), ("数量", "count"),
                     ("面积(m²)", "area (m²)"), ("面积(亩)", "area (mu)")),
        "township": (("乡镇名称", "township"), ("数量", "count"), ("面积(m²)", "area (m²)"),
                     ("面积(亩)", "area (mu)")),
    }
    for name, frame in summary_tables(warnings).items():
        summary.cell(row=row, column=1, value="按类型 by category" if name == "category" else "按乡镇 by township"
                     ).font = Font(bold=True)
        row += 1
        for j, (zh, en) in enumerate(headers[name], start=1):
            summary.cell(row=row, column=j, value=zh).font = bold
            summary.cell(row=row + 1, column=j, value=en).font = bold
        row += 2
        for record in frame.itertuples(index=False):
            for j, value in enumerate(record, start=1):
                summary.cell(row=row, column=j, value=_cell(value))
            row += 1
        row += 1
    for j, width in enumerate((22, 24, 8, 14, 12), start=1):
        summary.column_dimensions[get_column_letter(j)].width = width
    with _atomic_path(path) as tmp:
        book.save(tmp)
    return path


def write_warning_csv(warnings: gpd.GeoDataFrame, path: str | Path) -> Path:
    """Write the warning list as CSV in UTF-8 with BOM (opens correctly in Excel); headers ``中文 (english)``."""
    path = Path(path)
    table = list_frame(warnings)
    table.columns = [f"{zh} ({en})" for _, zh, en, _ in LIST_COLUMNS]
    with _atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, encoding="utf-8-sig")
    return path


def write_warning_gpkg(warnings: gpd.GeoDataFrame, path: str | Path, *, layer: str = "warnings") -> Path:
    """Write all rows (legal ones too, see ``is_warning``) as a GeoPackage layer for QGIS.

    List/dict columns (flags, reasons, permits, links) are stored as JSON text.
    """
    path = Path(path)
    frame = warnings.copy()
    if "warning_id" not in frame.columns:
        frame["warning_id"] = frame.get("source_key")
    for column in frame.columns:
        if column == frame.geometry.name:
            continue
        values = frame[column]
        if values.map(lambda v: isinstance(v, list | tuple | dict)).any():
            frame[column] = [json.dumps(v, ensure_ascii=False, default=str) if v is not None else None
                             for v in values]
        elif str(values.dtype) == "object":
            frame[column] = [None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)
                             for v in values]
    if "rank" in frame.columns:
        frame["rank"] = pd.to_numeric(frame["rank"], errors="coerce").astype("Int64")
    with _atomic_path(path) as tmp:  # a fresh file each time (the list is regenerated as a whole)
        tmp.unlink()
        frame.to_file(tmp, layer=layer, driver="GPKG", engine="pyogrio")
    return path

"""Quarterly warning lists for bureaus: XLSX (Chinese + English headers, print-ready), CSV (UTF-8 with BOM),
GeoPackage.

All writers take a warnings GeoDataFrame -- the output of :func:`cspon_rs.rules.engine.classify` with a
``warning_id`` column added, or :func:`cspon_rs.store.crud.warnings_frame` of stored warnings, with the
field results attached (:func:`cspon_rs.exports.fieldresults.attach_field_results`) -- and write to a
temporary file beside the target that is renamed into place at the end (never a half-written list), with
the ordinary file mode (0644 under umask 022).

Areas in the list are the planar areas of the 图斑 layer (CGCS2000 Gauss-Krüger zone of the layer centre,
see :mod:`cspon_rs.exports.layers`); statuses and results are in Chinese; timestamps are shown in the
schema's time zone (Asia/Shanghai by default; stored values are UTC, naive ones taken as UTC).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from cspon_rs.exports.fileio import atomic_path
from cspon_rs.exports.layers import tuban_frame
from cspon_rs.exports.schema import ExportSchema, load_export_schema
from cspon_rs.geo.crs import SQM_PER_MU
from cspon_rs.rules.config import CATEGORIES, CATEGORY_ZH

__all__ = [
    "LIST_COLUMNS",
    "NUMBER_FORMATS",
    "PRINTED_COLUMNS",
    "cropland_table",
    "list_frame",
    "list_title",
    "list_totals",
    "summary_tables",
    "write_warning_csv",
    "write_warning_gpkg",
    "write_warning_xlsx",
]

#: (column, Chinese header, English header, Excel width) of the warning list, in order.
LIST_COLUMNS: tuple[tuple[str, str, str, int], ...] = (
    ("rank", "排名", "rank", 6),
    ("warning_id", "预警编号", "warning id", 20),
    ("period", "期次", "period", 8),
    ("issued_no", "监测编号(下发)", "issued no", 14),
    ("county_code", "县级代码", "county code", 9),
    ("township_code", "乡镇代码", "township code", 12),
    ("township_name", "乡镇名称", "township", 10),
    ("category_zh", "预警类型", "category (zh)", 10),
    ("change_type_zh", "变化类型", "change type", 12),
    ("flags", "管控线标记", "control-line flags", 11),
    ("area_m2", "面积(m²)", "area (m²)", 10),
    ("area_mu", "面积(亩)", "area (mu)", 9),
    ("excess_m2", "超批面积(m²)", "excess (m²)", 10),
    ("farmland_overlap_m2", "占永久基本农田(m²)", "YJJBNT overlap (m²)", 11),
    ("redline_overlap_m2", "占生态保护红线(m²)", "STBHHX overlap (m²)", 11),
    ("outside_urban_m2", "城镇开发边界外(m²)", "outside CZKFBJ (m²)", 11),
    ("cropland_m2", "占用耕地(m²)", "cropland taken (m²)", 10),
    ("landuse_main_zh", "主要地类", "main land class", 10),
    ("landuse_zh", "地类面积", "area by land class", 18),
    ("permit_nos", "相关批准文号", "permits", 18),
    ("reason_zh", "预警原因", "reasons (zh)", 36),
    ("confidence", "模型置信度", "confidence", 8),
    ("status", "状态", "status", 8),
    ("suspected", "疑似/已核查", "suspected", 8),
    ("result_zh", "核查结果", "field result", 11),
    ("actual_use", "实际用途", "actual use", 12),
    ("assigned_team", "核查组", "team", 10),
    ("due_date", "核查期限", "due date", 11),
    ("verified_at", "核查时间", "verified at", 16),
    ("verified_by", "核查人", "checked by", 10),
    ("photo_count", "照片数", "photos", 6),
    ("land_user", "用地主体", "land user", 12),
    ("project_name", "项目名称", "project", 14),
    ("construction_status_zh", "建设状态", "construction status", 8),
    ("violation_type", "违法类型", "violation type", 10),
    ("rectification_zh", "整改状态", "rectification", 8),
    ("case_steps_zh", "整改/处理记录", "case steps", 24),
    ("case_document_count", "材料数", "documents", 6),
    ("centroid_lon", "经度", "longitude", 11),
    ("centroid_lat", "纬度", "latitude", 11),
    ("t1", "前时相", "t1", 11),
    ("t2", "后时相", "t2", 11),
    # analyst columns, after the printed area (PRINTED_COLUMNS)
    ("chip", "影像截图", "chip", 12),
    ("category", "类型代码", "category", 14),
    ("priority", "优先级得分", "priority score", 8),
    ("reason_en", "预警原因(英文)", "reasons (en)", 40),
)
#: The first columns of :data:`LIST_COLUMNS` that are printed (the rest stay on screen only).
PRINTED_COLUMNS = [c for c, *_ in LIST_COLUMNS].index("chip")

#: Excel number format per column (others are General/text).
NUMBER_FORMATS: dict[str, str] = {
    "rank": "0", "area_m2": "#,##0", "area_mu": "0.00", "excess_m2": "#,##0", "farmland_overlap_m2": "#,##0",
    "redline_overlap_m2": "#,##0", "outside_urban_m2": "#,##0", "cropland_m2": "#,##0", "confidence": "0.00",
    "priority": "0.0", "photo_count": "0", "case_document_count": "0", "centroid_lon": "0.000000",
    "centroid_lat": "0.000000", "t1": "yyyy-mm-dd", "t2": "yyyy-mm-dd", "due_date": "yyyy-mm-dd",
    "verified_at": "yyyy-mm-dd hh:mm",
}
_WRAPPED = {"reason_zh", "reason_en", "permit_nos", "actual_use", "flags", "township_name", "category",
            "landuse_zh", "landuse_main_zh", "land_user", "project_name", "case_steps_zh", "change_type_zh"}
_SUMMED = ("area_m2", "area_mu", "excess_m2", "farmland_overlap_m2", "redline_overlap_m2", "outside_urban_m2",
           "cropland_m2", "photo_count")


def _local_naive(value: Any, schema: ExportSchema) -> dt.datetime | None:
    """A stored timestamp as a naive datetime in the schema's zone (Excel has no time zones)."""
    if value is None or value != value:  # None, NaN, NaT
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if not isinstance(value, dt.datetime):
        return None
    aware = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value
    return aware.astimezone(schema.zone()).replace(tzinfo=None)


def list_frame(
    warnings: gpd.GeoDataFrame,
    *,
    only_warnings: bool = True,
    schema: ExportSchema | None = None,
    chips: Mapping[str, Path] | None = None,
) -> pd.DataFrame:
    """The warning list as a plain table with the :data:`LIST_COLUMNS` columns (no geometry), ranked.

    Args:
        warnings: Classified or stored warnings (any CRS inside China).
        only_warnings: Leave out legal rows (category ``none`` without flags).
        schema: Time zone (default schema when omitted).
        chips: Warning id → chip PNG, for the ``chip`` column (absolute or relative paths).
    """
    schema = schema or load_export_schema()
    rows = warnings
    if only_warnings and "is_warning" in rows.columns:
        rows = rows[rows["is_warning"].astype(bool)]
    frame = pd.DataFrame(tuban_frame(rows, schema).drop(columns="geometry"))
    frame["status"] = frame["status_zh"]
    frame["suspected"] = frame["suspected_zh"]
    frame["verified_at"] = [_local_naive(v, schema) for v in
                            (rows["verified_at"] if "verified_at" in rows.columns else [None] * len(rows))]
    frame["chip"] = [str(chips[i]) if chips and i in chips else None for i in frame["warning_id"]]
    out = frame[[c for c, *_ in LIST_COLUMNS]].copy()
    sort_rank = pd.to_numeric(out["rank"], errors="coerce").fillna(1e12)
    out = out.assign(_r=sort_rank).sort_values(["_r", "warning_id"]).drop(columns="_r")
    return out.reset_index(drop=True)


def _flags(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    if isinstance(value, str) and value:
        return json.loads(value) if value.startswith("[") else [v.strip() for v in value.split(",") if v.strip()]
    return []


def summary_tables(warnings: gpd.GeoDataFrame, *, only_warnings: bool = True) -> dict[str, pd.DataFrame]:
    """Counts and areas (m², mu) per category, per township, per control line and per status.

    Args:
        warnings: Classified or stored warnings.
        only_warnings: Count only warnings (legal rows left out), as the bureau summary does.
    """
    frame = pd.DataFrame(warnings.drop(columns=warnings.geometry.name))
    if only_warnings and "is_warning" in frame.columns:
        frame = frame[frame["is_warning"].astype(bool)]
    frame["category_zh"] = frame["category"].map(CATEGORY_ZH)
    frame["township_name"] = frame.get("township_name", pd.Series(index=frame.index, dtype=object)).fillna(
        "(未分配 unassigned)")
    frame["area_m2"] = pd.to_numeric(frame["area_m2"], errors="coerce").fillna(0.0)
    out: dict[str, pd.DataFrame] = {}
    for name, keys in (("category", ["category_zh", "category"]), ("township", ["township_name"])):
        if len(frame):
            table = frame.groupby(keys, dropna=False).agg(count=("area_m2", "size"), area_m2=("area_m2", "sum"))
            table = table.reset_index()
        else:
            table = pd.DataFrame({**{k: [] for k in keys}, "count": [], "area_m2": []})
        if name == "category" and len(table):  # in the order of the rules, not by code point
            table = table.assign(_o=[CATEGORIES.index(c) if c in CATEGORIES else len(CATEGORIES)
                                     for c in table["category"]]).sort_values(["_o", "category"]).drop(columns="_o")
            table = table.reset_index(drop=True)
        table["area_mu"] = (table["area_m2"].astype(float) / SQM_PER_MU).round(2)
        table["area_m2"] = table["area_m2"].astype(float).round(1)
        out[name] = table
    lines = []
    for code, zh, column in (("YJJBNT", "永久基本农田", "farmland_overlap_m2"),
                             ("STBHHX", "生态保护红线", "redline_overlap_m2"),
                             ("CZKFBJ", "城镇开发边界外", "outside_urban_m2")):
        flagged = frame[[code in _flags(f) for f in frame.get("flags", [])]] if len(frame) else frame
        area = float(pd.to_numeric(flagged.get(column, pd.Series(dtype=float)), errors="coerce").fillna(0).sum())
        lines.append({"control_zh": zh, "control": code, "count": len(flagged), "area_m2": round(area, 1),
                      "area_mu": round(area / SQM_PER_MU, 2)})
    out["control"] = pd.DataFrame(lines)
    cropland = cropland_table(frame)
    if cropland is not None:
        out["cropland"] = cropland
    from cspon_rs.exports.schema import STATUS_ZH

    statuses = frame.get("status", pd.Series(index=frame.index, dtype=object)).fillna("new")
    out["status"] = pd.DataFrame([{"status_zh": zh, "status": key, "count": int((statuses == key).sum())}
                                  for key, zh in STATUS_ZH.items()])
    return out


def cropland_table(frame: pd.DataFrame) -> pd.DataFrame | None:
    """占用耕地 by township: warnings, their area, the part on 耕地 (01xx) and its share of the area (0..1);
    ``None`` when no row has land-use figures (the run had no ``--landuse`` layer)."""
    if "cropland_m2" not in frame.columns or not len(frame):
        return None
    crop = pd.to_numeric(frame["cropland_m2"], errors="coerce")
    if crop.isna().all():
        return None
    names = frame.get("township_name", pd.Series(index=frame.index, dtype=object)).fillna("(未分配 unassigned)")
    work = pd.DataFrame({"township_name": names, "area_m2": pd.to_numeric(frame["area_m2"], errors="coerce")
                         .fillna(0.0), "cropland_m2": crop.fillna(0.0)})
    table = work.groupby("township_name").agg(count=("area_m2", "size"), area_m2=("area_m2", "sum"),
                                             cropland_m2=("cropland_m2", "sum")).reset_index()
    table["cropland_share"] = [c / a if a > 0 else 0.0 for c, a in zip(table["cropland_m2"], table["area_m2"],
                                                                        strict=True)]
    table["area_m2"] = table["area_m2"].round(1)
    table["cropland_m2"] = table["cropland_m2"].round(1)
    table["cropland_mu"] = (table["cropland_m2"] / SQM_PER_MU).round(2)
    table["cropland_share"] = table["cropland_share"].round(4)
    return table


def _cell(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and pd.isna(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def write_warning_xlsx(
    warnings: gpd.GeoDataFrame,
    path: str | Path,
    *,
    title: str | None = None,
    chips: Mapping[str, Path] | None = None,
    schema: ExportSchema | None = None,
) -> Path:
    """Write the warning list as a print-ready Excel workbook.

    Sheet ``预警清单 warnings``: Chinese headers in row 1, English in row 2 (frozen, repeated on every printed
    page), one warning per row ranked, a 合计 row; number formats (m² integers, 亩 two decimals, dates),
    wrapped text, A3 landscape fitted to the page width with ``第 N 页 共 M 页`` in the footer; the ``影像截图``
    cell links to the chip PNG (relative to the workbook). Sheet ``汇总 summary``: counts and areas of the
    warnings per category, township, control line and status, each with a 合计 row.

    Args:
        warnings: See :func:`list_frame`.
        path: Target ``.xlsx``.
        title: Printed in the page header and on the summary sheet.
        chips: Warning id → chip PNG.
        schema: Time zone (default schema when omitted).
    """
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.properties import PageSetupProperties

    path = Path(path)
    schema = schema or load_export_schema()
    links = {k: Path(os.path.relpath(Path(v).resolve(), path.parent.resolve())) for k, v in (chips or {}).items()}
    table = list_frame(warnings, schema=schema, chips=links)
    title = list_title(warnings, schema, title)
    book = Workbook()
    sheet = book.active
    sheet.title = "预警清单 warnings"
    bold = Font(bold=True)
    fill = PatternFill("solid", fgColor="DDEBF7")
    thin = Side(style="thin", color="999999")
    border = Border(left=thin, right=thin, top=thin, bottom=thin)
    header_align = Alignment(wrap_text=True, vertical="center", horizontal="center")
    for j, (_, zh, en, width) in enumerate(_headers(schema), start=1):
        for row, label in ((1, zh), (2, en)):
            cell = sheet.cell(row=row, column=j, value=label)
            cell.font = bold
            cell.fill = fill
            cell.border = border
            cell.alignment = header_align
        sheet.column_dimensions[get_column_letter(j)].width = width
    sheet.row_dimensions[1].height = 32
    sheet.row_dimensions[2].height = 40
    columns = [c for c, *_ in LIST_COLUMNS]
    wrap = Alignment(wrap_text=True, vertical="top")
    top = Alignment(vertical="top")
    for i, record in enumerate(table.itertuples(index=False), start=3):
        for j, (column, value) in enumerate(zip(columns, record, strict=True), start=1):
            value = _cell(value)
            if column == "chip" and value is not None:
                cell = sheet.cell(row=i, column=j, value="查看 view")
                cell.hyperlink = str(value).replace(os.sep, "/")
                cell.style = "Hyperlink"
            else:
                cell = sheet.cell(row=i, column=j, value=value)
            if column in NUMBER_FORMATS:
                cell.number_format = NUMBER_FORMATS[column]
            cell.alignment = wrap if column in _WRAPPED else top
            cell.border = border
    widths = {c: w for c, _, _, w in LIST_COLUMNS}
    for i, values in enumerate(table.to_dict("records"), start=3):
        lines = max([_lines(values.get(c), widths[c]) for c in _WRAPPED if c in values] + [1])
        sheet.row_dimensions[i].height = min(409.0, 13.5 * lines + 3.0)  # fitted to the wrapped text
    last = len(table) + 2
    total_row = last + 1
    sheet.cell(row=total_row, column=1, value="合计").font = bold
    sheet.cell(row=total_row, column=2, value=f"{len(table)} 宗 warnings").font = bold
    totals = list_totals(table)
    for column in _SUMMED:
        j = columns.index(column) + 1
        cell = sheet.cell(row=total_row, column=j, value=totals[column])
        cell.number_format = NUMBER_FORMATS[column]
        cell.font = bold
    for j in range(1, len(columns) + 1):
        sheet.cell(row=total_row, column=j).border = border
        sheet.cell(row=total_row, column=j).fill = PatternFill("solid", fgColor="F2F2F2")
    sheet.freeze_panes = "C3"
    sheet.auto_filter.ref = f"A2:{get_column_letter(len(columns))}{max(last, 2)}"
    _print_setup(sheet, title, f"A1:{get_column_letter(PRINTED_COLUMNS)}{total_row}", PageSetupProperties,
                 schema=schema)

    summary = book.create_sheet("汇总 summary")
    # the summary counts the same rows with the same areas as the list, so both 合计 agree
    listed = dict(zip(table["warning_id"], table["area_m2"], strict=True))
    counted = warnings.assign(area_m2=[listed.get(i, a) for i, a in zip(
        warnings["warning_id"] if "warning_id" in warnings.columns else [None] * len(warnings),
        warnings["area_m2"], strict=True)])
    row = 1
    if title:
        summary.cell(row=1, column=1, value=title).font = Font(bold=True, size=13)
        row = 3
    n_legal = int((~warnings["is_warning"].astype(bool)).sum()) if "is_warning" in warnings.columns else 0
    summary.cell(row=row, column=1, value=f"仅统计预警图斑; 另有合法(已批)图斑 {n_legal} 个未计入 "
                                          f"(only warnings are counted; {n_legal} legal patches left out)")
    row += 2
    headers = {
        "category": ((("预警类型", "category (zh)"), ("类型代码", "category")), "按类型 by category"),
        "township": ((("乡镇名称", "township"),), "按乡镇 by township"),
        "control": ((("管控线", "control line (zh)"), ("代码", "code")), "按管控线 by control line (涉及面积)"),
        "status": ((("状态", "status (zh)"), ("代码", "status")), "核查进度 verification progress"),
        "cropland": ((("乡镇名称", "township"),), "占用耕地 by township (耕地 = GB/T 21010 01xx)"),
    }
    for name, frame in summary_tables(counted).items():
        keys, label = headers[name]
        summary.cell(row=row, column=1, value=label).font = bold
        row += 1
        measures = [("数量", "count"), ("面积(m²)", "area (m²)"), ("面积(亩)", "area (mu)")]
        if name == "status":
            measures = measures[:1]
        if name == "cropland":
            measures = [("数量", "count"), ("面积(m²)", "area (m²)"), ("占用耕地(m²)", "cropland (m²)"),
                        ("耕地占比", "cropland share"), ("占用耕地(亩)", "cropland (mu)")]
        for j, (zh, en) in enumerate((*keys, *measures), start=1):
            for r, text in ((row, zh), (row + 1, en)):
                cell = summary.cell(row=r, column=j, value=text)
                cell.font = bold
                cell.fill = fill
                cell.border = border
        row += 2
        formats = ["@"] * len(keys) + (["0", "#,##0", "#,##0", "0.0%", "0.00"] if name == "cropland"
                                       else ["0", "#,##0", "0.00"])
        for record in frame.itertuples(index=False):
            for j, value in enumerate(record, start=1):
                cell = summary.cell(row=row, column=j, value=_cell(value))
                cell.number_format = formats[j - 1]
                cell.border = border
            row += 1
        if name in ("category", "township"):
            summary.cell(row=row, column=1, value="合计").font = bold
            offset = len(keys)
            for j, column, fmt in ((offset + 1, "count", "0"), (offset + 2, "area_m2", "#,##0"),
                                   (offset + 3, "area_mu", "0.00")):
                cell = summary.cell(row=row, column=j, value=totals[column])
                cell.number_format = fmt
                cell.font = bold
            row += 1
        row += 1
    for j, width in enumerate((22, 24, 10, 14, 12), start=1):
        summary.column_dimensions[get_column_letter(j)].width = width
    _print_setup(summary, title, None, PageSetupProperties, repeat=False, schema=schema)
    with atomic_path(path) as tmp:
        book.save(tmp)
    return path


def list_totals(table: pd.DataFrame) -> dict[str, Any]:
    """The 合计 of a list table, computed once for the list and the summary sheet: counts, sums of m² columns,
    and 亩 from the m² total (not a sum of rounded 亩)."""
    totals: dict[str, Any] = {"count": len(table)}
    for column in (*_SUMMED, "area_m2"):
        values = pd.to_numeric(table[column], errors="coerce").fillna(0) if len(table) else pd.Series(dtype=float)
        totals[column] = round(float(values.sum()), 2)
    totals["area_mu"] = round(totals["area_m2"] / SQM_PER_MU, 4)
    totals["photo_count"] = int(totals["photo_count"])
    return totals


def list_title(warnings: gpd.GeoDataFrame, schema: ExportSchema, title: str | None = None) -> str:
    """The list's title with the county name and period, e.g. ``香港特别行政区（810000）2018Q1 疑似违法用地预警清单``;
    a caller's title is kept, with the county name put in front when it lacks it."""
    from cspon_rs.exports.schema import county_name

    codes = sorted({str(c) for c in warnings.get("county_code", pd.Series(dtype=object)).dropna()})
    periods = sorted({str(p) for p in warnings.get("period", pd.Series(dtype=object)).dropna()})
    names = [f"{county_name(schema, c)}（{c}）" for c in codes] or ["行政区未注明"]
    if title:
        missing = [county_name(schema, c) for c in codes if county_name(schema, c) not in title]
        return f"{'、'.join(missing)} {title}" if missing else title
    return f"{'、'.join(names)} {'、'.join(periods)} 疑似违法用地预警清单"


def _lines(value: Any, width: int) -> int:
    """Lines a wrapped cell needs at a column width (CJK characters count double)."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return 1
    text = str(value)
    units = sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)
    return max(1, -(-units // max(1, int(width * 1.1) - 1)))


def _headers(schema: ExportSchema) -> tuple[tuple[str, str, str, int], ...]:
    """:data:`LIST_COLUMNS` with the display time zone named in the 核查时间 header."""
    return tuple((c, zh, f"{en} ({schema.timezone})", w) if c == "verified_at" else (c, zh, en, w)
                 for c, zh, en, w in LIST_COLUMNS)


def _print_setup(sheet: Any, title: str | None, area: str | None, props: Any, *, repeat: bool = True,
                 schema: ExportSchema | None = None) -> None:
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.paperSize = sheet.PAPERSIZE_A3 if repeat else sheet.PAPERSIZE_A4
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0
    sheet.sheet_properties.pageSetUpPr = props(fitToPage=True)
    sheet.print_options.horizontalCentered = True
    sheet.page_margins.left = sheet.page_margins.right = 0.4
    if repeat:
        sheet.print_title_rows = "1:2"
    if area:
        sheet.print_area = area
    if title:
        sheet.oddHeader.center.text = title
    sheet.oddFooter.center.text = "第 &P 页，共 &N 页"
    zone = (schema or load_export_schema()).zone()  # a fixed ISO date, not Excel's locale date (&D)
    sheet.oddFooter.right.text = f"cspon-rs {dt.datetime.now(zone).date().isoformat()}"


def write_warning_csv(
    warnings: gpd.GeoDataFrame,
    path: str | Path,
    *,
    chips: Mapping[str, Path] | None = None,
    schema: ExportSchema | None = None,
) -> Path:
    """Write the warning list as CSV in UTF-8 with BOM (opens correctly in Excel/WPS); headers ``中文 (english)``.

    Same rows and columns as the XLSX list (no 合计 row, so the file stays a plain table); dates ISO,
    核查时间 in the schema's time zone.
    """
    path = Path(path)
    schema = schema or load_export_schema()
    links = {k: Path(os.path.relpath(Path(v).resolve(), path.parent.resolve())) for k, v in (chips or {}).items()}
    table = list_frame(warnings, schema=schema, chips=links)
    table["verified_at"] = [v.isoformat(sep=" ", timespec="minutes") if isinstance(v, dt.datetime) else None
                            for v in table["verified_at"]]
    table.columns = [f"{zh} ({en})" for _, zh, en, _ in _headers(schema)]
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, encoding="utf-8-sig")
    return path


def write_warning_gpkg(warnings: gpd.GeoDataFrame, path: str | Path, *, layer: str = "warnings") -> Path:
    """Write all rows (legal ones too, see ``is_warning``) with every working column as a GeoPackage 1.2
    layer for QGIS (the 图斑 layer in bureau form is :func:`cspon_rs.exports.layers.write_tuban`).

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
    with atomic_path(path, keep_tmp=False) as tmp:  # a fresh file each time (the list is regenerated as a whole)
        frame.to_file(tmp, layer=layer, driver="GPKG", engine="pyogrio", VERSION="1.2")
    return path

"""The printable county report at any list length: how its pages are produced, with memory bounded.

:func:`cspon_rs.exports.report.write_report` draws the pages (cover, summary tables, top warnings,
核查表 sheets). This module decides *which* pages and feeds them cheaply:

* **every warning in one table** (:func:`draw_warning_list`): rank, id, category, township, area, flags,
  status, field result -- plain fixed-height cells, ~45 rows per A4 page, so 3,000 warnings are ~70 pages
  drawn in seconds;
* **核查表 sheets for the selected ids, or the top ``sheets`` by priority** (default
  :data:`DEFAULT_SHEETS` = 50, at most :data:`MAX_SHEETS`), never one per warning of a county list;
* **every field photo of a sheet printed** (the sheet places them all, with their captions), each
  downscaled first to a ≤ 1600 px JPEG (:func:`cspon_rs.exports.photos_print.print_photo`, one photo
  decoded at a time, right before its sheet, decompression bombs refused and shown as a card);
* progress reported per sheet.

Memory is bounded by the number of sheets (their chips and print-size photos, a few hundred KB each), not
by the list length: the list itself is text. :func:`store_version` fingerprints the rows a report is made
from, so a service can cache one PDF per (county, period, store version, selection).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "DEFAULT_SHEETS",
    "MAX_SHEETS",
    "PrintReport",
    "draw_warning_list",
    "select_sheets",
    "store_version",
    "write_print_report",
]

#: 核查表 sheets of a report when no ids are selected: the highest-priority warnings.
DEFAULT_SHEETS = 50
#: Most 核查表 sheets one report prints (selected ids beyond it are refused by the service).
MAX_SHEETS = 500
Progress = Callable[[float, str], None]


@dataclass
class PrintReport:
    """What :func:`write_print_report` wrote."""

    path: Path
    warnings: int
    sheets: int
    photos: int
    photos_not_shown: int
    bytes: int


def store_version(session: Any, *, county_code: str | None, period: str) -> str:
    """Fingerprint (16 hex) of a county's period in the store: rows, their versions, last change, photos.

    Every change of a warning (assignment, status, verification) bumps its ``version`` and
    ``updated_at``; photos are counted separately. Equal fingerprints mean the same report content.
    """
    from sqlalchemy import func, select

    from cspon_rs.store.api_models import Photo
    from cspon_rs.store.models import WarningRecord

    where = [WarningRecord.period == period]
    if county_code is not None:
        where.append(WarningRecord.county_code == county_code)
    count, versions, changed = session.execute(
        select(func.count(), func.sum(WarningRecord.version), func.max(WarningRecord.updated_at)).where(*where)
    ).one()
    photos, last_photo = session.execute(
        select(func.count(Photo.id), func.max(Photo.id)).join(WarningRecord, WarningRecord.id == Photo.warning_id)
        .where(*where)
    ).one()
    raw = f"{county_code}|{period}|{count}|{versions}|{changed}|{photos}|{last_photo}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def select_sheets(frame: pd.DataFrame, ids: Sequence[str] | None, n: int = DEFAULT_SHEETS) -> list[str]:
    """The warnings that get a 核查表: ``ids`` that are warnings of ``frame`` (in the given order), else the
    ``n`` highest-priority warnings."""
    rows = frame[frame["is_warning"].astype(bool)] if "is_warning" in frame.columns else frame
    known = set(rows["warning_id"].astype(str))
    if ids:
        return [i for i in dict.fromkeys(map(str, ids)) if i in known]
    ranked = rows.sort_values(["priority", "warning_id"], ascending=[False, True])
    return [str(i) for i in ranked["warning_id"].head(max(0, n))]


def _cut(value: str, width_mm: float, pdf: Any) -> str:
    """``value`` shortened with … to fit ``width_mm`` (short ASCII values are never measured)."""
    if len(value) * 1.6 <= width_mm or pdf.get_string_width(value) <= width_mm - 1.5:
        return value
    while value and pdf.get_string_width(value + "…") > width_mm - 1.5:
        value = value[:-1]
    return value + "…"


def _text(value: Any, key: str) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return "—"
    if key == "area_m2":
        return f"{float(value):,.0f}"
    if key == "area_mu":
        return f"{float(value):,.2f}"
    if key == "rank":
        return f"{int(value)}"
    return str(value) or "—"


def draw_warning_list(doc: Any, frame: pd.DataFrame) -> None:
    """Every warning of ``frame`` (a :func:`~cspon_rs.exports.layers.tuban_frame`, rank order) in one table
    with a header repeated on each page: 序号, 图斑编号, 类型, 乡镇, 面积 m², 亩, 管控线, 状态, 核查结果.

    Drawn as text runs and rules (not fpdf2 table cells), so 3,000 rows take about a second."""
    pdf = doc.pdf
    pdf.add_page()
    doc.heading(f"预警图斑清单 every warning ({len(frame)} 宗, 按优先级 by priority)", 13)
    columns: list[tuple[str, str, float, str]] = [
        ("序号", "rank", 11, "R"), ("图斑编号 id", "warning_id", 36, "L"), ("类型", "category_zh", 20, "L"),
        ("乡镇", "township_name", 22, "L"), ("面积 m²", "area_m2", 20, "R"), ("亩", "area_mu", 15, "R"),
        ("管控线", "flags", 22, "L"), ("状态", "status_zh", 16, "L"), ("核查结果", "result_zh", 20, "L"),
    ]
    row_h = 5.0
    left = pdf.l_margin
    edges = [left]
    for _, _, width, _ in columns:
        edges.append(edges[-1] + width)
    bottom = pdf.h - pdf.b_margin - row_h
    values = {key: list(frame[key]) if key in frame.columns else [None] * len(frame) for _, key, _, _ in columns}
    pdf.set_draw_color(120, 120, 120)
    pdf.set_line_width(0.15)

    def header() -> float:
        pdf.set_font("cjk", size=7.5)
        pdf.set_fill_color(225, 230, 236)
        pdf.set_x(left)
        for title, _, width, _align in columns:
            pdf.cell(width, row_h + 0.6, title, border=1, align="C", fill=True)
        pdf.ln(row_h + 0.6)
        pdf.set_font("cjk", size=7)
        return float(pdf.get_y())

    def close_block(top: float, y: float) -> None:
        for x in edges:
            pdf.line(x, top, x, y)

    top = y = header()
    for k in range(len(frame)):
        if y > bottom:
            close_block(top, y)
            pdf.add_page()
            top = y = header()
        for (_, key, width, align), x in zip(columns, edges, strict=False):
            text = _cut(_text(values[key][k], key), width, pdf)
            tx = x + 0.8 if align == "L" else x + width - 0.8 - pdf.get_string_width(text)
            pdf.text(tx, y + row_h - 1.5, text)
        y += row_h
        pdf.line(edges[0], y, edges[-1], y)
    close_block(top, y)
    pdf.set_y(y + 2)


def write_print_report(
    frame: pd.DataFrame,
    path: str | Path,
    *,
    county_code: str,
    period: str,
    work_dir: str | Path,
    sheet_ids: Sequence[str],
    chips: Mapping[str, Path] | None = None,
    photos: Mapping[str, Sequence[Path]] | None = None,
    photo_captions: Mapping[str, Sequence[str]] | None = None,
    top_n: int = 6,
    after: str | Path | None = None,
    control_lines: Any = None,
    progress: Progress | None = None,
) -> PrintReport:
    """The bureau's printable report: cover and summary tables, top warnings, every warning in a table,
    and one 核查表 per ``sheet_ids`` with all its photos, downscaled for print.

    Args:
        frame: The period's rows with field results (:func:`cspon_rs.exports.bundle.store_frame`).
        path: Target PDF.
        county_code, period: Title.
        work_dir: Scratch folder for print-size photos (removed by the caller).
        sheet_ids: Warnings that get a 核查表 page (see :func:`select_sheets`).
        chips: Warning id → chip PNG (top warnings and sheets).
        photos: Warning id → original photo files; each is downscaled right before its sheet is drawn.
        photo_captions: Warning id → one caption per photo of ``photos`` (:func:`cspon_rs.api.photos.photo_captions`).
        top_n: Warnings with chips in the 重点预警 section.
        after, control_lines: For the overview map (optional).
        progress: ``progress(fraction 0..1 of the drawing, message)``, once per sheet.
    """
    from cspon_rs.exports.photos_print import print_photo
    from cspon_rs.exports.report import _sheet, write_report

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    photos = photos or {}
    wanted = [str(i) for i in sheet_ids]
    counts = {"photos": 0, "placeholders": 0, "sheets": 0}

    def warning_list(doc: Any, tuban: pd.DataFrame) -> None:
        draw_warning_list(doc, tuban)
        if progress:
            progress(0.05, f"warning list drawn: {len(tuban)} rows")

    def sheet(doc: Any, record: pd.Series, chip: Path | None, originals: list[Path]) -> None:
        warning_id = str(record["warning_id"])
        folder = work / f"sheet_{counts['sheets']}"
        printed = [print_photo(p, folder, label=f"{warning_id} · {Path(p).name}") for p in originals]
        counts["photos"] += len(printed)
        counts["placeholders"] += sum(bool(getattr(p, "placeholder", False)) for p in printed)
        paths = [Path(p) for p in printed]
        _sheet(doc, record, chip, paths)
        for p in paths:  # fpdf2 holds the JPEG bytes it embedded; the files are no longer needed
            p.unlink(missing_ok=True)
        counts["sheets"] += 1
        if progress:
            progress(0.05 + 0.9 * counts["sheets"] / max(len(wanted), 1),
                     f"核查表 {counts['sheets']}/{len(wanted)}: {warning_id}")

    write_report(
        frame, path, county_code=county_code, period=period, chips=dict(chips or {}), after=after,
        control_lines=control_lines, sheet_ids=wanted, top_n=top_n,
        photos={k: list(v) for k, v in photos.items()}, photo_captions=photo_captions,
        extra_sections=warning_list, draw_sheet=sheet,
    )
    rows = frame[frame["is_warning"].astype(bool)] if "is_warning" in frame.columns else frame
    return PrintReport(Path(path), len(rows), counts["sheets"], counts["photos"], counts["placeholders"],
                       Path(path).stat().st_size)

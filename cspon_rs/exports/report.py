"""The PDF report of a period and county, as a bureau files it: overview, statistics, top warnings and one
实地核查表 (field verification sheet) per selected warning.

Pages (A4 portrait, Chinese font embedded as a subset by fpdf2):

1. cover: title, dates, overview map (warnings by category over the after scene, control lines, scale
   bar, north arrow), counts and areas by category, by township, by control line, verification progress;
2. 重点预警 top warnings: the highest-priority warnings with their before/after chips;
3. one 卫片执法图斑实地核查表 page per selected warning: ID, location (township, lon/lat, GK X/Y), dates,
   category, reasons, planar and ellipsoidal areas, control-line overlaps, permits, the chip (with scale
   bar and north arrow), the field result (核查结果, 实际用途, team, due date, verified at, photos) and
   signature lines.

Every row is a suspected case (疑似) until its field check; the report says so on every page.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from cspon_rs.errors import MissingDependencyError
from cspon_rs.exports.fileio import atomic_path
from cspon_rs.exports.layers import tuban_frame
from cspon_rs.exports.lists import summary_tables
from cspon_rs.exports.schema import ExportSchema, load_export_schema, zh_date
from cspon_rs.exports.schema import county_name as _county_name
from cspon_rs.geo.crs import SQM_PER_MU

__all__ = ["SHEET_TITLE", "render_overview", "write_report"]

#: Title of each per-warning page (exactly one per selected warning).
SHEET_TITLE = "卫片执法图斑实地核查表"


def render_overview(
    warnings: gpd.GeoDataFrame,
    out_png: str | Path,
    *,
    after: str | Path | None = None,
    control_lines: gpd.GeoDataFrame | None = None,
    rgb: tuple[int, int, int] = (0, 1, 2),
) -> Path:
    """One map of the warnings by category (over the after scene when given), with control lines, a
    scale bar, a north arrow and a bilingual legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from cspon_rs.quicklook import _CATEGORY_LABEL, _CONTROL_STYLE, CATEGORY_COLOURS, _font, _map_furniture

    out_png = Path(out_png)
    font = _font()
    fig, ax = plt.subplots(figsize=(7.2, 5.6), constrained_layout=True)
    crs = warnings.crs
    extent: tuple[float, float, float, float] | None = None
    if after is not None:
        from rasterio.enums import Resampling
        from rasterio.plot import plotting_extent

        from cspon_rs.geo.raster import open_raster
        from cspon_rs.geo.stretch import common_stretch

        with open_raster(after) as src:
            scale = max(1.0, max(src.width, src.height) / 1200)
            shape = (src.count, int(src.height / scale), int(src.width / scale))
            image = src.read(out_shape=shape, resampling=Resampling.average)
            extent = plotting_extent(src)
            crs = src.crs
        ax.imshow(common_stretch([image], bands=rgb)[0], extent=extent)
    handles: list[Any] = []
    if control_lines is not None and len(control_lines) and "kind" in control_lines.columns:
        lines = control_lines.to_crs(crs)
        for kind, (colour, label) in _CONTROL_STYLE.items():
            part = lines[lines["kind"] == kind]
            if len(part):
                part.boundary.plot(ax=ax, color=colour, linewidth=0.9, linestyle="--")
                handles.append(Line2D([0], [0], color=colour, linestyle="--", label=label))
    shown = warnings.to_crs(crs) if len(warnings) else warnings
    for category, group in shown.groupby("category") if len(shown) else []:
        colour = CATEGORY_COLOURS.get(str(category), "#ffff33")
        group.plot(ax=ax, facecolor=colour, edgecolor="white", linewidth=0.6, alpha=0.85)
        handles.append(Patch(facecolor=colour, label=f"{_CATEGORY_LABEL.get(str(category), category)} ({len(group)})"))
    if extent is None:
        minx, miny, maxx, maxy = shown.total_bounds if len(shown) else (0.0, 0.0, 1.0, 1.0)
        pad = max(maxx - minx, maxy - miny) * 0.1 or 1.0
        extent = (minx - pad, maxx + pad, miny - pad, maxy + pad)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.tick_params(labelsize=6)
    ax.ticklabel_format(useOffset=False, style="plain")
    from pyproj import CRS

    _map_furniture(ax, extent, CRS.from_user_input(crs) if crs is not None else None, font)
    if handles:
        ax.legend(handles=handles, loc="lower right", prop=font, framealpha=0.85)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    return out_png


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT:
        return "—"
    if isinstance(value, float | np.floating):
        return f"{round(float(value), digits) + 0.0:,.{digits}f}"  # + 0.0: no "-0.0"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


class _Report:
    """fpdf2 document with the CJK font, header and footer."""

    def __init__(self, title: str, generated: str) -> None:
        from fpdf import FPDF

        from cspon_rs.exports.fonts import find_cjk_font

        found = find_cjk_font()
        if found is None:
            raise MissingDependencyError(
                "no CJK font for the PDF report: install one (Debian/Ubuntu: apt-get install fonts-noto-cjk) "
                "or set CSPON_CJK_FONT=/path/to/font.ttc")
        title_text, generated_text = title, generated

        class Doc(FPDF):  # type: ignore[misc]
            def header(self) -> None:
                self.set_font("cjk", size=8)
                self.set_text_color(90, 90, 90)
                self.cell(0, 5, title_text, align="L")
                self.cell(0, 5, "疑似图斑, 以实地核查为准 (suspected until field-checked)", align="R",
                          new_x="LMARGIN", new_y="NEXT")
                self.set_text_color(0, 0, 0)
                self.ln(2)

            def footer(self) -> None:
                self.set_y(-12)
                self.set_font("cjk", size=8)
                self.cell(0, 6, f"第 {self.page_no()} 页 / 共 {{nb}} 页    生成 {generated_text}    cspon-rs",
                          align="C")

        self.pdf = Doc(orientation="P", unit="mm", format="A4")
        self.pdf.add_font("cjk", fname=str(found.path), collection_font_number=found.index)
        bold = found.path.with_name(found.path.name.replace("Regular", "Bold"))
        self.pdf.add_font("cjk", style="B", fname=str(bold if bold.is_file() else found.path),
                          collection_font_number=found.index)
        self.pdf.set_image_filter("DCTDecode")  # JPEG inside the PDF: a 100-sheet report stays a few MB
        self.pdf.set_auto_page_break(auto=True, margin=15)
        self.pdf.set_margins(14, 12, 14)
        self.pdf.alias_nb_pages()
        #: Warning id → one caption per field photo (time, lon/lat, bearing, distance to the 图斑, who).
        self.photo_captions: Mapping[str, Sequence[str]] = {}

    def heading(self, text: str, size: int = 13) -> None:
        self.pdf.set_font("cjk", size=size)
        self.pdf.cell(0, 8, text, new_x="LMARGIN", new_y="NEXT")
        self.pdf.set_font("cjk", size=9)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[int] | None = None
              ) -> None:
        self.pdf.set_font("cjk", size=8.5)
        with self.pdf.table(col_widths=tuple(widths) if widths else None, line_height=5.2,
                            text_align="LEFT", first_row_as_headings=True) as table:
            table.row(list(header))
            for record in rows:
                table.row([str(v) for v in record])
        self.pdf.ln(2)


def write_report(
    warnings: gpd.GeoDataFrame,
    path: str | Path,
    *,
    county_code: str,
    period: str,
    chips: Mapping[str, Path] | None = None,
    overview_png: str | Path | None = None,
    before: str | Path | None = None,
    after: str | Path | None = None,
    control_lines: gpd.GeoDataFrame | None = None,
    permits: gpd.GeoDataFrame | None = None,
    sheet_ids: Sequence[str] | None = None,
    top_n: int = 6,
    schema: ExportSchema | None = None,
    photo_captions: Mapping[str, Sequence[str]] | None = None,
    photos: Mapping[str, Sequence[Path]] | None = None,
    extra_sections: Callable[[Any, pd.DataFrame], None] | None = None,
    draw_sheet: Callable[[Any, pd.Series, Path | None, list[Path]], None] | None = None,
) -> Path:
    """Write the PDF report of one period and county.

    Args:
        warnings: Warnings with field results attached (see :mod:`cspon_rs.exports.fieldresults`); legal
            rows are left out.
        path: Target ``.pdf``.
        county_code, period: Shown in the title.
        chips: Warning id → chip PNG; rendered from ``before``/``after`` when omitted and both are given.
        overview_png: Ready overview map; rendered (over ``after`` when given) when omitted.
        control_lines: Control lines for the overview map (``kind`` column).
        permits: Permit polygons, for chips rendered here.
        sheet_ids: Warnings that get a 核查表 page (default: every warning, in rank order).
        top_n: Warnings shown with chips in the 重点预警 section.
        schema: County names and time zone (default schema).
        photo_captions: Warning id → one caption per photo of ``photos`` (举证: time, lon/lat, bearing,
            distance to the 图斑, who), printed under each photo.
        photos: Warning id → field photo files (JPEG/PNG); every one is placed on its sheet, two per row.
        extra_sections: ``f(doc, rows)`` draws more pages after the top warnings, before the sheets
            (:func:`cspon_rs.exports.report_job.draw_warning_list`).
        draw_sheet: Replaces the 核查表 drawing call, same arguments as ``_sheet`` (the report job wraps it
            to downscale photos and report progress, :mod:`cspon_rs.exports.report_job`).

    Raises:
        MissingDependencyError: No CJK font is installed.
    """
    path = Path(path)
    schema = schema or load_export_schema()
    rows = warnings[warnings["is_warning"].astype(bool)] if "is_warning" in warnings.columns else warnings
    frame = tuban_frame(rows, schema)
    order = pd.to_numeric(frame["rank"], errors="coerce").fillna(1e12)
    frame = frame.assign(_o=order).sort_values(["_o", "warning_id"]).drop(columns="_o")
    county_name = f"{_county_name(schema, county_code)}（{county_code}）"  # 未配置 for a county not in the schema
    t1 = min((d for d in frame["t1"] if d is not None), default=None)
    t2 = max((d for d in frame["t2"] if d is not None), default=None)
    now = dt.datetime.now(dt.UTC).astimezone(schema.zone())
    title = f"{county_name} {period} 卫片执法图斑核查报告"
    with tempfile.TemporaryDirectory(prefix=".report.", dir=path.parent if path.parent.is_dir() else None) as tmp:
        work = Path(tmp)
        if chips is None and before is not None and after is not None:
            from cspon_rs.exports.chips import write_chips

            chips = write_chips(rows, before, after, work / "chips", permits=permits, progress=False)
        chips = dict(chips or {})
        if overview_png is None:
            overview_png = render_overview(rows, work / "overview.png", after=after, control_lines=control_lines)
        doc = _Report(title, f"{zh_date(now)} {now:%H:%M} ({schema.timezone})")  # no "CST"
        doc.photo_captions = photo_captions or {}
        pdf = doc.pdf
        pdf.add_page()
        doc.heading(title, 16)
        pdf.set_font("cjk", size=9.5)
        pdf.multi_cell(0, 5.5, f"监测期次 period {period}; 前时相 {_fmt(t1)}, 后时相 {_fmt(t2)}; "
                               f"预警图斑 {len(frame)} 宗, 面积 {frame['area_m2'].sum():,.0f} m² "
                               f"({frame['area_m2'].sum() / SQM_PER_MU:,.2f} 亩, CGCS2000 高斯-克吕格投影平面面积; "
                               f"椭球面积 {frame['ellipsoid_m2'].sum():,.0f} m²). "
                               "所有图斑均为疑似, 以实地核查结果为准.", new_x="LMARGIN", new_y="NEXT")
        pdf.image(str(overview_png), w=120, x=(210 - 120) / 2)
        pdf.ln(2)
        tables = summary_tables(rows)
        doc.heading("按类型统计 by category", 11)
        doc.table(["类型 category", "数量 count", "面积 m²", "面积 亩"],
                  [[f"{r.category_zh} {r.category}", str(r.count), _fmt(r.area_m2), _fmt(r.area_mu, 2)]
                   for r in tables["category"].itertuples()], (70, 25, 40, 40))
        doc.heading("按乡镇统计 by township", 11)
        doc.table(["乡镇 township", "数量 count", "面积 m²", "面积 亩"],
                  [[str(r.township_name), str(r.count), _fmt(r.area_m2), _fmt(r.area_mu, 2)]
                   for r in tables["township"].itertuples()], (70, 25, 40, 40))
        if "cropland" in tables:
            doc.heading("占用耕地 by township (耕地 01xx, GB/T 21010)", 11)
            doc.table(["乡镇 township", "数量 count", "面积 m²", "占用耕地 m²", "耕地占比"],
                      [[str(r.township_name), str(r.count), _fmt(r.area_m2), _fmt(r.cropland_m2),
                        f"{r.cropland_share:.1%}"] for r in tables["cropland"].itertuples()], (60, 22, 35, 35, 25))
        doc.heading("按管控线统计 by control line (涉及图斑与占用面积)", 11)
        doc.table(["管控线 control line", "图斑数 count", "占用面积 m²", "占用面积 亩"],
                  [[f"{r.control_zh} {r.control}", str(r.count), _fmt(r.area_m2), _fmt(r.area_mu, 2)]
                   for r in tables["control"].itertuples()], (70, 25, 40, 40))
        doc.heading("核查进度 verification progress", 11)
        results = frame["result_zh"].value_counts()
        doc.table(["状态 status", "数量 count"],
                  [[f"{r.status_zh} {r.status}", str(r.count)] for r in tables["status"].itertuples()]
                  + [[f"核查结果: {k}", str(v)] for k, v in results.items()], (100, 40))

        top = frame.head(top_n)
        if len(top):
            pdf.add_page()
            doc.heading(f"重点预警 top {len(top)} warnings (按优先级 by priority)", 13)
            for record in top.itertuples():
                pdf.set_font("cjk", size=9)
                pdf.multi_cell(0, 5, f"{_fmt(record.rank)}. {record.warning_id}  {record.category_zh}  "
                                     f"{record.township_name or ''}  {record.area_m2:,.0f} m² "
                                     f"({record.area_mu:.2f} 亩)  {record.reason_zh}",
                               new_x="LMARGIN", new_y="NEXT")
                chip = chips.get(str(record.warning_id))
                if chip is not None and Path(chip).is_file():
                    pdf.image(str(chip), w=110)
                pdf.ln(2)

        if extra_sections is not None:
            extra_sections(doc, frame)
        selected = list(sheet_ids) if sheet_ids is not None else list(frame["warning_id"])
        by_id = {str(r["warning_id"]): r for _, r in frame.iterrows()}
        for warning_id in selected:
            record = by_id.get(str(warning_id))
            if record is None:
                continue
            (draw_sheet or _sheet)(doc, record, chips.get(str(warning_id)),
                                   list((photos or {}).get(str(warning_id), ())))
        with atomic_path(path) as out:
            pdf.output(str(out))
    return path


def _sheet(doc: _Report, r: pd.Series, chip: Path | None, photos: list[Path]) -> None:
    pdf = doc.pdf
    pdf.add_page()
    doc.heading(SHEET_TITLE, 15)
    pdf.set_font("cjk", size=8.5)
    pairs = [
        ("图斑编号", r["warning_id"]), ("监测期次", r["period"]),
        ("行政区", f"{r['county_name'] or ''} {r['county_code'] or ''}"), ("乡镇", r["township_name"]),
        ("中心点经纬度 (CGCS2000)", f"{_fmt(r['centroid_lon'], 6)}, {_fmt(r['centroid_lat'], 6)}"),
        (f"中心点X/Y ({r['gk_epsg']})", f"X={r['gk_x']:.2f}, Y={r['gk_y']:.2f}"),
        ("前时相 / 后时相", f"{_fmt(r['t1'])} / {_fmt(r['t2'])}"),
        ("变化类型", f"{r['category_zh']} ({r['category']})"),
        ("面积 (平面, m² / 亩)", f"{_fmt(r['area_m2'], 1)} / {_fmt(r['area_mu'], 2)}"),
        ("椭球面积 (m² / 亩)", f"{_fmt(r['ellipsoid_m2'], 1)} / {_fmt(r['ellipsoid_mu'], 2)}"),
        ("占用永久基本农田 m²", _fmt(r["farmland_overlap_m2"], 1)),
        ("占用生态保护红线 m²", _fmt(r["redline_overlap_m2"], 1)),
        ("城镇开发边界外 m²", _fmt(r["outside_urban_m2"], 1)), ("批准文号", r["permit_nos"] or "—"),
        ("模型置信度 / 优先级", f"{_fmt(r['confidence'], 2)} / {_fmt(r['priority'], 1)} (排名 {_fmt(r['rank'])})"),
        ("预警原因", r["reason_zh"] or "—"),
    ]
    if r.get("landuse_zh"):  # runs with a land-use layer (warn --landuse)
        pairs.insert(11, ("地类 (前时相) / 占用耕地 m²", f"{r['landuse_zh']} / {_fmt(r['cropland_m2'], 1)}"))
    with pdf.table(col_widths=(45, 137), line_height=4.5, text_align="LEFT", first_row_as_headings=False) as table:
        for label, value in pairs:
            table.row([label, _fmt(value)])
    pdf.ln(2)
    if chip is not None and Path(chip).is_file():
        pdf.image(str(chip), w=100, x=(210 - 100) / 2)
        pdf.ln(1)
    doc.heading("实地核查 field verification", 11)
    pdf.set_font("cjk", size=8.5)
    field_rows = [
        ("处理状态", r["status_zh"]), ("核查结果", r["result_zh"]), ("实际用途", r["actual_use"]),
        ("核查组 / 核查期限", f"{_fmt(r['assigned_team'])} / {_fmt(r['due_date'])}"),
        ("核查时间", r["verified_at"]), ("核查人", r["verified_by"]), ("照片数", r["photo_count"]),
        ("备注", r["remarks"]),
    ]
    with pdf.table(col_widths=(45, 137), line_height=4.5, text_align="LEFT", first_row_as_headings=False) as table:
        for label, value in field_rows:
            table.row([label, _fmt(value)])
    texts = list(doc.photo_captions.get(str(r["warning_id"]), ()))
    shown = [(p, texts[i] if i < len(texts) else "") for i, p in enumerate(photos) if Path(p).is_file()]
    for row in range(0, len(shown), 2):  # every photo, two per row, each with its caption (举证)
        if pdf.get_y() > 214:
            pdf.add_page()  # the sheet continues on the next page rather than squeezing the photos
        top = pdf.get_y() + 2
        pdf.set_font("cjk", size=6.5)
        for k, (photo, caption) in enumerate(shown[row:row + 2]):
            pdf.image(str(photo), x=14 + k * 92, y=top, w=88, h=45, keep_aspect_ratio=True)
            pdf.set_xy(14 + k * 92, top + 46)
            pdf.multi_cell(88, 3, f"照片{row + k + 1} {caption}".strip(), new_x="RIGHT", new_y="TOP")
        pdf.set_y(top + 56)
    pdf.set_font("cjk", size=8.5)
    pdf.ln(4)
    pdf.cell(0, 7, "核查人员签字: ______________    日期: ____年__月__日    审核意见: ______________________",
             new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 7, "负责人签字: ______________    日期: ____年__月__日    单位(盖章): ______________________",
             new_x="LMARGIN", new_y="NEXT")

"""Deliverables of a period from the warning store's current state (CLI ``cspon-rs export``/``report``, API).

Everything is read at call time -- statuses, field results, teams, due dates, photo counts -- so an export
made after a verification shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import geopandas as gpd
from sqlalchemy.orm import Session

from cspon_rs.errors import ConfigError, NotFoundError
from cspon_rs.exports.schema import ExportSchema, load_export_schema

__all__ = ["EXPORT_FORMATS", "ExportFormat", "StoreExport", "export_period", "store_frame"]

ExportFormat = Literal["xlsx", "csv", "gpkg", "shp", "tuban-gpkg", "pdf"]
#: Every format :func:`export_period` writes.
EXPORT_FORMATS: tuple[str, ...] = ("xlsx", "csv", "gpkg", "shp", "tuban-gpkg", "pdf")


@dataclass
class StoreExport:
    """Files written by :func:`export_period` (format → path)."""

    files: dict[str, Path] = field(default_factory=dict)
    n_warnings: int = 0


def store_frame(session: Session, *, period: str, county_code: str | None) -> gpd.GeoDataFrame:
    """Stored warnings of a period (and county) with their field results, EPSG:4326.

    Raises:
        NotFoundError: Nothing stored for that period/county.
    """
    from cspon_rs.exports.fieldresults import attach_field_results
    from cspon_rs.store.crud import list_warnings, warnings_frame

    records = list_warnings(session, period=period, county_code=county_code, only_warnings=False, limit=None)
    if not records:
        raise NotFoundError(f"no warnings stored for period {period}" + (f", county {county_code}" if county_code
                                                                           else ""))
    return attach_field_results(warnings_frame(records), session)


def export_period(
    session: Session,
    out_dir: str | Path,
    *,
    period: str,
    county_code: str | None,
    formats: Sequence[str] = ("xlsx", "csv", "shp", "tuban-gpkg"),
    out_crs: str = "auto-gk",
    encoding: str = "UTF-8",
    gpkg_version: Literal["1.2", "1.3"] = "1.2",
    schema: ExportSchema | str | Path | None = None,
    chips_dir: str | Path | None = None,
    before: str | Path | None = None,
    after: str | Path | None = None,
    control_lines: gpd.GeoDataFrame | None = None,
    sheet_ids: Sequence[str] | None = None,
) -> StoreExport:
    """Write the chosen deliverables of one period into ``out_dir``.

    Names: ``warnings_<county>_<period>.xlsx|csv|gpkg``, ``tuban/tuban_<county>_<period>.gpkg``,
    ``tuban/tuban_<county>_<period>.shp`` (+ .shx/.dbf/.prj/.cpg/.txt), ``report_<county>_<period>.pdf``.

    Args:
        chips_dir: Folder of ``<warning_id>.png`` chips to link from the lists and place in the report.
        before, after: Scenes to render chips for the report when ``chips_dir`` has none.

    Raises:
        ConfigError: Unknown format; NotFoundError: nothing stored.
    """
    from cspon_rs.exports.layers import write_tuban
    from cspon_rs.exports.lists import write_warning_csv, write_warning_gpkg, write_warning_xlsx

    bad = [f for f in formats if f not in EXPORT_FORMATS]
    if bad:
        raise ConfigError(f"--format {','.join(bad)}: unknown; use any of {','.join(EXPORT_FORMATS)}")
    spec = schema if isinstance(schema, ExportSchema) else load_export_schema(schema)
    frame = store_frame(session, period=period, county_code=county_code)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    county = county_code or "all"
    stem = f"{county}_{period}"
    chips = ({p.stem: p for p in Path(chips_dir).glob("*.png")} if chips_dir is not None and Path(chips_dir).is_dir()
             else {})
    title = f"{county} {period} 疑似违法用地预警清单 suspected-violation list"
    result = StoreExport(n_warnings=int(frame["is_warning"].astype(bool).sum()))
    for fmt in formats:
        if fmt == "xlsx":
            result.files[fmt] = write_warning_xlsx(frame, out / f"warnings_{stem}.xlsx", title=title, chips=chips,
                                                   schema=spec)
        elif fmt == "csv":
            result.files[fmt] = write_warning_csv(frame, out / f"warnings_{stem}.csv", chips=chips, schema=spec)
        elif fmt == "gpkg":
            result.files[fmt] = write_warning_gpkg(frame, out / f"warnings_{stem}.gpkg")
        elif fmt == "shp":
            result.files[fmt] = write_tuban(frame, out / "tuban" / f"tuban_{stem}.shp", schema=spec, out_crs=out_crs,
                                            encoding=encoding)
        elif fmt == "tuban-gpkg":
            result.files[fmt] = write_tuban(frame, out / "tuban" / f"tuban_{stem}.gpkg", schema=spec, out_crs=out_crs,
                                            gpkg_version=gpkg_version)
        elif fmt == "pdf":
            from cspon_rs.exports.report import write_report

            result.files[fmt] = write_report(
                frame, out / f"report_{stem}.pdf", county_code=county, period=period,
                chips=chips or None, before=before, after=after, control_lines=control_lines,
                sheet_ids=sheet_ids, schema=spec,
            )
    return result

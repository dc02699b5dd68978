"""Patrol routes for field teams (KML/GPX/GeoJSON/JSON) and the bureau deliverables of a period: the
quarterly list (XLSX/CSV/GPKG), the 图斑 layer (zipped Shapefile with .cpg, GeoPackage 1.2/1.3) and the PDF
report -- all from the store's current state, field results included."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask

from cspon_rs.api.deps import SessionDep, SettingsDep, error_detail, require_roles
from cspon_rs.api.routers.warnings import scoped_county, warning_out
from cspon_rs.api.schemas import WarningOut
from cspon_rs.errors import NotFoundError
from cspon_rs.store.api_models import ApiUser

patrol_router = APIRouter(prefix="/patrols", tags=["patrols"])
export_router = APIRouter(prefix="/exports", tags=["exports"])

PeriodQuery = Annotated[str, Query(min_length=1, max_length=16, description="e.g. 2018Q1")]
CountyQuery = Annotated[str | None, Query(max_length=12, description="6-digit county code (yours by default)")]
OutCrsQuery = Annotated[str, Query(max_length=32, description="auto-gk | scene | EPSG:4490 | EPSG:45xx")]
PatrolUser = Annotated[ApiUser, Depends(require_roles("field", "bureau"))]
ExportUser = Annotated[ApiUser, Depends(require_roles("bureau", "researcher"))]

_MEDIA = {
    "kml": "application/vnd.google-earth.kml+xml",
    "kmz": "application/vnd.google-earth.kmz",
    "gpx": "application/gpx+xml",
    "geojson": "application/geo+json",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv; charset=utf-8",
    "gpkg": "application/geopackage+sqlite3",
    "zip": "application/zip",
    "pdf": "application/pdf",
}


class PatrolOut(BaseModel):
    """Patrol targets in visiting order from the start point."""

    team: str
    start: tuple[float, float]
    length_m: float
    #: True: ordered and measured over the county's road layer; False: straight lines between the stops.
    along_roads: bool = False
    #: Photos the phone sends: ``downscaled`` (long edge 2048 px, JPEG, EXIF kept) or ``original``.
    photo_mode: Literal["downscaled", "original"] = "downscaled"
    stops: list[WarningOut]


def _chips(session: SessionDep, settings: SettingsDep, records: list[Any]) -> dict[str, Path]:
    """Before/after chip of each record, for a KMZ or the report (records whose scenes are gone go without)."""
    from cspon_rs.api.chips import chip_for_warning

    chips: dict[str, Path] = {}
    for record in records:
        try:
            chips[record.id] = chip_for_warning(session, record, settings.data_dir / "chips")
        except NotFoundError:
            continue
    return chips


def _period_rows(user: ApiUser, session: SessionDep, period: str, county_code: str | None) -> tuple[str | None, Any]:
    """The caller's county (403 for another one) and the period's stored rows with their field results."""
    from cspon_rs.exports.bundle import store_frame

    county = scoped_county(user, county_code)
    frame = store_frame(session, period=period, county_code=county)
    session.commit()
    return county, frame


def _scratch(settings: SettingsDep) -> Path:
    folder = Path(settings.data_dir) / "tmp" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return folder


def _file(path: Path, fmt: str, folder: Path) -> FileResponse:
    return FileResponse(
        path,
        media_type=_MEDIA[fmt],
        filename=path.name,
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )


@patrol_router.get(
    "/{team}",
    summary="A team's assigned, unverified warnings ordered into a route",
    response_model=PatrolOut,
    responses={200: {"content": {_MEDIA["kml"]: {}, _MEDIA["gpx"]: {}, _MEDIA["geojson"]: {}}}},
)
def patrol(
    team: str,
    user: PatrolUser,
    session: SessionDep,
    settings: SettingsDep,
    start_lon: Annotated[float, Query(ge=-180, le=180, description="start longitude, EPSG:4326")],
    start_lat: Annotated[float, Query(ge=-90, le=90, description="start latitude, EPSG:4326")],
    format: Annotated[Literal["json", "kml", "kmz", "gpx", "geojson"], Query()] = "json",
    period: Annotated[str | None, Query(max_length=16)] = None,
    county_code: CountyQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Any:
    """Field users may only ask for their own team. The route visits the highest-priority ``limit`` targets
    in nearest-neighbour + 2-opt order from the start point."""
    from cspon_rs.exports.patrol import write_patrol
    from cspon_rs.store.crud import list_warnings, warnings_frame

    if user.role == "field" and team != user.team:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=error_detail("team", f"user {user.name!r} belongs to team {user.team!r}", "path"),
        )
    county = scoped_county(user, county_code)
    records = [
        w
        for w in list_warnings(
            session, period=period, county_code=county, status="assigned", only_warnings=False, limit=None
        )
        if w.assigned_team == team
    ][:limit]
    session.commit()
    if not records:
        raise NotFoundError(
            f"team {team!r} has no assigned, unverified warnings" + (f" in county {county}" if county else "")
        )
    chips = _chips(session, settings, records) if format == "kmz" else {}
    photos = _photos_with_captions(session, settings, [r.id for r in records]) if format == "kmz" else {}
    folder = _scratch(settings)
    suffix = "geojson" if format == "json" else format
    result = write_patrol(
        warnings_frame(records),
        folder / f"patrol_{_safe(team)}.{suffix}",
        start_lonlat=(start_lon, start_lat),
        fmt=suffix,  # type: ignore[arg-type]
        chips=chips,
        roads=_road_layer(settings, records[0].county_code),
        photos=photos,
    )
    if format != "json":
        return _file(result.path, format, folder)
    shutil.rmtree(folder, ignore_errors=True)
    by_id = {r.id: r for r in records}
    return PatrolOut(
        team=team,
        start=(start_lon, start_lat),
        length_m=result.length_m,
        along_roads=result.along_roads,
        photo_mode="original" if records[0].county_code in settings.photo_originals else "downscaled",
        stops=[warning_out(by_id[i]) for i in result.order if i in by_id],
    )


@export_router.get(
    "/warnings.{fmt}",
    summary="The warning list of a period as XLSX, CSV or GeoPackage",
    response_class=FileResponse,
    responses={200: {"content": {_MEDIA["xlsx"]: {}, _MEDIA["csv"]: {}, _MEDIA["gpkg"]: {}}}},
)
def export_list(
    fmt: Literal["xlsx", "csv", "gpkg"],
    user: ExportUser,
    session: SessionDep,
    settings: SettingsDep,
    period: PeriodQuery,
    county_code: CountyQuery = None,
) -> FileResponse:
    """Same writers (and columns) as the files ``cspon-rs warn`` puts next to its run, from the store's
    current state (statuses and verification results included)."""
    from cspon_rs.exports.lists import write_warning_csv, write_warning_gpkg, write_warning_xlsx

    county, frame = _period_rows(user, session, period, county_code)
    folder = _scratch(settings)
    path = folder / f"warnings_{_safe(county or 'all')}_{_safe(period)}.{fmt}"
    if fmt == "xlsx":
        write_warning_xlsx(
            frame, path, title=f"{county or 'all'} {period} 疑似违法用地预警清单 suspected-violation list"
        )
    elif fmt == "csv":
        write_warning_csv(frame, path)
    else:
        write_warning_gpkg(frame, path)
    return _file(path, fmt, folder)


@export_router.get(
    "/tuban.zip",
    summary="The 图斑 layer of a period as a zipped ESRI Shapefile (.shp/.shx/.dbf/.prj/.cpg + field notes)",
    response_class=FileResponse,
    responses={200: {"content": {_MEDIA["zip"]: {}}}},
)
def export_tuban_shapefile(
    user: ExportUser,
    session: SessionDep,
    settings: SettingsDep,
    period: PeriodQuery,
    county_code: CountyQuery = None,
    out_crs: OutCrsQuery = "auto-gk",
    encoding: Annotated[Literal["UTF-8", "GBK"], Query(description="DBF encoding written to the .cpg")] = "UTF-8",
) -> FileResponse:
    """Chinese 卫片执法 field codes (TBBH, XZQDM, ...; schema ``configs/export_fields.yaml``), planar GK and
    ellipsoidal areas, field results from the store."""
    from cspon_rs.exports.layers import write_tuban, zip_shapefile

    county, frame = _period_rows(user, session, period, county_code)
    folder = _scratch(settings)
    stem = f"tuban_{_safe(county or 'all')}_{_safe(period)}"
    shp = write_tuban(frame, folder / "shp" / f"{stem}.shp", out_crs=out_crs, encoding=encoding)
    return _file(zip_shapefile(shp, folder / f"{stem}.zip"), "zip", folder)


@export_router.get(
    "/tuban.gpkg",
    summary="The 图斑 layer of a period as a GeoPackage (version 1.2 or 1.3, Chinese field names)",
    response_class=FileResponse,
    responses={200: {"content": {_MEDIA["gpkg"]: {}}}},
)
def export_tuban_gpkg(
    user: ExportUser,
    session: SessionDep,
    settings: SettingsDep,
    period: PeriodQuery,
    county_code: CountyQuery = None,
    out_crs: OutCrsQuery = "auto-gk",
    gpkg_version: Annotated[Literal["1.2", "1.3"], Query()] = "1.2",
) -> FileResponse:
    """Same fields as the Shapefile, named by their Chinese aliases; the area method is in the layer metadata."""
    from cspon_rs.exports.layers import write_tuban

    county, frame = _period_rows(user, session, period, county_code)
    folder = _scratch(settings)
    path = folder / f"tuban_{_safe(county or 'all')}_{_safe(period)}.gpkg"
    write_tuban(frame, path, out_crs=out_crs, gpkg_version=gpkg_version)
    return _file(path, "gpkg", folder)


@export_router.get(
    "/report.pdf",
    summary="The PDF report of a small period or selection, inline (county lists: POST /exports/report-jobs)",
    response_class=FileResponse,
    responses={200: {"content": {_MEDIA["pdf"]: {}}},
               413: {"description": "too many warnings or sheets for an inline report: submit a report job"}},
)
def export_report(
    user: ExportUser,
    session: SessionDep,
    settings: SettingsDep,
    period: PeriodQuery,
    county_code: CountyQuery = None,
    ids: Annotated[str | None, Query(max_length=4000, description="comma-separated ids for 核查表 pages")] = None,
    top: Annotated[int, Query(ge=0, le=50)] = 6,
) -> FileResponse:
    """Same pages as the report job (overview, tables, every warning listed, 核查表 pages with every photo
    downscaled for print). Without ``ids`` every warning gets a 核查表. Answered inline only up to
    ``SYNC_MAX_WARNINGS`` warnings in the period and ``SYNC_MAX_SHEETS`` sheets; beyond that ``413`` --
    ``POST /exports/report-jobs`` makes the report in the job worker."""
    from cspon_rs.api.report_service import SYNC_MAX_SHEETS, SYNC_MAX_WARNINGS, collect_inputs
    from cspon_rs.exports.report_job import write_print_report
    from cspon_rs.store.crud import count_warnings

    county = scoped_county(user, county_code)
    selected = list(dict.fromkeys(i.strip() for i in ids.split(",") if i.strip())) if ids else None
    total = count_warnings(session, period=period, county_code=county, only_warnings=True)
    sheets = len(selected) if selected is not None else total
    if total > SYNC_MAX_WARNINGS or sheets > SYNC_MAX_SHEETS:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=error_detail("period" if sheets <= SYNC_MAX_SHEETS else "ids",
                                f"{total} warnings and {sheets} 核查表 sheets are too many for an inline report "
                                f"(at most {SYNC_MAX_WARNINGS} warnings and {SYNC_MAX_SHEETS} sheets): "
                                "POST /api/v1/exports/report-jobs makes it as a job", "query"),
        )
    inputs = collect_inputs(session, settings, county=county, period=period, ids=selected,
                            sheets=sheets, top=top)
    session.commit()
    folder = _scratch(settings)
    path = folder / f"report_{_safe(county or 'all')}_{_safe(period)}.pdf"
    write_print_report(inputs.frame, path, county_code=county or "all", period=period, work_dir=folder / "work",
                       sheet_ids=inputs.sheet_ids, chips=inputs.chips, photos=inputs.photos,
                       photo_captions=inputs.captions, top_n=top)
    return _file(path, "pdf", folder)


def _photos_with_captions(
    session: SessionDep, settings: SettingsDep, ids: list[str]
) -> dict[str, list[tuple[Path, str]]]:
    """Field photos of each warning with their evidence captions (for a KMZ); only files inside the data
    directory, as ``GET /warnings/{id}/photos/{photo_id}`` serves them."""
    from cspon_rs.api.photos import photo_captions
    from cspon_rs.exports.schema import load_export_schema
    from cspon_rs.store.api_crud import list_photos

    root = Path(settings.data_dir).resolve()
    captions = photo_captions(session, ids, load_export_schema().zone())
    out: dict[str, list[tuple[Path, str]]] = {}
    for wid in ids:
        files = [(root / p.path).resolve() for p in list_photos(session, wid)]
        out[wid] = [(f, c) for f, c in zip(files, captions[wid], strict=True) if f.is_relative_to(root) and f.is_file()]
    return out


def _road_layer(settings: SettingsDep, county: str | None) -> Path | None:
    """The county's road layer from the settings (``road_layers``), when configured and present."""
    path = settings.road_layers.get(county or "")
    return path if path is not None and Path(path).is_file() else None


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text) or "x"


routers = [patrol_router, export_router]

"""Patrol routes for field teams (KML/GPX/GeoJSON/JSON) and the quarterly warning list (XLSX/CSV/GPKG)."""

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

PatrolUser = Annotated[ApiUser, Depends(require_roles("field", "bureau"))]
ExportUser = Annotated[ApiUser, Depends(require_roles("bureau", "researcher"))]

_MEDIA = {
    "kml": "application/vnd.google-earth.kml+xml",
    "gpx": "application/gpx+xml",
    "geojson": "application/geo+json",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv; charset=utf-8",
    "gpkg": "application/geopackage+sqlite3",
}


class PatrolOut(BaseModel):
    """Patrol targets in visiting order from the start point."""

    team: str
    start: tuple[float, float]
    length_m: float
    stops: list[WarningOut]


def _scratch(settings: SettingsDep) -> Path:
    folder = settings.data_dir / "tmp" / uuid.uuid4().hex
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
    format: Annotated[Literal["json", "kml", "gpx", "geojson"], Query()] = "json",
    period: Annotated[str | None, Query(max_length=16)] = None,
    county_code: Annotated[str | None, Query(max_length=12)] = None,
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
    folder = _scratch(settings)
    suffix = "geojson" if format == "json" else format
    result = write_patrol(
        warnings_frame(records),
        folder / f"patrol_{_safe(team)}.{suffix}",
        start_lonlat=(start_lon, start_lat),
        fmt=suffix,
    )  # type: ignore[arg-type]
    if format != "json":
        return _file(result.path, format, folder)
    shutil.rmtree(folder, ignore_errors=True)
    by_id = {r.id: r for r in records}
    return PatrolOut(
        team=team,
        start=(start_lon, start_lat),
        length_m=result.length_m,
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
    period: Annotated[str, Query(min_length=1, max_length=16, description="e.g. 2018Q1")],
    county_code: Annotated[str | None, Query(max_length=12)] = None,
) -> FileResponse:
    """Same writers (and columns) as the files ``cspon-rs warn`` puts next to its run, from the store's
    current state (statuses and verification results included)."""
    from cspon_rs.exports.lists import write_warning_csv, write_warning_gpkg, write_warning_xlsx
    from cspon_rs.store.crud import list_warnings, warnings_frame

    county = scoped_county(user, county_code)
    records = list_warnings(session, period=period, county_code=county, only_warnings=False, limit=None)
    session.commit()
    if not records:
        raise NotFoundError(
            f"no warnings stored for period {period}" + (f", county {county}" if county else "")
        )
    frame = warnings_frame(records)
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


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text) or "x"


routers = [patrol_router, export_router]

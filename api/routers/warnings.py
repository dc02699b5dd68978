"""Warnings: list (JSON / GeoJSON), detail, assignment, status, field verification with photos, statistics,
training negatives.

Region scoping: a user bound to a county sees and changes only that county's warnings (others answer 404,
as if they did not exist); a field user sees only warnings assigned to their team.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from pydantic import AwareDatetime
from shapely import wkt as shapely_wkt
from shapely.geometry import mapping

from cspon_rs.api.deps import CurrentUser, SessionDep, SettingsDep, error_detail, require_roles
from cspon_rs.api.photos import Capture, parse_capture, parse_track, photo_evidence
from cspon_rs.api.schemas import (
    MAX_ID,
    AssignIn,
    HistoryOut,
    PhotoOut,
    StatRow,
    StatusIn,
    VerificationCreated,
    VerificationOut,
    WarningDetail,
    WarningOut,
    WarningPage,
)
from cspon_rs.api.uploads import SavedFile, save_upload
from cspon_rs.errors import SchemaError
from cspon_rs.store.api_models import ApiUser, Photo
from cspon_rs.store.crud import MAX_ACCURACY_M, field_time
from cspon_rs.store.models import WarningRecord

router = APIRouter(prefix="/warnings", tags=["warnings"])
stats_router = APIRouter(tags=["statistics"])

BureauUser = Annotated[ApiUser, Depends(require_roles("bureau"))]
FieldUser = Annotated[ApiUser, Depends(require_roles("field"))]
AnalystUser = Annotated[ApiUser, Depends(require_roles("bureau", "researcher"))]

GEOJSON = "application/geo+json"


# ------------------------------------------------------------------------------------------- scoping


def scoped_county(user: ApiUser, requested: str | None) -> str | None:
    """The county filter to apply: the user's own when bound (403 if they asked for another)."""
    if user.county_code is None:
        return requested
    if requested is not None and requested != user.county_code:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=error_detail(
                "county_code",
                f"user {user.name!r} is limited to county {user.county_code}, not {requested}",
                "query",
            ),
        )
    return user.county_code


def visible_warning(session: SessionDep, user: ApiUser, warning_id: str) -> WarningRecord:
    """The warning if the user may see it; 404 otherwise (also when it is outside their county/team)."""
    from cspon_rs.errors import NotFoundError
    from cspon_rs.store.crud import get_warning

    try:
        record: WarningRecord | None = get_warning(session, warning_id)
    except NotFoundError:
        record = None
    # One answer for "missing" and "not yours": a different body would let ids of other counties be enumerated.
    hidden = record is None or (user.county_code is not None and record.county_code != user.county_code) or (
        user.role == "field" and (user.team is None or record.assigned_team != user.team)
    )
    if hidden or record is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=error_detail("warning_id", f"warning {warning_id!r} not found", "path"),
        )
    return record


def _categories(values: list[str] | None) -> list[str] | None:
    """Category filter values as stored: a code (``built_before_approval``) or its Chinese name (未批先建)
    selects both spellings; anything else is a 422 naming the choices (it used to match nothing, silently)."""
    if not values:
        return None
    from cspon_rs.rules.config import CATEGORIES, CATEGORY_ZH

    by_zh = {zh: code for code, zh in CATEGORY_ZH.items()}
    out: list[str] = []
    for value in values:
        code = value if value in CATEGORIES else by_zh.get(value)
        if code is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=error_detail(
                    "category",
                    f"unknown category {value[:40]!r}; use one of {list(CATEGORIES)} or their Chinese names "
                    f"{list(CATEGORY_ZH.values())}",
                    "query",
                ),
            )
        out += [code, CATEGORY_ZH[code]]
    return out


def _bbox(raw: str | None) -> tuple[float, float, float, float] | None:
    if raw is None:
        return None
    try:
        parts = tuple(float(p) for p in raw.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4 or not all(abs(v) <= 180 for v in parts) or parts[0] > parts[2] or parts[1] > parts[3]:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail(
                "bbox", f"expected 'min_lon,min_lat,max_lon,max_lat' in EPSG:4326, got {raw!r}", "query"
            ),
        )
    return parts  # type: ignore[return-value]


def warning_out(record: WarningRecord) -> WarningOut:
    """List-view schema of a stored warning."""
    data = {name: getattr(record, name) for name in WarningOut.model_fields if name != "bbox"}
    return WarningOut(**data, bbox=[record.minx, record.miny, record.maxx, record.maxy])


def _photo_out(request: Request, photo: Photo, by: str | None = None) -> PhotoOut:
    url = str(request.url_for("get_photo", warning_id=photo.warning_id, photo_id=photo.id).path)
    return PhotoOut(
        id=photo.id,
        content_type=photo.content_type,
        size=photo.size,
        sha256=photo.sha256,
        url=url,
        verification_id=photo.verification_id,
        taken_at=photo.taken_at,
        lon=photo.lon,
        lat=photo.lat,
        position_source=photo.position_source,
        bearing_deg=photo.bearing_deg,
        bearing_source=photo.bearing_source,
        distance_m=photo.distance_m,
        flags=[f for f in (photo.flags or "").split(",") if f],
        by=by,
    )


class _Filters:
    """Query parameters shared by the list views."""

    def __init__(
        self,
        period: Annotated[str | None, Query(max_length=16, description="e.g. 2018Q1")] = None,
        county_code: Annotated[str | None, Query(max_length=12)] = None,
        township_code: Annotated[str | None, Query(max_length=12)] = None,
        category: Annotated[
            list[str] | None,
            Query(max_length=64, description="repeatable: a category code (built_before_approval) or 未批先建"),
        ] = None,
        status_: Annotated[
            list[Literal["new", "desk_excluded", "to_field", "assigned", "verified", "closed"]] | None,
            Query(alias="status"),
        ] = None,
        min_priority: Annotated[float | None, Query(ge=0, le=1e9)] = None,
        bbox: Annotated[str | None, Query(description="min_lon,min_lat,max_lon,max_lat (EPSG:4326)")] = None,
        only_warnings: Annotated[bool, Query(description="leave out legal rows")] = True,
        limit: Annotated[int, Query(ge=1, le=5000)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    ) -> None:
        self.period = period
        self.county_code = county_code
        self.township_code = township_code
        self.category = _categories(category)
        self.status = status_
        self.min_priority = min_priority
        self.bbox = _bbox(bbox)
        self.only_warnings = only_warnings
        self.limit = limit
        self.offset = offset


Filters = Annotated[_Filters, Depends()]


def query_warnings(session: SessionDep, user: ApiUser, f: _Filters) -> tuple[list[WarningRecord], int]:
    """Warnings matching ``f`` that ``user`` may see, one page, plus the total count."""
    from cspon_rs.store.crud import count_warnings, list_warnings

    filters: dict[str, Any] = {
        "period": f.period,
        "county_code": scoped_county(user, f.county_code),
        "township_code": f.township_code,
        "category": f.category,
        "status": f.status,
        "min_priority": f.min_priority,
        "bbox": f.bbox,
        "only_warnings": f.only_warnings,
    }
    if user.role == "field":
        rows = [
            w
            for w in list_warnings(session, limit=None, **filters)
            if user.team is not None and w.assigned_team == user.team
        ]
        return rows[f.offset : f.offset + f.limit], len(rows)
    page = list_warnings(session, limit=f.limit, offset=f.offset, **filters)
    if f.offset == 0 and len(page) < f.limit:
        return page, len(page)
    return page, count_warnings(session, **filters)


def feature_collection(records: list[WarningRecord], **extra: Any) -> dict[str, Any]:
    """GeoJSON FeatureCollection (EPSG:4326) of warnings with their list-view properties."""
    features = [
        {
            "type": "Feature",
            "id": r.id,
            "geometry": mapping(shapely_wkt.loads(r.geometry_wkt)),
            "properties": warning_out(r).model_dump(mode="json"),
        }
        for r in records
    ]
    return {"type": "FeatureCollection", "features": features, **extra}


# --------------------------------------------------------------------------------------------- reads


@router.get("", response_model=WarningPage, summary="List warnings (filters + pagination)")
def list_view(user: CurrentUser, session: SessionDep, f: Filters) -> WarningPage:
    """Highest priority first. Bureau/researcher users see their county; field users their team's."""
    rows, total = query_warnings(session, user, f)
    return WarningPage(items=[warning_out(r) for r in rows], total=total, limit=f.limit, offset=f.offset)


@stats_router.get(
    "/warnings.geojson",
    tags=["warnings"],
    summary="List warnings as a GeoJSON FeatureCollection (EPSG:4326)",
    responses={200: {"content": {GEOJSON: {}}}},
)
def list_geojson(user: CurrentUser, session: SessionDep, f: Filters) -> Response:
    """Same filters as ``GET /warnings``; ``numberMatched`` is the total, ``features`` one page."""
    rows, total = query_warnings(session, user, f)
    body = feature_collection(rows, numberMatched=total, numberReturned=len(rows))
    return Response(json.dumps(body, ensure_ascii=False), media_type=GEOJSON)


@router.get(
    "/{warning_id}", response_model=WarningDetail, summary="One warning with history, reasons, permits"
)
def detail(warning_id: str, user: CurrentUser, session: SessionDep, request: Request) -> WarningDetail:
    """Everything about one warning: geometry, reasons, permits, history, verifications, photos, chip URLs."""
    from cspon_rs.store.api_crud import list_photos

    record = visible_warning(session, user, warning_id)
    base = warning_out(record).model_dump()
    chips = {"before_after": str(request.url_for("get_chip", warning_id=record.id).path)}
    return WarningDetail(
        **base,
        source_key=record.source_key,
        patch_id=record.patch_id,
        reasons=record.reasons or [],
        permits=record.permits or [],
        covered_m2=record.covered_m2,
        excess_m2=record.excess_m2,
        farmland_overlap_m2=record.farmland_overlap_m2,
        redline_overlap_m2=record.redline_overlap_m2,
        outside_urban_m2=record.outside_urban_m2,
        rule_set_version=record.rule_set_version,
        linked_ids=record.linked_ids or [],
        seen_periods=record.seen_periods or [],
        geometry=mapping(shapely_wkt.loads(record.geometry_wkt)),
        history=[HistoryOut.model_validate(h) for h in record.history],
        verifications=[VerificationOut.model_validate(v) for v in record.verifications],
        photos=[_photo_out(request, p, by={v.id: v.by for v in record.verifications}.get(p.verification_id or 0))
                for p in list_photos(session, record.id)],
        chip_urls=chips,
    )


@router.get(
    "/{warning_id}/verifications/{verification_id}/track.gpx",
    name="get_track",
    summary="The GPS track recorded with a verification, as GPX 1.1",
    response_class=FileResponse,
    responses={200: {"content": {"application/gpx+xml": {}}}},
)
def get_track(
    warning_id: str,
    verification_id: Annotated[int, PathParam(ge=1, le=MAX_ID)],
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
) -> FileResponse:
    """One ``<trk>`` of the points the phone recorded during the patrol (404 when none was recorded)."""
    import shutil
    import uuid

    from starlette.background import BackgroundTask

    from cspon_rs.exports.patrol import write_track_gpx
    from cspon_rs.store.models import Verification

    record = visible_warning(session, user, warning_id)
    found = session.get(Verification, verification_id)
    session.commit()
    if found is None or found.warning_id != record.id or not found.track_json:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=error_detail("verification_id", "no track with this check", "path")
        )
    folder = settings.data_dir / "tmp" / uuid.uuid4().hex
    path = write_track_gpx(json.loads(found.track_json), folder / f"track_{_safe_segment(record.id)}_"
                           f"{verification_id}.gpx", name=f"{record.id} 巡查轨迹 track ({found.by or ''})")
    return FileResponse(path, media_type="application/gpx+xml", filename=path.name,
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))


@router.get(
    "/{warning_id}/photos/{photo_id}",
    name="get_photo",
    summary="Download a field photo",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}},
)
def get_photo(
    warning_id: str,
    photo_id: Annotated[int, PathParam(ge=1, le=MAX_ID)],
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
) -> FileResponse:
    """The stored photo file."""
    record = visible_warning(session, user, warning_id)
    photo = session.get(Photo, photo_id)
    if photo is None or photo.warning_id != record.id:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=error_detail("photo_id", "no such photo", "path")
        )
    path = (settings.data_dir / photo.path).resolve()
    if not path.is_relative_to(settings.data_dir.resolve()) or not path.is_file():
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=error_detail("photo_id", "photo file missing", "path")
        )
    return FileResponse(path, media_type=photo.content_type)


@router.get(
    "/{warning_id}/chip.png",
    name="get_chip",
    summary="Before/after image chip (PNG)",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}},
)
def get_chip(warning_id: str, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """Before and after panels around the warning with its outline (rendered once, then cached).
    404 when the warning has no stored scenes."""
    from cspon_rs.api.chips import chip_for_warning

    record = visible_warning(session, user, warning_id)
    path = chip_for_warning(session, record, settings.data_dir / "chips")
    return FileResponse(path, media_type="image/png")


# -------------------------------------------------------------------------------------------- writes


@router.post("/{warning_id}/assign", response_model=WarningOut, summary="Assign to a field team (bureau)")
def assign(warning_id: str, body: AssignIn, user: BureauUser, session: SessionDep) -> WarningOut:
    """``new → assigned`` (or re-assign). Send ``expected_version`` to refuse a stale change (409)."""
    from cspon_rs.store.crud import assign_warning

    visible_warning(session, user, warning_id)
    record = assign_warning(
        session,
        warning_id,
        team=body.team,
        due_date=body.due_date,
        by=user.name,
        expected_version=body.expected_version,
    )
    return warning_out(record)


@router.post("/{warning_id}/status", response_model=WarningOut, summary="Change status (bureau)")
def set_status(warning_id: str, body: StatusIn, user: BureauUser, session: SessionDep) -> WarningOut:
    """Lifecycle: new → assigned → verified → closed (verified only via a verification). Bad moves → 422."""
    from cspon_rs.store.crud import change_status

    visible_warning(session, user, warning_id)
    record = change_status(
        session,
        warning_id,
        body.to_status,
        by=user.name,
        why=body.why,
        expected_version=body.expected_version,
    )
    return warning_out(record)


@router.post(
    "/{warning_id}/verifications",
    response_model=VerificationCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Post a field verification with photos (field team)",
)
async def verify(
    warning_id: str,
    request: Request,
    user: FieldUser,
    session: SessionDep,
    settings: SettingsDep,
    result: Annotated[Literal["illegal", "legal", "false_change"], Form()],
    expected_version: Annotated[int, Form(ge=1, le=MAX_ID, description="the warning version you saw")],
    actual_use: Annotated[str | None, Form(max_length=128)] = None,
    reason: Annotated[str | None, Form(max_length=2000)] = None,
    notes: Annotated[str | None, Form(max_length=10000)] = None,
    lon: Annotated[float | None, Form(ge=-180, le=180, description="GPS longitude, EPSG:4326")] = None,
    lat: Annotated[float | None, Form(ge=-90, le=90, description="GPS latitude, EPSG:4326")] = None,
    observed_at: Annotated[
        AwareDatetime | None, Form(description="when the check was made (ISO 8601 with an offset or Z; none: 422)")
    ] = None,
    accuracy_m: Annotated[
        float | None,
        Form(ge=0, le=MAX_ACCURACY_M, allow_inf_nan=False, description="GPS accuracy radius of lon/lat, metres"),
    ] = None,
    heading_deg: Annotated[
        float | None,
        Form(ge=0, le=360, allow_inf_nan=False, description="direction the device faced, degrees from north"),
    ] = None,
    position_at: Annotated[
        str | None, Form(max_length=64, description="when the position fix was taken (ISO 8601 with offset or Z)")
    ] = None,
    recorded_at: Annotated[
        str | None, Form(max_length=64, description="device time of the check (ISO 8601 with offset or Z)")
    ] = None,
    photo_times: Annotated[
        list[str] | None,
        Form(description="file time of each photo, in the order of `photos` (ISO 8601 with offset or Z; "
                         "'' = unknown); EXIF DateTimeOriginal in the file wins"),
    ] = None,
    photo_capture: Annotated[
        list[str] | None,
        Form(description="per photo, in the order of `photos`: the phone's fix and compass when it was added, "
                         "JSON {\"lon\", \"lat\", \"heading\"} or ''; EXIF GPS / GPSImgDirection in the file win"),
    ] = None,
    track: Annotated[
        str | None,
        Form(max_length=2_000_000, description="GPS track of the patrol, JSON [[lon, lat, iso_time], ...]"),
    ] = None,
    photos: Annotated[list[UploadFile] | None, File(description="JPEG or PNG photos")] = None,
) -> VerificationCreated:
    """Moves the warning ``assigned → verified`` and keeps history. Two verifications based on the same
    version: the first wins, the second gets 409. Photos are checked by magic bytes and size.

    Capture details (``accuracy_m``, ``heading_deg``, ``position_at``, ``recorded_at``, ``photo_times``) are
    optional; times must carry a UTC offset, be after 2000-01-01 and at most 10 minutes ahead of the server."""
    from cspon_rs.store.crud import get_warning, record_verification

    position_time = _form_time("position_at", position_at)
    recorded_time = _form_time("recorded_at", recorded_at)
    if (accuracy_m is not None or position_time is not None) and lon is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail("accuracy_m" if accuracy_m is not None else "position_at",
                                "describes the position: give lon and lat too"),
        )

    def _check() -> WarningRecord:
        found = visible_warning(session, user, warning_id)
        session.commit()  # release the SQLite lock before files stream in
        return found

    # Database work runs in the thread pool, never on the event loop (SQLite waits would block it).
    record = await run_in_threadpool(_check)
    uploads = [p for p in (photos or []) if p.filename or p.size]
    if len(uploads) > settings.max_photos:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail("photos", f"at most {settings.max_photos} photos per verification"),
        )
    if (lon is None) != (lat is None):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail("lat" if lat is None else "lon", "give both lon and lat or neither"),
        )
    times = list(photo_times or [])
    if times and len(times) != len(uploads):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail("photo_times", f"{len(times)} times for {len(uploads)} photos: give one per photo "
                                               "('' when unknown) or none"),
        )
    file_times = [_form_time("photo_times", t) for t in times] or [None] * len(uploads)
    captures_raw = list(photo_capture or [])
    if captures_raw and len(captures_raw) != len(uploads):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail("photo_capture", f"{len(captures_raw)} values for {len(uploads)} photos: give one "
                                                 "per photo ('' when unknown) or none"),
        )
    try:
        captures = [parse_capture(c) for c in captures_raw] or [Capture()] * len(uploads)
        track_json = parse_track(track)
    except SchemaError as exc:
        field = "track" if str(exc).startswith("track") else "photo_capture"
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=error_detail(field, str(exc))) from None
    # EXIF times carry no offset unless OffsetTimeOriginal is set: read them in the device's zone
    zone = next((t.tzinfo for t in (*file_times, recorded_time, position_time) if t is not None), None)
    folder = settings.data_dir / "photos" / _safe_segment(record.id)
    saved: list[SavedFile] = []

    def _write() -> VerificationCreated:
        check_time = recorded_time or dt.datetime.now(dt.UTC)
        known = {p.sha256: p.path for p in session.query(Photo).filter(Photo.warning_id == record.id)}
        rows: list[Photo] = []
        for s, t, cap in zip(saved, file_times, captures, strict=True):
            if any(r.sha256 == s.sha256 for r in rows):
                s.path.unlink(missing_ok=True)  # the same photo twice in one check: stored once
                continue
            ev = photo_evidence(
                s.path, capture=cap, file_time=t, zone=zone,
                check_lonlat=(lon, lat) if lon is not None and lat is not None else None,
                check_heading=heading_deg, geometry_wkt=record.geometry_wkt, check_time=check_time,
                window_h=settings.photo_window_h, max_distance_m=settings.photo_max_distance_m,
            )
            path = str(s.path.resolve().relative_to(settings.data_dir.resolve()))
            if s.sha256 in known and (settings.data_dir / known[s.sha256]).is_file():
                s.path.unlink(missing_ok=True)  # sent before (another check of this warning): one file
                path = known[s.sha256]
            rows.append(Photo(
                warning_id=record.id, path=path, content_type=s.content_type, size=s.size, sha256=s.sha256,
                original_name=(s.original_name or "")[:255] or None, taken_at=ev.taken_at, uploaded_by=user.id,
                lon=ev.lon, lat=ev.lat, position_source=ev.position_source, bearing_deg=ev.bearing_deg,
                bearing_source=ev.bearing_source, distance_m=ev.distance_m, flags=ev.flags,
            ))
        session.add_all(rows)  # committed together with the verification, or not at all
        verification = record_verification(
            session,
            warning_id,
            result=result,
            expected_version=expected_version,
            reason=reason,
            actual_use=actual_use,
            notes=notes,
            lon=lon,
            lat=lat,
            observed_at=observed_at,
            by=user.name,
            position_accuracy_m=accuracy_m,
            heading_deg=heading_deg,
            position_at=position_time,
            recorded_at=recorded_time,
        )
        verification.track_json = track_json
        for row in rows:
            row.verification_id = verification.id
        session.commit()
        out = VerificationCreated(
            verification=VerificationOut.model_validate(verification),
            warning=warning_out(get_warning(session, warning_id)),
            photos=[_photo_out(request, r, by=user.name) for r in rows],
        )
        session.commit()
        return out

    try:
        for upload in uploads:
            saved.append(
                await save_upload(
                    upload,
                    folder,
                    settings.data_dir,
                    allowed=("jpeg", "png"),
                    max_bytes=settings.max_photo_bytes,
                    field="photos",
                )
            )
        return await run_in_threadpool(_write)
    except BaseException:
        for s in saved:
            s.path.unlink(missing_ok=True)
        raise


def _form_time(field: str, raw: str | None) -> dt.datetime | None:
    """A form field holding a device time (ISO 8601 with an offset or ``Z``), as given; ``''`` → ``None``.

    Raises:
        HTTPException: 422 naming the field and value when it does not parse, has no offset, is before 2000 or
            more than 10 minutes in the future.
    """
    if raw is None or not raw.strip():
        return None
    try:
        value = dt.datetime.fromisoformat(raw.strip())
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail(field, f"{raw!r} is not an ISO 8601 time; give e.g. 2026-05-01T10:00:00+08:00"),
        ) from None
    try:
        field_time(field, value, shown=raw.strip())
    except SchemaError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=error_detail(field, str(exc))) from None
    return value


def _safe_segment(text: str) -> str:
    """A folder name derived from a warning id that cannot escape its parent."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)
    return cleaned.strip("._") or "warning"


# ------------------------------------------------------------------------------------- statistics etc.


@stats_router.get(
    "/statistics", response_model=list[StatRow], summary="Counts and areas by period/category/township"
)
def stats(
    user: AnalystUser,
    session: SessionDep,
    by: Annotated[
        list[Literal["period", "county_code", "township_code", "township_name", "category", "status"]],
        Query(description="grouping columns (repeatable)"),
    ] = ["period", "category"],  # noqa: B006
    period: Annotated[str | None, Query(max_length=16)] = None,
    county_code: Annotated[str | None, Query(max_length=12)] = None,
    only_warnings: Annotated[bool, Query()] = True,
) -> list[dict[str, Any]]:
    """One row per group with ``count``, ``area_m2`` and ``area_mu``."""
    from cspon_rs.store.crud import statistics

    return statistics(
        session,
        by=by,
        period=period,
        county_code=scoped_county(user, county_code),
        only_warnings=only_warnings,
    )


@stats_router.get(
    "/negatives.geojson",
    summary="False-change verifications as training negatives (GeoJSON)",
    responses={200: {"content": {GEOJSON: {}}}},
)
def negatives(
    user: AnalystUser,
    session: SessionDep,
    period: Annotated[str | None, Query(max_length=16)] = None,
    county_code: Annotated[str | None, Query(max_length=12)] = None,
) -> Response:
    """Warnings that field teams found to be no real change, with their scenes, for retraining."""
    from cspon_rs.store.crud import false_change_negatives

    frame = false_change_negatives(session, county_code=scoped_county(user, county_code), period=period)
    return Response(
        frame.to_json(drop_id=True, na="null", default=str, ensure_ascii=False), media_type=GEOJSON
    )


routers = [stats_router, router]

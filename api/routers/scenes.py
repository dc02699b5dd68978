"""Scenes: register a before/after pair from server paths or by uploading two GeoTIFFs."""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, UploadFile, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool

from cspon_rs.api.deps import SessionDep, SettingsDep, ensure_county, error_detail, not_found, require_roles
from cspon_rs.api.schemas import COUNTY_PATTERN, MAX_ID, SceneCreate, SceneOut
from cspon_rs.api.uploads import resolve_input, save_upload
from cspon_rs.errors import CsponError, NotFoundError
from cspon_rs.store.api_crud import create_scene, get_scene, list_scenes
from cspon_rs.store.api_models import ApiUser, Scene

router = APIRouter(prefix="/scenes", tags=["scenes"])

SceneUser = Annotated[ApiUser, Depends(require_roles("researcher", "bureau"))]


def _check_complete(path: Path, field: str) -> None:
    """422 unless the last block of every band, in the full resolution and in each overview, can be read.

    A truncated GeoTIFF keeps a valid header (so its grid reads fine) but loses its last blocks; reading them
    costs a few blocks, not the image.
    """
    import warnings

    import rasterio
    from rasterio.windows import Window

    def last_block(src: Any) -> None:
        bh, bw = src.block_shapes[0]
        row, col = ((src.height - 1) // bh) * bh, ((src.width - 1) // bw) * bw
        src.read(window=Window(col, row, min(bw, src.width - col), min(bh, src.height - row)))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with rasterio.open(path) as src:
                last_block(src)
                levels = len(src.overviews(1))
            for level in range(levels):
                with rasterio.open(path, overview_level=level) as ovr:
                    last_block(ovr)
    except Exception as exc:  # any GDAL read failure here means a damaged file
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail(field, f"{path.name}: the image is truncated or damaged (its last block cannot "
                                f"be read: {reason}); copy or upload it again"),
        ) from exc


def _grid(path: Path, field: str) -> dict[str, Any]:
    from cspon_rs.geo.raster import grid_info

    try:
        info = grid_info(path)
    except CsponError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=error_detail(field, str(exc))
        ) from exc
    _check_complete(path, field)
    return {
        "crs": info.crs.to_string(),
        "width": info.width,
        "height": info.height,
        "count": info.count,
        "dtype": info.dtype,
        "bounds": list(info.bounds),
        "res": list(info.res),
    }


def _overlap_fraction(before: dict[str, Any], after: dict[str, Any]) -> float:
    """Share of the before image's footprint covered by the after image (0 = disjoint), in its CRS."""
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds

    b = before["bounds"]
    a = after["bounds"]
    if before["crs"] != after["crs"]:
        try:
            a = list(transform_bounds(CRS.from_user_input(after["crs"]), CRS.from_user_input(before["crs"]), *a))
        except Exception:  # CRSs without a transformation between them cannot overlap usefully
            return 0.0
    width = min(b[2], a[2]) - max(b[0], a[0])
    height = min(b[3], a[3]) - max(b[1], a[1])
    area = (b[2] - b[0]) * (b[3] - b[1])
    if width <= 0 or height <= 0 or area <= 0:
        return 0.0
    return float(width * height / area)


def _register(
    session: SessionDep,
    user: ApiUser,
    name: str,
    before: Path,
    after: Path,
    before_date: dt.date | None,
    after_date: dt.date | None,
    county_code: str | None,
) -> Scene:
    ensure_county(user, county_code)
    county = county_code or user.county_code
    if county is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail("county_code", "a scene needs a county: give county_code (6 digits)"),
        )
    before_info = _grid(before, "before_path")
    after_info = _grid(after, "after_path")
    overlap = _overlap_fraction(before_info, after_info)
    if overlap <= 0.0:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail(
                "after_path",
                f"the after image does not overlap the before image (before bounds {before_info['bounds']} "
                f"in {before_info['crs']}, after bounds {after_info['bounds']} in {after_info['crs']})",
            ),
        )
    if before_info["count"] != after_info["count"]:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail(
                "after_path",
                f"after image has {after_info['count']} bands, before image "
                f"{before_info['count']}; both dates need the same bands",
            ),
        )
    if before_date and after_date and after_date <= before_date:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail("after_date", "after_date must be later than before_date"),
        )
    return create_scene(
        session,
        name=name,
        before_path=str(before),
        after_path=str(after),
        before_date=before_date.isoformat() if before_date else None,
        after_date=after_date.isoformat() if after_date else None,
        county_code=county,
        info={"before": before_info, "after": after_info, "overlap": round(overlap, 4)},
        created_by=user.id,
    )


@router.post(
    "",
    response_model=SceneOut,
    status_code=status.HTTP_201_CREATED,
    summary="Register a pair of GeoTIFFs already on the server",
)
def register_scene(body: SceneCreate, user: SceneUser, session: SessionDep, settings: SettingsDep) -> Scene:
    """Paths must be the caller's own uploads or lie in an admin-configured ``scene_roots`` folder (never
    another user's uploads or job outputs); the pair must overlap and have the same bands."""
    before = resolve_input(body.before_path, settings, user.id, "before_path")
    after = resolve_input(body.after_path, settings, user.id, "after_path")
    return _register(
        session, user, body.name, before, after, body.before_date, body.after_date, body.county_code
    )


@router.post(
    "/upload",
    response_model=SceneOut,
    status_code=status.HTTP_201_CREATED,
    summary="Upload a pair of GeoTIFFs (multipart)",
)
async def upload_scene(
    user: SceneUser,
    session: SessionDep,
    settings: SettingsDep,
    before: Annotated[UploadFile, File(description="GeoTIFF of the earlier date")],
    after: Annotated[UploadFile, File(description="GeoTIFF of the later date")],
    name: Annotated[str, Form(min_length=1, max_length=200)],
    county_code: Annotated[str | None, Form(pattern=COUNTY_PATTERN)] = None,
    before_date: Annotated[dt.date | None, Form()] = None,
    after_date: Annotated[dt.date | None, Form()] = None,
) -> Scene:
    """Files are stored under ``<data_dir>/uploads/u<user id>/scenes/<random>/`` (never under the client's
    filename); a pair that is refused is removed again."""
    ensure_county(user, county_code)
    folder = settings.uploads_of(user.id) / "scenes" / uuid.uuid4().hex
    try:
        return await _save_and_register(
            user, session, settings, folder, before, after, name, county_code, before_date, after_date
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a refused upload leaves nothing on disk
        raise


async def _save_and_register(
    user: ApiUser,
    session: SessionDep,
    settings: SettingsDep,
    folder: Path,
    before: UploadFile,
    after: UploadFile,
    name: str,
    county_code: str | None,
    before_date: dt.date | None,
    after_date: dt.date | None,
) -> Scene:
    saved_b = await save_upload(
        before,
        folder,
        settings.data_dir,
        allowed=("tiff",),
        max_bytes=settings.max_upload_bytes,
        field="before",
        stem="before",
        quota=(settings.uploads_of(user.id), settings.upload_quota_bytes),
    )
    saved_a = await save_upload(
        after,
        folder,
        settings.data_dir,
        allowed=("tiff",),
        max_bytes=settings.max_upload_bytes,
        field="after",
        stem="after",
        quota=(settings.uploads_of(user.id), settings.upload_quota_bytes),
    )
    return await run_in_threadpool(
        _register, session, user, name, saved_b.path, saved_a.path, before_date, after_date, county_code
    )


@router.get("", response_model=list[SceneOut], summary="Registered scenes")
def scenes(
    user: SceneUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[Scene]:
    """Newest first; county-bound users see their county's scenes (and unscoped ones)."""
    return list_scenes(session, county_code=user.county_code, limit=limit, offset=offset)


@router.get("/{scene_id}", response_model=SceneOut, summary="One scene")
def scene(
    scene_id: Annotated[int, PathParam(ge=1, le=MAX_ID)], user: SceneUser, session: SessionDep
) -> Scene:
    """404 if it does not exist or lies outside the user's county (the same answer)."""
    try:
        found = get_scene(session, scene_id)
    except NotFoundError:
        raise not_found("scene_id", "scene") from None
    if user.county_code is not None and found.county_code not in (None, user.county_code):
        raise not_found("scene_id", "scene")
    return found

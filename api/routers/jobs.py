"""Jobs: submit a detection + warning run, follow its progress and log, cancel it."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse

from cspon_rs.api.deps import SessionDep, SettingsDep, ensure_county, error_detail, not_found, require_roles
from cspon_rs.api.schemas import MAX_ID, JobCreate, JobOut
from cspon_rs.api.settings import ServeSettings
from cspon_rs.api.uploads import resolve_input, resolve_inside
from cspon_rs.errors import NotFoundError
from cspon_rs.models.checkpoint import SHIPPED
from cspon_rs.store.api_crud import cancel_job, create_job, get_job, get_scene, list_jobs
from cspon_rs.store.api_models import ApiUser, Job

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
JobUser = Annotated[ApiUser, Depends(require_roles("researcher", "bureau"))]


def _visible_job(session: SessionDep, user: ApiUser, job_id: int) -> Job:
    """The job, or the same 404 whether it is missing or in another county."""
    try:
        job = get_job(session, job_id)
    except NotFoundError:
        raise not_found("job_id", "job") from None
    if user.county_code is not None and job.county_code != user.county_code:
        raise not_found("job_id", "job")
    return job


def _vector(raw: str, settings: ServeSettings, user: ApiUser, field: str) -> str:
    """Resolve a layer path among the user's inputs and check that GDAL reads it as a vector layer."""
    import pyogrio

    path = resolve_input(raw, settings, user.id, field)
    try:
        pyogrio.read_info(path)
    except Exception as exc:  # any GDAL/pyogrio failure means "not a readable layer"
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail(
                field, f"{raw!r} is not a readable vector layer (GeoPackage expected): {exc}"
            ),
        ) from exc
    return str(path)


def _out(job: Job, with_log: bool = False) -> JobOut:
    out = JobOut.model_validate(job)
    out.log = job.log if with_log else None
    return out


@router.post(
    "", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED, summary="Queue a detection + warning job"
)
def submit_job(body: JobCreate, user: JobUser, session: SessionDep, settings: SettingsDep) -> JobOut:
    """The worker process picks it up; poll ``GET /jobs/{id}`` for state, progress and log.

    Without ``checkpoint`` the job uses the county's promoted model (see ``/models``) when it runs, else the
    service's default checkpoint; the log and ``result.model`` say which.
    """
    ensure_county(user, body.county_code)
    try:
        scene = get_scene(session, body.scene_id)
    except NotFoundError:
        scene = None
    # a county user never runs on another county's scene, nor on a legacy scene without a county
    if scene is None or (user.county_code is not None and scene.county_code != user.county_code):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=error_detail("scene_id", "no such scene"))
    if scene.county_code is not None and scene.county_code != body.county_code:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail(
                "county_code",
                f"scene {scene.id} belongs to county {scene.county_code}, not {body.county_code}; "
                "a job's warnings stay in its scene's county",
            ),
        )
    params: dict[str, str | None] = {
        "permits_path": _vector(body.permits_path, settings, user, "permits_path"),
        "control_lines_path": _vector(body.control_lines_path, settings, user, "control_lines_path"),
        "townships_path": _vector(body.townships_path, settings, user, "townships_path")
        if body.townships_path
        else None,
        "landuse_path": _vector(body.landuse_path, settings, user, "landuse_path") if body.landuse_path else None,
    }
    # Named explicitly: used as given. Omitted: the worker uses the county's promoted model when the job
    # runs (cspon-rs models promote), else the service default -- the job log says which.
    checkpoint = body.checkpoint
    if checkpoint is not None and checkpoint not in ("spectral", "default", *SHIPPED):
        models = settings.data_dir.resolve() / "models"  # registered county models: weights, not county data
        data_dir, own = settings.refused_inside(user.id)
        checkpoint = str(
            resolve_inside(
                checkpoint,
                [*settings.input_roots(user.id), models],
                "checkpoint",
                only_within=(data_dir, [*own, models]),
            )
        )
    params["checkpoint"] = checkpoint
    job = create_job(
        session,
        kind="detect_warn",
        scene_id=scene.id,
        period=body.period.upper(),
        county_code=body.county_code,
        params=params,
        created_by=user.id,
    )
    return _out(job)


@router.get("", response_model=list[JobOut], summary="Jobs, newest first")
def jobs(
    user: JobUser,
    session: SessionDep,
    state: Annotated[Literal["queued", "running", "succeeded", "failed", "cancelled"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[JobOut]:
    """County-bound users see their county's jobs only."""
    return [
        _out(j)
        for j in list_jobs(session, county_code=user.county_code, state=state, limit=limit, offset=offset)
    ]


@router.get("/{job_id}", response_model=JobOut, summary="One job with its log")
def job(job_id: JobId, user: JobUser, session: SessionDep) -> JobOut:
    """State, progress (0..1), error (why it failed) and the full log."""
    return _out(_visible_job(session, user, job_id), with_log=True)


@router.get("/{job_id}/log", response_class=PlainTextResponse, summary="A job's log as plain text")
def job_log(job_id: JobId, user: JobUser, session: SessionDep) -> str:
    """One timestamped line per step."""
    return _visible_job(session, user, job_id).log or ""


@router.post("/{job_id}/cancel", response_model=JobOut, summary="Cancel a queued or running job")
def cancel(job_id: JobId, user: JobUser, session: SessionDep) -> JobOut:
    """Queued jobs are cancelled at once; a running job is stopped by the worker within a few seconds."""
    _visible_job(session, user, job_id)
    return _out(cancel_job(session, job_id), with_log=True)

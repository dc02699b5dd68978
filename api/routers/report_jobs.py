"""The period report as a job: submit, follow in ``GET /jobs/{id}``, download when done.

``GET /exports/report.pdf`` (the files router) still answers small requests inline; a county list (more
than :data:`~cspon_rs.api.report_service.SYNC_MAX_WARNINGS` warnings or
:data:`~cspon_rs.api.report_service.SYNC_MAX_SHEETS` sheets) is refused there with 413 and made here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from cspon_rs.api.deps import SessionDep, SettingsDep, error_detail, require_roles
from cspon_rs.api.report_service import ACTIVE_STATES, REPORT_KIND, cached_report_job, report_file
from cspon_rs.api.routers.warnings import scoped_county
from cspon_rs.api.schemas import MAX_ID, JobOut
from cspon_rs.exports.report_job import DEFAULT_SHEETS, MAX_SHEETS, store_version
from cspon_rs.store.api_crud import create_job, get_job
from cspon_rs.store.api_models import ApiUser, Job

router = APIRouter(prefix="/exports/report-jobs", tags=["exports"])
ReportUser = Annotated[ApiUser, Depends(require_roles("bureau", "researcher"))]


class ReportJobIn(BaseModel):
    """What to print. Without ``ids`` the ``sheets`` highest-priority warnings get a 核查表."""

    model_config = ConfigDict(extra="forbid")

    period: str = Field(min_length=1, max_length=16, description="e.g. 2018Q1")
    county_code: str | None = Field(default=None, max_length=12, description="yours by default (admin: required)")
    ids: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=MAX_SHEETS, description="warning ids that get a 核查表 page (in this order)")
    sheets: int = Field(default=DEFAULT_SHEETS, ge=0, le=MAX_SHEETS,
                        description="without ids: 核查表 pages for this many top-priority warnings")
    top: int = Field(default=6, ge=0, le=50, description="warnings with chips in the 重点预警 section")


def _out(job: Job) -> JobOut:
    out = JobOut.model_validate(job)
    out.log = job.log
    return out


@router.post(
    "",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Queue the period report (PDF) as a job; 200 with the finished job when it is cached",
    responses={
        200: {"description": "the same report of the unchanged store is ready (cached)", "model": JobOut},
        404: {"description": "no warnings stored for that county and period"},
        409: {"description": "this user already has a report job queued or running"},
    },
)
def submit_report_job(body: ReportJobIn, user: ReportUser, session: SessionDep, response: Response) -> JobOut:
    """Overview, summary tables, every warning in a table, a 核查表 (chip, field result, every photo
    downscaled for print) for the selected or top ``sheets`` warnings. Follow it with ``GET /jobs/{id}``
    (state, progress, log); ``result.download_url`` is the PDF. One report job per user at a time."""
    from cspon_rs.store.crud import count_warnings

    county = scoped_county(user, body.county_code)
    if county is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            detail=error_detail("county_code", "name the county of the report"))
    period = body.period.upper()
    if not count_warnings(session, period=period, county_code=county, only_warnings=True):
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=error_detail("period", f"no warnings stored for {county} {period}"))
    params = {"ids": body.ids, "sheets": body.sheets, "top": body.top}
    version = store_version(session, county_code=county, period=period)
    cached = cached_report_job(session, county=county, period=period, params=params, version=version)
    if cached is not None:
        response.status_code = status.HTTP_200_OK
        return _out(cached)
    active = session.scalars(
        select(Job.id).where(Job.kind == REPORT_KIND, Job.created_by == user.id, Job.state.in_(ACTIVE_STATES))
    ).first()
    if active is not None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=error_detail("job", f"report job {active} of user {user.name!r} is still queued or running; "
                                       "wait for it (GET /jobs/{id}) or cancel it"),
        )
    job = create_job(session, kind=REPORT_KIND, scene_id=None, period=period, county_code=county,
                     params={**params, "store_version_at_submit": version}, created_by=user.id)
    return _out(job)


@router.get(
    "/{job_id}/report.pdf",
    summary="Download the PDF of a finished report job",
    response_class=FileResponse,
    responses={200: {"content": {"application/pdf": {}}},
               404: {"description": "no such report job (or another county's)"},
               409: {"description": "the job has not succeeded (yet)"}},
)
def download_report(job_id: Annotated[int, PathParam(ge=1, le=MAX_ID)], user: ReportUser, session: SessionDep,
                    settings: SettingsDep) -> FileResponse:
    """The file stays until the job folder is removed; the name says county and period."""
    from cspon_rs.errors import NotFoundError

    try:
        job: Job | None = get_job(session, job_id)
    except NotFoundError:
        job = None
    if job is None or job.kind != REPORT_KIND or (user.county_code is not None and job.county_code != user.county_code):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=error_detail("job_id", "no such report job", "path"))
    path = report_file(job)
    if path is None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=error_detail(
            "job_id", f"report job {job_id} is {job.state}" + (f": {job.error}" if job.error else ""), "path"))
    return FileResponse(path, media_type="application/pdf", filename=path.name)

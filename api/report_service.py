"""The period report as a job of the service: collected from the store, drawn by the job worker, cached.

``POST /exports/report-jobs`` queues a job of kind :data:`REPORT_KIND` in ``api_jobs`` (the same queue and
worker as detection jobs, see :mod:`cspon_rs.api.worker`); the job process runs :func:`run_report_job`:
the period's rows with field results, chips for the top warnings and the sheets, every photo of a sheet
downscaled for print, the PDF written under ``<data_dir>/jobs/<id>/``. Progress and log lines go to the
job row (``GET /jobs/{id}``); the result names the file, its size, the counts and the **store version**
(:func:`cspon_rs.exports.report_job.store_version`) it was made from, so an identical request on an
unchanged store is answered with the finished file instead of a new job.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cspon_rs.api.settings import ServeSettings
from cspon_rs.errors import NotFoundError
from cspon_rs.store.api_models import Job

__all__ = [
    "ACTIVE_STATES",
    "REPORT_KIND",
    "SYNC_MAX_SHEETS",
    "SYNC_MAX_WARNINGS",
    "ReportInputs",
    "cached_report_job",
    "collect_inputs",
    "report_file",
    "run_report_job",
]

#: ``api_jobs.kind`` of a report job.
REPORT_KIND = "report"
ACTIVE_STATES = ("queued", "running")
#: ``GET /exports/report.pdf`` answers inline only up to these sizes; larger requests are a job (413).
SYNC_MAX_SHEETS = 200
SYNC_MAX_WARNINGS = 1000


@dataclass
class ReportInputs:
    """Everything a report is drawn from (files on disk, rows in memory)."""

    county: str | None
    frame: Any
    sheet_ids: list[str]
    chips: dict[str, Path]
    photos: dict[str, list[Path]]
    captions: dict[str, list[str]]
    store_version: str


def collect_inputs(
    session: Session,
    settings: ServeSettings,
    *,
    county: str | None,
    period: str,
    ids: list[str] | None,
    sheets: int,
    top: int,
    progress: Any = None,
) -> ReportInputs:
    """Rows, sheet selection, chips (rendered once per warning version, cached) and photo files.

    Raises:
        NotFoundError: Nothing stored for that county and period.
    """
    from cspon_rs.api.chips import chip_for_warning
    from cspon_rs.exports.bundle import store_frame
    from cspon_rs.exports.report_job import select_sheets, store_version
    from cspon_rs.store.api_crud import list_photos
    from cspon_rs.store.crud import get_warning

    version = store_version(session, county_code=county, period=period)
    frame = store_frame(session, period=period, county_code=county)
    sheet_ids = select_sheets(frame, ids, sheets)
    ranked = select_sheets(frame, None, top)
    wanted = list(dict.fromkeys([*ranked, *sheet_ids]))
    root = Path(settings.data_dir).resolve()
    photos: dict[str, list[Path]] = {}
    captions: dict[str, list[str]] = {}
    try:
        from cspon_rs.api.photos import photo_captions

        texts = photo_captions(session, sheet_ids)
    except ImportError:  # captions (举证) are optional
        texts = {}
    for i in sheet_ids:  # only files inside the data directory, as GET /warnings/{id}/photos/{photo_id} serves
        rows = list_photos(session, i)
        caption = list(texts.get(i, [])) + [""] * len(rows)
        kept = [((root / p.path).resolve(), caption[k]) for k, p in enumerate(rows)]
        kept = [(f, c) for f, c in kept if f.is_relative_to(root) and f.is_file()]
        photos[i], captions[i] = [f for f, _ in kept], [c for _, c in kept]
    chips: dict[str, Path] = {}
    for k, warning_id in enumerate(wanted):
        with contextlib.suppress(NotFoundError):  # no scenes known: the sheet goes without a chip
            chips[warning_id] = chip_for_warning(session, get_warning(session, warning_id), root / "chips")
        if progress is not None and (k % 5 == 4 or k == len(wanted) - 1):
            progress(0.05 + 0.35 * (k + 1) / len(wanted), f"chips {k + 1}/{len(wanted)}")
    return ReportInputs(county, frame, sheet_ids, chips, photos, captions, version)


def report_file(job: Job) -> Path | None:
    """The finished PDF of a succeeded report job, if it is still on disk."""
    result = job.result or {}
    path = result.get("report_path")
    if job.kind != REPORT_KIND or job.state != "succeeded" or not path:
        return None
    return Path(path) if Path(path).is_file() else None


def cached_report_job(session: Session, *, county: str, period: str, params: dict[str, Any],
                      version: str) -> Job | None:
    """The newest succeeded report job with the same request on the same store version (file present)."""
    jobs = session.scalars(
        select(Job).where(Job.kind == REPORT_KIND, Job.county_code == county, Job.period == period,
                          Job.state == "succeeded").order_by(Job.id.desc()).limit(50)
    )
    for job in jobs:
        same = all((job.params or {}).get(k) == v for k, v in params.items())
        if same and (job.result or {}).get("store_version") == version and report_file(job) is not None:
            return job
    return None


def run_report_job(job_id: int, settings: ServeSettings) -> str:
    """Draw the report of job ``job_id`` (claimed, ``running``) and record the outcome on the job row.

    Returns:
        The final state: ``succeeded``, ``failed`` or ``cancelled``.
    """
    from cspon_rs.api.db import make_engine, make_sessionmaker, session_scope
    from cspon_rs.api.jobrunner import JobCancelled, end_on_error
    from cspon_rs.exports.report_job import write_print_report
    from cspon_rs.store.api_crud import finish_job, get_job, set_job_progress

    engine = make_engine(settings.db_url)
    factory = make_sessionmaker(engine)

    def progress(fraction: float, message: str | None = None) -> None:
        with session_scope(factory) as session:
            if not set_job_progress(session, job_id, fraction, message):
                raise JobCancelled(f"job {job_id} was cancelled")

    out_dir = (Path(settings.data_dir) / "jobs" / str(job_id)).resolve()
    work = out_dir / "work"
    try:
        with session_scope(factory) as session:
            job = get_job(session, job_id)
            params = dict(job.params or {})
            county, period = job.county_code, job.period
        progress(0.02, f"report of county {county}, period {period}: collecting rows, chips and photos")
        # A read session (SQLite: deferred BEGIN) for the collection: it lasts as long as the chips take,
        # while progress() writes the job row in its own short transactions.
        reader = make_engine(settings.db_url, read_only=True)
        try:
            with session_scope(make_sessionmaker(reader)) as session:
                inputs = collect_inputs(session, settings, county=county, period=period, ids=params.get("ids"),
                                        sheets=int(params.get("sheets", 50)), top=int(params.get("top", 6)),
                                        progress=progress)
        finally:
            reader.dispose()
        n_photos = sum(len(v) for v in inputs.photos.values())
        progress(0.4, f"{len(inputs.frame)} rows, {len(inputs.sheet_ids)} 核查表 sheets, {len(inputs.chips)} chips, "
                      f"{n_photos} photos (store version {inputs.store_version})")
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"report_{county}_{period}.pdf"
        written = write_print_report(
            inputs.frame, path, county_code=county, period=period, work_dir=work, sheet_ids=inputs.sheet_ids,
            chips=inputs.chips, photos=inputs.photos, photo_captions=inputs.captions, top_n=int(params.get("top", 6)),
            progress=lambda f, m: progress(0.4 + 0.58 * f, m),
        )
        result = {
            "report_path": str(written.path), "bytes": written.bytes, "warnings": written.warnings,
            "sheets": written.sheets, "photos": written.photos, "photos_not_shown": written.photos_not_shown,
            "store_version": inputs.store_version, "download_url": f"/api/v1/exports/report-jobs/{job_id}/report.pdf",
        }
        with session_scope(factory) as session:
            finish_job(session, job_id, "succeeded", result=result,
                       message=f"succeeded: {written.bytes / 1e6:.1f} MB, {written.sheets} sheets")
        return "succeeded"
    except Exception as exc:
        return end_on_error(factory, job_id, exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        engine.dispose()

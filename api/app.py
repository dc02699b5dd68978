"""The FastAPI application.

``create_app(settings)`` builds it; ``uvicorn --factory cspon_rs.api.app:create_app`` builds it from the
``CSPON_SERVE_SETTINGS`` / ``CSPON_DB_URL`` / ``CSPON_DATA_DIR`` environment. ``cspon-rs serve`` is the normal
way to start it: it migrates the database, fails jobs interrupted by a previous crash, starts the job worker
process and then uvicorn.
"""

from __future__ import annotations

from fastapi import FastAPI

from cspon_rs import __version__
from cspon_rs.api.concurrency import Admission, AdmissionConfig, AdmissionState
from cspon_rs.api.db import ensure_schema, make_engine, make_sessionmaker
from cspon_rs.api.deps import caller_is_known
from cspon_rs.api.errors import install_error_handlers
from cspon_rs.api.security import install_security_headers, redact_access_log
from cspon_rs.api.session_cookie import session_key
from cspon_rs.api.settings import ServeSettings, settings_from_env
from cspon_rs.api.spool import spool_uploads_in

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/api/v1"

_DESCRIPTION = """
Warnings of suspected illegal land use (疑似违法用地) found by satellite change detection, for three kinds of
users: **supervision bureaus** (warning lists, statistics, assignment), **field teams** (patrol targets,
verification reports with photos) and **researchers** (scenes, detection jobs).

Every endpoint except `/api/v1/health` needs `Authorization: Bearer <token>` (tokens come from
`cspon-rs users add`) or, in a browser, the HttpOnly `cspon_session` cookie from `POST /api/v1/session`
(then POST/PUT/PATCH/DELETE also need `X-CSRF-Token`). Tokens in the query string are never accepted.
Users bound to a county see and change nothing outside it.
"""


def create_app(settings: ServeSettings | None = None, *, migrate: bool = True) -> FastAPI:
    """Build the application.

    Args:
        settings: Service settings (default: from the environment).
        migrate: Bring the database schema up to date first (``alembic upgrade head``).
    """
    settings = settings or settings_from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if migrate:
        ensure_schema(settings.db_url)
    engine = make_engine(settings.db_url, threads=settings.threads)
    read_engine = (
        make_engine(settings.db_url, threads=settings.threads, read_only=True)
        if engine.dialect.name == "sqlite"
        else engine
    )

    app = FastAPI(
        title="cspon-rs API",
        version=__version__,
        description=_DESCRIPTION,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.read_sessionmaker = make_sessionmaker(read_engine)
    app.router.on_startup.append(lambda: _size_threadpool(settings.threads))
    app.state.session_key = session_key(settings)
    spool_uploads_in(settings.data_dir / "tmp")  # uploads land on disk once, then are linked into place
    install_error_handlers(app)
    install_security_headers(app, docs_path=f"{API_PREFIX}/docs")
    # bodies first, then the line; health bypasses it: a load balancer must get its answer while requests queue
    app.state.admission = AdmissionState(admission_config(settings))
    app.add_middleware(Admission, state=app.state.admission, bypass_prefixes=("/static/", f"{API_PREFIX}/health"),
                       known_caller=caller_is_known)
    app.router.on_startup.append(redact_access_log)

    from cspon_rs.api.routers import health, jobs, scenes, session, users

    for module in (health, session, users, scenes, jobs):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(session.router, prefix="/api", include_in_schema=False)  # alias: /api/session
    _include_optional(app)
    from cspon_rs.api.web import mount_web

    mount_web(app)
    from cspon_rs.api.openapi_responses import document_error_responses

    document_error_responses(app, API_PREFIX)  # last: every route's possible error codes in the spec
    return app


def admission_config(settings: ServeSettings) -> AdmissionConfig:
    """The admission limits of ``settings`` (see :mod:`cspon_rs.api.concurrency`)."""
    return AdmissionConfig(
        slots=settings.threads, per_user=settings.per_user, queue=settings.queue, tile_slots=settings.tile_slots,
        write_slots=settings.write_slots,
        body_buffer_bytes=settings.body_buffer_bytes, body_idle_timeout_s=settings.body_idle_timeout_s,
        body_timeout_s=settings.body_timeout_s, readers_per_client=settings.readers_per_client,
        upload_slots=settings.upload_slots, uploads_per_user=settings.uploads_per_user,
        upload_min_rate_bps=settings.upload_min_rate_bps, saturated_after_s=settings.saturated_after_s,
        # oversized bodies are refused before a byte is read (the per-file checks still apply below it)
        max_body_bytes=min(
            settings.max_request_bytes,
            max(settings.max_upload_bytes * 2, settings.max_photo_bytes * (settings.max_photos + 1)) + 1_000_000,
        ),
    )


def _size_threadpool(threads: int) -> None:
    """Run sync endpoints on ``threads`` threads (the pools are sized to match)."""
    import anyio.to_thread

    anyio.to_thread.current_default_thread_limiter().total_tokens = threads


def _include_optional(app: FastAPI) -> None:
    """Routers that build on the warning store."""
    from cspon_rs.api.routers import triage  # desk triage (内业判读): /api/v1/triage/... and the page /triage

    app.include_router(triage.router, prefix=API_PREFIX)
    app.include_router(triage.page_router)
    from cspon_rs.api.routers import files, models, resources, warnings

    for router in [*warnings.routers, *files.routers, *resources.routers, *models.routers]:
        app.include_router(router, prefix=API_PREFIX)
    from cspon_rs.api.routers import report_jobs

    app.include_router(report_jobs.router, prefix=API_PREFIX)  # the period report as a job
    from cspon_rs.api.routers import cases

    app.include_router(cases.router, prefix=API_PREFIX)  # case handling after the check (整改, documents)
    from cspon_rs.api.routers import refit

    app.include_router(refit.router, prefix=API_PREFIX)  # county warning classifier re-fit (triage button)

"""Health (no auth) and version."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import platform
import time

from fastapi import APIRouter, Request
from sqlalchemy import func, select

from cspon_rs import __version__
from cspon_rs.api.deps import CurrentUser, SessionDep, SettingsDep
from cspon_rs.api.schemas import AdmissionHealth, HealthOut, QueueHealth, VersionOut, WorkerHealth
from cspon_rs.api.settings import ServeSettings

router = APIRouter(tags=["health"])

API_VERSION = "v1"


def _worker_health(request: Request, settings: ServeSettings) -> WorkerHealth:
    from cspon_rs.api.worker import read_heartbeat

    stale_after = max(15.0, 10 * settings.worker_poll_s)
    beat = read_heartbeat(settings.data_dir)
    supervisor = getattr(request.app.state, "supervisor", None)
    sup = supervisor.state() if supervisor is not None else None
    age = max(0.0, time.time() - float(beat["at"])) if beat else None
    pid = int(beat["pid"]) if beat and isinstance(beat.get("pid"), int) else None
    alive = age is not None and age <= stale_after and pid is not None and _pid_alive(pid)
    if sup is not None and not sup.running:
        alive = False
    job = beat.get("job") if beat else None
    return WorkerHealth(
        alive=alive,
        pid=pid,
        last_beat_age_s=round(age, 1) if age is not None else None,
        stale_after_s=stale_after,
        restarts=sup.restarts if sup is not None else None,
        job_id=job if isinstance(job, int) and alive else None,
    )


def _pid_alive(pid: int) -> bool:
    """True unless ``pid`` certainly does not exist here (a worker on another host cannot be probed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@router.get("/health", response_model=HealthOut, summary="Liveness, database, job worker and queue (no token)")
def health(request: Request, session: SessionDep, settings: SettingsDep) -> HealthOut:
    """``status: ok`` when the database answers, a job worker is alive and the request line is not saturated
    (``admission.saturated``: a request waited, or every slot was held, over ``saturated_after_s``); otherwise
    ``degraded``.

    HTTP 200 either way (a load balancer reads ``status``). ``worker`` comes from the heartbeat the worker
    writes into the data directory every poll; ``queue`` counts queued and running jobs.
    """
    from cspon_rs.store.api_models import Job

    queue: QueueHealth | None = None
    try:
        counts = dict(
            session.execute(select(Job.state, func.count()).where(Job.state.in_(("queued", "running")))
                            .group_by(Job.state)).tuples().all()
        )
        oldest = session.scalar(select(func.min(Job.created_at)).where(Job.state == "queued"))
        session.commit()
        db_ok = True
        age = None
        if oldest is not None:
            oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=dt.UTC)
            age = round(max(0.0, (dt.datetime.now(dt.UTC) - oldest).total_seconds()), 1)
        queue = QueueHealth(
            queued=int(counts.get("queued", 0)), running=int(counts.get("running", 0)), oldest_queued_age_s=age
        )
    except Exception:
        db_ok = False
    worker = _worker_health(request, settings)
    state = getattr(request.app.state, "admission", None)
    admission = AdmissionHealth.model_validate(state.snapshot()) if state is not None else None
    ok = db_ok and worker.alive and not (admission is not None and admission.saturated)
    return HealthOut(status="ok" if ok else "degraded", database=db_ok, version=__version__, worker=worker,
                     queue=queue, admission=admission)


@router.get("/version", response_model=VersionOut, summary="Service and library versions")
def version(_user: CurrentUser) -> VersionOut:
    """Versions of cspon-rs, the API and its main libraries."""
    libs: dict[str, str] = {}
    for name in ("fastapi", "sqlalchemy", "pydantic", "rasterio", "geopandas", "torch"):
        try:
            libs[name] = str(getattr(importlib.import_module(name), "__version__", "?"))
        except ImportError:
            libs[name] = "not installed"
    return VersionOut(version=__version__, api=API_VERSION, python=platform.python_version(), libraries=libs)

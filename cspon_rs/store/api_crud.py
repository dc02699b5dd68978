"""Database operations on the service tables (users, scenes, jobs, photos).

Plain functions taking a SQLAlchemy :class:`~sqlalchemy.orm.Session`; they raise
:class:`~cspon_rs.errors.NotFoundError` / :class:`~cspon_rs.errors.ConflictError` and never build SQL from
strings. Job state changes are conditional ``UPDATE ... WHERE state = ...`` statements so the worker and
the web process can race safely.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cspon_rs.errors import ConflictError, NotFoundError
from cspon_rs.store.api_models import ROLES, ApiUser, Job, Photo, Scene, utcnow

__all__ = [
    "add_photo",
    "append_job_log",
    "cancel_job",
    "claim_next_job",
    "committed_statement",
    "create_job",
    "create_scene",
    "create_user",
    "finish_job",
    "get_job",
    "get_scene",
    "hash_token",
    "list_jobs",
    "list_photos",
    "list_scenes",
    "recover_interrupted_jobs",
    "set_job_progress",
    "user_for_token",
]

#: Longest log kept per job (characters); older lines are dropped from the front.
MAX_LOG_CHARS = 200_000


def hash_token(token: str) -> str:
    """Hex SHA-256 of a bearer token (what is stored)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_user(
    session: Session,
    name: str,
    role: str,
    *,
    county_code: str | None = None,
    team: str | None = None,
    display_name: str | None = None,
) -> tuple[ApiUser, str]:
    """Create a user and a fresh random token.

    Args:
        session: Open session (committed here).
        name: Unique user name.
        role: One of ``bureau``, ``field``, ``researcher``, ``admin``.
        county_code: Region scope (6-digit county code); ``None`` (all counties) only for role ``admin``.
        team: Field team the user belongs to.
        display_name: Name shown as 核查人 in lists, 图斑 layers and 核查表 (default: the user name).

    Returns:
        ``(user, token)`` -- the token is shown once and only its hash is stored.

    Raises:
        ValueError: Unknown role, empty name, a field user without team or a non-admin without county.
        ConflictError: The name is taken.
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not name.strip():
        raise ValueError("user name must not be empty")
    if role == "field" and not (team and team.strip()):
        raise ValueError("a field user needs a team (--team), since field users see their team's assignments")
    if role != "admin" and county_code is None:
        raise ValueError(
            f"a {role} user needs a county (--county, 6 digits); only the admin role sees every county"
        )
    if session.scalar(select(ApiUser.id).where(ApiUser.name == name)) is not None:
        raise ConflictError(f"user {name!r} already exists")
    token = secrets.token_urlsafe(32)
    user = ApiUser(name=name, role=role, county_code=county_code, team=team, token_hash=hash_token(token),
                   display_name=(display_name or "").strip()[:100] or None)
    session.add(user)
    session.commit()
    session.refresh(user)
    return user, token


def user_for_token(session: Session, token: str) -> ApiUser | None:
    """The active user owning ``token``, or ``None``."""
    user = session.scalar(select(ApiUser).where(ApiUser.token_hash == hash_token(token)))
    if user is None or not user.active:
        return None
    return user


# ----------------------------------------------------------------------------------------------- scenes


def create_scene(session: Session, **fields: Any) -> Scene:
    """Insert a scene row (fields as in :class:`Scene`) and commit."""
    scene = Scene(**fields)
    session.add(scene)
    session.commit()
    session.refresh(scene)
    return scene


def get_scene(session: Session, scene_id: int) -> Scene:
    """One scene by id; :class:`NotFoundError` if absent."""
    scene = session.get(Scene, scene_id)
    if scene is None:
        raise NotFoundError(f"scene {scene_id} does not exist")
    return scene


def list_scenes(
    session: Session, *, county_code: str | None = None, limit: int = 100, offset: int = 0
) -> list[Scene]:
    """Scenes, newest first; ``county_code`` restricts to that county (plus scenes without one)."""
    stmt = select(Scene).order_by(Scene.id.desc()).limit(limit).offset(offset)
    if county_code is not None:
        stmt = stmt.where((Scene.county_code == county_code) | (Scene.county_code.is_(None)))
    return list(session.scalars(stmt))


# ------------------------------------------------------------------------------------------------- jobs


def create_job(session: Session, **fields: Any) -> Job:
    """Queue a job (fields as in :class:`Job`) and commit."""
    job = Job(state="queued", progress=0.0, log="", **fields)
    session.add(job)
    session.commit()
    session.refresh(job)
    return job


def get_job(session: Session, job_id: int) -> Job:
    """One job by id; :class:`NotFoundError` if absent."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"job {job_id} does not exist")
    return job


def list_jobs(
    session: Session,
    *,
    county_code: str | None = None,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Job]:
    """Jobs, newest first, optionally restricted to a county and/or a state."""
    stmt = select(Job).order_by(Job.id.desc()).limit(limit).offset(offset)
    if county_code is not None:
        stmt = stmt.where(Job.county_code == county_code)
    if state is not None:
        stmt = stmt.where(Job.state == state)
    return list(session.scalars(stmt))


def _line(message: str) -> str:
    return f"{utcnow().strftime('%Y-%m-%dT%H:%M:%SZ')} {message.rstrip()}\n"


def append_job_log(session: Session, job_id: int, message: str) -> None:
    """Append a timestamped line to a job's log and commit."""
    job = get_job(session, job_id)
    log = (job.log or "") + _line(message)
    if len(log) > MAX_LOG_CHARS:
        log = log[-MAX_LOG_CHARS:]
    job.log = log
    session.commit()


def set_job_progress(session: Session, job_id: int, progress: float, message: str | None = None) -> bool:
    """Record progress (0..1) of a running job.

    Returns:
        ``True`` if the job should go on, ``False`` if cancellation was requested or it is no longer running.
    """
    job = get_job(session, job_id)
    session.refresh(job)
    if job.state != "running":
        return False
    job.progress = max(0.0, min(1.0, float(progress)))
    if message:
        job.log = ((job.log or "") + _line(message))[-MAX_LOG_CHARS:]
    session.commit()
    return not job.cancel_requested


def claim_next_job(session: Session, worker_pid: int | None = None) -> Job | None:
    """Atomically move the oldest queued job to ``running`` and return it (``None`` if there is none)."""
    pid = os.getpid() if worker_pid is None else worker_pid
    for job_id in session.scalars(select(Job.id).where(Job.state == "queued").order_by(Job.id).limit(5)):
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "queued")
            .values(state="running", started_at=utcnow(), worker_pid=pid, progress=0.0)
        )
        session.commit()
        if result.rowcount == 1:  # type: ignore[attr-defined]
            job = get_job(session, job_id)
            session.refresh(job)
            return job
    return None


def committed_statement(committed: dict[str, Any] | None) -> str:
    """One sentence saying what a job committed to the warning store (``committed`` column), or nothing."""
    if not committed:
        return "Nothing was written to the warning store by this job."
    return (
        f"Committed before it ended (kept): the warning-store stage at {committed.get('at', '?')} -- "
        f"{committed.get('created', 0)} new warnings, {committed.get('merged', 0)} merged into earlier periods "
        f"(seen_again), {committed.get('patches', 0)} raw patches for {committed.get('county_code', '?')} "
        f"{committed.get('period', '?')}; files of later steps may be missing."
    )


def finish_job(
    session: Session,
    job_id: int,
    state: str,
    *,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    message: str | None = None,
) -> bool:
    """Move a running job to a final state (``succeeded``, ``failed`` or ``cancelled``).

    A failed or cancelled job's ``error`` and final log line end with :func:`committed_statement` -- read
    from the row in this same transaction -- so they say exactly what stayed committed. A succeeded job's
    ``result`` gets the ``committed`` record.

    Returns:
        ``True`` if the job was running and is now final; ``False`` if something else finished it first
        (e.g. the server restarted and marked it failed).
    """
    if state not in ("succeeded", "failed", "cancelled"):
        raise ValueError(f"final job state must be succeeded, failed or cancelled, not {state!r}")
    # Lock the row (PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes): a store stage committing at
    # this moment either lands before this read or finds the job no longer running and rolls back.
    job = session.scalars(
        select(Job).where(Job.id == job_id).with_for_update().execution_options(populate_existing=True)
    ).one_or_none()
    if job is None:
        raise NotFoundError(f"job {job_id} does not exist")
    committed = job.committed
    if state != "succeeded":
        statement = committed_statement(committed)
        error = f"{error.rstrip('.')}. {statement}" if error else statement
        message = f"{message.rstrip('.')}. {statement}" if message else None
    elif result is not None:
        result = {**result, "committed": committed}
    values: dict[str, Any] = {"state": state, "finished_at": utcnow(), "error": error, "result": result}
    if state == "succeeded":
        values["progress"] = 1.0
    if message:
        # The final log line is written in the same commit as the final state, so nobody who sees the
        # job finished reads a log without it.
        values["log"] = ((job.log or "") + _line(message))[-MAX_LOG_CHARS:]
    outcome = session.execute(update(Job).where(Job.id == job_id, Job.state == "running").values(**values))
    session.commit()
    return bool(outcome.rowcount == 1)  # type: ignore[attr-defined]


def cancel_job(session: Session, job_id: int) -> Job:
    """Cancel a job: a queued job is cancelled at once, a running one is asked to stop.

    A running job can be cancelled only until its warning-store stage commits (the two updates of the job
    row serialize: whichever comes first wins), so a cancelled job never leaves warnings behind.

    Raises:
        NotFoundError: No such job.
        ConflictError: The job already finished, or already committed its warnings.
    """
    job = get_job(session, job_id)
    if job.state == "queued":
        why = "cancelled before it started. Nothing was written to the warning store by this job."
        done = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "queued")
            .values(state="cancelled", finished_at=utcnow(), error=why,
                    log=((job.log or "") + _line(why))[-MAX_LOG_CHARS:])
        )
        session.commit()
        session.refresh(job)
        if done.rowcount == 1:  # type: ignore[attr-defined]
            return job
    if job.state == "running":
        asked = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "running", Job.committed.is_(None))
            .values(cancel_requested=True, log=((job.log or "") + _line("cancellation requested"))[-MAX_LOG_CHARS:])
        )
        session.commit()
        session.refresh(job)
        if asked.rowcount == 1:  # type: ignore[attr-defined]
            return job
        if job.state == "running" and job.committed:
            raise ConflictError(
                f"job {job_id} already committed its warnings ({job.committed.get('created', 0)} new, "
                f"{job.committed.get('merged', 0)} merged); it can no longer be cancelled and is finishing its files"
            )
    raise ConflictError(f"job {job_id} is already {job.state}; only queued or running jobs can be cancelled")


def recover_interrupted_jobs(session: Session, reason: str) -> list[int]:
    """Mark every job left ``running`` (by a worker that no longer exists) as failed.

    Called when the service starts and whenever the supervisor restarts a dead worker. Interrupted jobs
    are **failed, not re-queued**: each stage that writes to the store is one transaction, and the job's
    error states which stage committed (see :func:`finish_job`); the user decides whether to resubmit.

    Returns:
        Ids of the jobs marked failed.
    """
    ids = list(session.scalars(select(Job.id).where(Job.state == "running")))
    message = f"failed: {reason}"
    return [job_id for job_id in ids if finish_job(session, job_id, "failed", error=reason, message=message)]


# ----------------------------------------------------------------------------------------------- photos


def add_photo(session: Session, **fields: Any) -> Photo:
    """Insert a photo row (fields as in :class:`Photo`) and commit."""
    photo = Photo(**fields)
    session.add(photo)
    session.commit()
    session.refresh(photo)
    return photo


def list_photos(session: Session, warning_id: str) -> list[Photo]:
    """Photos of one warning, oldest first."""
    return list(session.scalars(select(Photo).where(Photo.warning_id == warning_id).order_by(Photo.id)))

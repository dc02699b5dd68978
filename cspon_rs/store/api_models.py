"""Tables of the HTTP service: users, scenes, jobs and photos.

They live on the same :class:`~cspon_rs.store.base.Base` as the warning store tables and are created by
the Alembic revision ``0002_api`` (down revision ``0001_warning_store``).

* ``api_users`` -- people and machines that call the API. Only the SHA-256 of a token is stored.
* ``api_scenes`` -- a registered before/after image pair (paths inside the service's data directory).
* ``api_jobs`` -- a detection + warning run; its state, progress, log and error survive restarts.
* ``api_photos`` -- field photos attached to a warning's verification (files in the data directory).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, get_args

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cspon_rs.store.base import Base, UTCDateTime

__all__ = [
    "JOB_STATES",
    "ROLES",
    "ApiUser",
    "Job",
    "JobState",
    "Photo",
    "Role",
    "Scene",
    "utcnow",
]

Role = Literal["bureau", "field", "researcher", "admin"]
ROLES: tuple[str, ...] = get_args(Role)

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATES: tuple[str, ...] = get_args(JobState)


def utcnow() -> dt.datetime:
    """Current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


class ApiUser(Base):
    """A caller of the API with one role and, optionally, a county (region scope) and a field team."""

    __tablename__ = "api_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    #: 6-digit administrative division code (e.g. ``810000``); ``None`` = all counties.
    county_code: Mapped[str | None] = mapped_column(String(12), nullable=True)
    #: Field team name (role ``field``); warnings are assigned to teams.
    team: Mapped[str | None] = mapped_column(String(100), nullable=True)
    #: Name shown as 核查人 in the lists, 图斑 layer and 核查表 (``users add --display-name``; revision 0007).
    display_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    #: Hex SHA-256 of the bearer token; the token itself is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    #: When ``cspon-rs users deactivate`` switched it off, and when its token was last revoked (revision 0009).
    deactivated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    token_revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Scene(Base):
    """A before/after image pair that detection jobs run on."""

    __tablename__ = "api_scenes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    before_path: Mapped[str] = mapped_column(Text)
    after_path: Mapped[str] = mapped_column(Text)
    before_date: Mapped[str | None] = mapped_column(String(10), nullable=True)
    after_date: Mapped[str | None] = mapped_column(String(10), nullable=True)
    county_code: Mapped[str | None] = mapped_column(String(12), nullable=True)
    #: Grid facts of the before image: crs, width, height, bounds, band count.
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("api_users.id"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """A detection + warning job; executed by the worker process, never inside a request."""

    __tablename__ = "api_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), default="detect_warn")
    state: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    scene_id: Mapped[int | None] = mapped_column(ForeignKey("api_scenes.id"), nullable=True)
    period: Mapped[str] = mapped_column(String(20))
    county_code: Mapped[str] = mapped_column(String(12))
    #: Validated job parameters (layer paths, detector, threshold...).
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: 0..1
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    log: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Output summary written on success (counts, output folder).
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    #: What the job committed to the warning store (written in that stage's own transaction); ``None`` =
    #: nothing. Keys: ``stage``, ``at``, ``created``, ``merged``, ``unchanged``, ``patches``, ``created_ids``.
    committed: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    worker_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("api_users.id"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Photo(Base):
    """A field photo of a warning; the file lives at ``<data_dir>/<path>``."""

    __tablename__ = "api_photos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    warning_id: Mapped[str] = mapped_column(ForeignKey("warnings.id", ondelete="CASCADE"), index=True)
    verification_id: Mapped[int | None] = mapped_column(
        ForeignKey("verifications.id", ondelete="SET NULL"), nullable=True
    )
    #: Path relative to the data directory (generated by the server, never the client's filename).
    path: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(40))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    original_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: When the photo was taken: EXIF ``DateTimeOriginal`` when the file has it, else the file time the
    #: client sent; ``None`` when neither is known.
    taken_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Where it was taken (EPSG:4326) and from what: ``exif``, ``device`` (the phone's fix when the photo was
    #: added) or ``check`` (the verification's position); revision 0008.
    lon: Mapped[float | None] = mapped_column(Float, nullable=True)
    lat: Mapped[float | None] = mapped_column(Float, nullable=True)
    position_source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: Direction the camera faced, degrees clockwise from north, and from what (``exif``, ``device``, ``check``).
    bearing_deg: Mapped[float | None] = mapped_column(Float, nullable=True)
    bearing_source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: Geodesic distance to the warning polygon in metres (0 inside) and the checks' flags, comma-separated
    #: (``far``, ``early``, ``late``, ``no_position``, ``no_time``; see :mod:`cspon_rs.geo.evidence`).
    distance_m: Mapped[float | None] = mapped_column(Float, nullable=True)
    flags: Mapped[str | None] = mapped_column(String(64), nullable=True)
    uploaded_by: Mapped[int | None] = mapped_column(ForeignKey("api_users.id"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

"""Request and response bodies of the HTTP API (pydantic; kept apart from the ORM models)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CountyCode",
    "HealthOut",
    "JobCreate",
    "JobOut",
    "SceneCreate",
    "SceneOut",
    "UserCreate",
    "UserCreated",
    "UserOut",
    "VersionOut",
]

#: 6-digit administrative division code, e.g. ``810000`` (Hong Kong) or ``320115``.
COUNTY_PATTERN = r"^[0-9]{6}$"
#: Period label such as ``2018Q1`` (quarter), ``2018H1``, ``2018-03`` or ``2018``.
PERIOD_PATTERN = r"^[0-9]{4}([Qq][1-4]|[Hh][12]|-[01][0-9])?$"
CountyCode = str


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class HealthOut(BaseModel):
    """Liveness and database reachability."""

    status: Literal["ok", "degraded"]
    database: bool
    version: str


class VersionOut(BaseModel):
    """Versions of the service and its main libraries."""

    version: str
    api: str
    python: str
    libraries: dict[str, str]


# ------------------------------------------------------------------------------------------------ users


class UserCreate(_In):
    """A new API user (admin only)."""

    name: str = Field(min_length=1, max_length=200)
    role: Literal["bureau", "field", "researcher", "admin"]
    county_code: str | None = Field(default=None, pattern=COUNTY_PATTERN)
    team: str | None = Field(default=None, min_length=1, max_length=100)


class UserOut(_Out):
    """A user as others see it (never the token)."""

    id: int
    name: str
    role: str
    county_code: str | None
    team: str | None
    active: bool


class UserCreated(UserOut):
    """A freshly created user with its token -- shown once."""

    token: str


# ----------------------------------------------------------------------------------------------- scenes


class SceneCreate(_In):
    """Register a before/after pair already on the server (paths inside an allowed data directory)."""

    name: str = Field(min_length=1, max_length=200)
    before_path: str = Field(min_length=1, max_length=4096, description="GeoTIFF of the earlier date")
    after_path: str = Field(min_length=1, max_length=4096, description="GeoTIFF of the later date")
    before_date: dt.date | None = None
    after_date: dt.date | None = None
    county_code: str | None = Field(default=None, pattern=COUNTY_PATTERN)


class SceneOut(_Out):
    """A registered scene pair."""

    id: int
    name: str
    before_path: str
    after_path: str
    before_date: str | None
    after_date: str | None
    county_code: str | None
    info: dict[str, Any]
    created_at: dt.datetime


# ------------------------------------------------------------------------------------------------- jobs


class JobCreate(_In):
    """Submit a detection + warning run for one county and period."""

    scene_id: int = Field(ge=1)
    period: str = Field(pattern=PERIOD_PATTERN, description="e.g. 2018Q1")
    county_code: str = Field(pattern=COUNTY_PATTERN)
    permits_path: str = Field(min_length=1, max_length=4096, description="approved permits layer (GPKG)")
    control_lines_path: str = Field(min_length=1, max_length=4096, description="control lines layer (GPKG)")
    townships_path: str | None = Field(default=None, min_length=1, max_length=4096)
    checkpoint: str | None = Field(
        default=None, min_length=1, max_length=4096,
        description="'spectral' (CVA + Otsu baseline), 'default' (the shipped checkpoint) or a .safetensors "
        "checkpoint path inside the data directories; omitted = the service default",
    )


class JobOut(_Out):
    """State of a job; ``log`` only in the single-job view."""

    id: int
    kind: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    scene_id: int | None
    period: str
    county_code: str
    params: dict[str, Any]
    progress: float
    error: str | None
    result: dict[str, Any] | None
    cancel_requested: bool
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    log: str | None = None

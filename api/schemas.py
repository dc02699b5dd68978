"""Request and response bodies of the HTTP API (pydantic; kept apart from the ORM models)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

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
#: Largest id / offset accepted (SQLite and PostgreSQL integers; bigger values are 422, not a DB error).
MAX_ID = 2**31 - 1


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class WorkerHealth(BaseModel):
    """The job worker as seen from its heartbeat file (and the supervisor, when this process runs one)."""

    alive: bool = Field(description="a heartbeat newer than stale_after_s from a running process")
    pid: int | None
    last_beat_age_s: float | None = Field(description="seconds since the last heartbeat; null = never")
    stale_after_s: float
    restarts: int | None = Field(description="restarts by this server's supervisor; null = not supervised here")
    job_id: int | None = Field(default=None, description="job it is running now")


class QueueHealth(BaseModel):
    """Jobs waiting and running."""

    queued: int
    running: int
    oldest_queued_age_s: float | None = Field(description="age of the oldest queued job (seconds)")


class LaneHealth(BaseModel):
    """One admission lane (``api`` or ``tiles``): slots, held, waiting, ages in seconds."""

    slots: int
    in_use: int
    queued: int
    oldest_held_s: float | None
    oldest_wait_s: float | None


class AdmissionHealth(BaseModel):
    """Saturation of the request line (see ``cspon_rs.api.concurrency``): ``saturated`` when a request waited,
    or every slot was held, longer than ``saturated_after_s``; ``refused`` counts answers by reason."""

    saturated: bool
    saturated_after_s: float
    lanes: dict[str, LaneHealth]
    reading_bodies: int
    uploads: int
    refused: dict[str, int]


class HealthOut(BaseModel):
    """Liveness: database reachable, a live job worker and an unsaturated request line (``degraded``
    otherwise, HTTP 200 either way)."""

    status: Literal["ok", "degraded"]
    database: bool
    version: str
    worker: WorkerHealth | None = None
    queue: QueueHealth | None = None
    admission: AdmissionHealth | None = None


class VersionOut(BaseModel):
    """Versions of the service and its main libraries."""

    version: str
    api: str
    python: str
    libraries: dict[str, str]


# ------------------------------------------------------------------------------------------------ users


class UserCreate(_In):
    """A new API user (admin only). Field users need a ``team``; every role but admin needs a county."""

    name: str = Field(min_length=1, max_length=200)
    role: Literal["bureau", "field", "researcher", "admin"]
    county_code: str | None = Field(default=None, pattern=COUNTY_PATTERN)
    team: str | None = Field(default=None, min_length=1, max_length=100)
    display_name: str | None = Field(default=None, min_length=1, max_length=100, description="核查人 in the outputs")

    @model_validator(mode="after")
    def _field_needs_team(self) -> UserCreate:
        if self.role == "field" and not (self.team and self.team.strip()):
            raise ValueError("team: a field user needs a team")
        if self.role != "admin" and self.county_code is None:
            raise ValueError(f"county_code: a {self.role} user needs a county; only admin sees every county")
        return self


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

    scene_id: int = Field(ge=1, le=MAX_ID)
    period: str = Field(pattern=PERIOD_PATTERN, description="e.g. 2018Q1")
    county_code: str = Field(pattern=COUNTY_PATTERN)
    permits_path: str = Field(min_length=1, max_length=4096, description="approved permits layer (GPKG)")
    control_lines_path: str = Field(min_length=1, max_length=4096, description="control lines layer (GPKG)")
    townships_path: str | None = Field(default=None, min_length=1, max_length=4096)
    landuse_path: str | None = Field(
        default=None, min_length=1, max_length=4096,
        description="land-use layer (三调/年度变更 DLTB, DLBM codes): area by before-class, 占用耕地 per warning",
    )
    checkpoint: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="'spectral' (CVA + Otsu baseline), 'default' (the shipped checkpoint) or a .safetensors "
        "checkpoint path inside the data directories; omitted = the county's promoted model when the job runs "
        "(GET /counties/{code}/models/current), else the service default",
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
    committed: dict[str, Any] | None = Field(
        default=None,
        description="what the job committed to the warning store (its one store transaction); null = nothing",
    )
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    log: str | None = None


# --------------------------------------------------------------------------------------------- warnings

WarningStatus = Literal["new", "assigned", "verified", "closed"]
VerificationResultName = Literal["illegal", "legal", "false_change"]


class WarningOut(_Out):
    """One warning (suspected violation, 疑似) in list views. Areas in m² and mu; lon/lat in EPSG:4326."""

    id: str
    period: str
    county_code: str
    township_code: str | None
    township_name: str | None
    category: str
    is_warning: bool
    flags: list[str]
    area_m2: float
    area_mu: float
    priority: float
    rank: int | None
    confidence: float | None
    status: str
    verification_result: str | None
    assigned_team: str | None
    due_date: dt.date | None
    t1: dt.date | None
    t2: dt.date | None
    centroid_lon: float
    centroid_lat: float
    bbox: list[float] = Field(description="[min_lon, min_lat, max_lon, max_lat], EPSG:4326")
    version: int
    detector: str | None = Field(default=None, description="card name@version of the model that raised it")
    model_sha256: str | None = Field(default=None, description="sha256 of that checkpoint's weights")
    model_version_id: int | None = Field(default=None, description="its county registry id (GET /models/{id})")
    cropland_m2: float | None = Field(default=None, description="占用耕地 (GB/T 21010 01xx) in m²; null: no land-use "
                                      "layer in the run")
    landuse_main: str | None = Field(default=None, description="main land class before the change (DLBM code)")


class WarningPage(BaseModel):
    """A page of warnings."""

    items: list[WarningOut]
    total: int
    limit: int
    offset: int


class HistoryOut(_Out):
    """One event in a warning's life."""

    id: int
    event: str
    at: dt.datetime
    by: str | None
    from_status: str | None
    to_status: str | None
    why: str | None
    details: dict[str, Any] | None


class VerificationOut(_Out):
    """A field verification."""

    id: int
    warning_id: str
    result: str
    reason: str | None
    actual_use: str | None
    notes: str | None
    lon: float | None
    lat: float | None
    observed_at: dt.datetime | None
    position_accuracy_m: float | None = Field(
        default=None, ge=0, description="GPS accuracy radius of lon/lat, metres (null: not reported)")
    heading_deg: float | None = Field(
        default=None, ge=0, le=360, description="direction the device faced, degrees clockwise from north")
    position_at: AwareDatetime | None = Field(default=None, description="when the position fix was taken")
    recorded_at: AwareDatetime | None = Field(default=None, description="device time of the check")
    has_track: bool = Field(default=False, description="a GPS track was recorded (GET .../track.gpx)")
    by: str | None
    created_at: dt.datetime


class PhotoOut(BaseModel):
    """A stored field photo."""

    id: int
    content_type: str
    size: int
    sha256: str
    url: str
    verification_id: int | None
    taken_at: AwareDatetime | None = Field(
        default=None, description="EXIF DateTimeOriginal when the file has it, else the file time the client sent")
    lon: float | None = Field(default=None, description="where it was taken, EPSG:4326")
    lat: float | None = None
    position_source: str | None = Field(default=None, description="exif | device (phone fix) | check")
    bearing_deg: float | None = Field(default=None, description="direction faced, degrees clockwise from north")
    bearing_source: str | None = Field(default=None, description="exif | device (compass) | check")
    distance_m: float | None = Field(default=None, description="geodesic distance to the 图斑, metres (0 inside)")
    flags: list[str] = Field(default_factory=list, description="far | early | late | no_position | no_time")
    by: str | None = Field(default=None, description="who sent it (the verification's author)")


class WarningDetail(WarningOut):
    """One warning with everything a case file needs."""

    source_key: str
    patch_id: str | None
    reasons: list[dict[str, Any]]
    permits: list[dict[str, Any]]
    covered_m2: float
    excess_m2: float
    farmland_overlap_m2: float
    redline_overlap_m2: float
    outside_urban_m2: float
    rule_set_version: str
    linked_ids: list[str]
    seen_periods: list[str]
    geometry: dict[str, Any] = Field(description="GeoJSON geometry, EPSG:4326")
    history: list[HistoryOut]
    verifications: list[VerificationOut]
    photos: list[PhotoOut]
    chip_urls: dict[str, str] = Field(description="``before_after``: PNG chip with both dates side by side")


class AssignIn(_In):
    """Assign a warning to a field team."""

    team: str = Field(min_length=1, max_length=64)
    due_date: dt.date | None = Field(default=None, description="between 2000-01-01 and ten years from today")
    expected_version: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="version you saw (optimistic lock)"
    )

    @field_validator("due_date")
    @classmethod
    def _plausible_due_date(cls, value: dt.date | None) -> dt.date | None:
        latest = dt.date.today() + dt.timedelta(days=3652)
        if value is not None and not dt.date(2000, 1, 1) <= value <= latest:
            raise ValueError(f"due date {value.isoformat()} is not between 2000-01-01 and {latest.isoformat()}")
        return value


class StatusIn(_In):
    """Move a warning along the lifecycle (``verified`` only through a verification)."""

    to_status: Literal["new", "assigned", "closed"]
    why: str | None = Field(default=None, max_length=2000)
    expected_version: int | None = Field(default=None, ge=1, le=MAX_ID)


class VerificationCreated(BaseModel):
    """Result of posting a verification."""

    verification: VerificationOut
    warning: WarningOut
    photos: list[PhotoOut]


class StatRow(BaseModel):
    """Counts and areas of one group."""

    model_config = ConfigDict(extra="allow")

    count: int
    area_m2: float
    area_mu: float

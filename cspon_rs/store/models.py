"""ORM tables of the warning store: warnings, their history, field verifications and raw change patches.

Geometries are stored as WKT in EPSG:4326 (lon/lat) plus bounding-box columns, so a plain SQLite file
works without SpatiaLite. On PostgreSQL with PostGIS the migration adds a generated, GiST-indexed
``geom geometry(Geometry, 4326)`` column computed from ``geometry_wkt``, which
:func:`cspon_rs.store.crud.list_warnings` uses for exact spatial filtering.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cspon_rs.store.base import Base, UTCDateTime

__all__ = [
    "LIFECYCLE",
    "MODEL_STATUSES",
    "ModelEvent",
    "ModelVersion",
    "Patch",
    "TriageDecision",
    "Verification",
    "WarningHistory",
    "WarningRecord",
    "utcnow",
]

#: Allowed status transitions: new → assigned → verified → closed (plus un-assign and re-check). The desk
#: triage (内业判读, :mod:`cspon_rs.store.triage`) moves ``new`` to ``desk_excluded`` (内业排除) or ``to_field``
#: (待外业) and back on undo; either can still be assigned to a field team, whose result overrides the desk.
LIFECYCLE: dict[str, frozenset[str]] = {
    "new": frozenset({"assigned", "desk_excluded", "to_field"}),
    "desk_excluded": frozenset({"assigned"}),
    "to_field": frozenset({"assigned"}),
    "assigned": frozenset({"verified", "new"}),
    "verified": frozenset({"closed", "assigned"}),
    "closed": frozenset(),
}


def utcnow() -> dt.datetime:
    """Timezone-aware current UTC time."""
    return dt.datetime.now(dt.UTC)


class WarningRecord(Base):
    """One suspected (疑似) violation: a classified change patch or a 批而不建 permit."""

    __tablename__ = "warnings"
    __table_args__ = (
        UniqueConstraint("period", "county_code", "source_key", name="uq_warnings_source"),
        Index("ix_warnings_period_county", "period", "county_code"),
        Index("ix_warnings_bbox", "minx", "maxx", "miny", "maxy"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # <county>-<period>-<seq:04d>
    period: Mapped[str] = mapped_column(String(16), index=True)
    county_code: Mapped[str] = mapped_column(String(12), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    source_key: Mapped[str] = mapped_column(String(128))  # patch_id or "permit:<no>"
    patch_id: Mapped[str | None] = mapped_column(String(128))
    township_code: Mapped[str | None] = mapped_column(String(12), index=True)
    township_name: Mapped[str | None] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(32), index=True)
    is_warning: Mapped[bool] = mapped_column(default=True)
    flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    area_m2: Mapped[float] = mapped_column(Float)
    area_mu: Mapped[float] = mapped_column(Float)
    covered_m2: Mapped[float] = mapped_column(Float, default=0.0)
    excess_m2: Mapped[float] = mapped_column(Float, default=0.0)
    farmland_overlap_m2: Mapped[float] = mapped_column(Float, default=0.0)
    redline_overlap_m2: Mapped[float] = mapped_column(Float, default=0.0)
    outside_urban_m2: Mapped[float] = mapped_column(Float, default=0.0)
    reasons: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    permits: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    priority: Mapped[float] = mapped_column(Float, index=True)
    rank: Mapped[int | None] = mapped_column(Integer)
    confidence: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="new", index=True)
    verification_result: Mapped[str | None] = mapped_column(String(16))
    assigned_team: Mapped[str | None] = mapped_column(String(64))
    due_date: Mapped[dt.date | None] = mapped_column(Date)
    rule_set_version: Mapped[str] = mapped_column(String(32))
    t1: Mapped[dt.date | None] = mapped_column(Date)
    t2: Mapped[dt.date | None] = mapped_column(Date)
    geometry_wkt: Mapped[str] = mapped_column(Text)  # EPSG:4326
    minx: Mapped[float] = mapped_column(Float)
    miny: Mapped[float] = mapped_column(Float)
    maxx: Mapped[float] = mapped_column(Float)
    maxy: Mapped[float] = mapped_column(Float)
    centroid_lon: Mapped[float] = mapped_column(Float)
    centroid_lat: Mapped[float] = mapped_column(Float)
    linked_ids: Mapped[list[str]] = mapped_column(JSON, default=list)  # earlier-period warnings it touches
    seen_periods: Mapped[list[str]] = mapped_column(JSON, default=list)  # later periods merged into it
    #: Model that raised it: card ``name@version``, sha256 of the checkpoint weights, registry id (if registered).
    detector: Mapped[str | None] = mapped_column(String(128))
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    model_version_id: Mapped[int | None] = mapped_column(Integer, index=True)
    #: What a county classifier re-score suggests (revision 0010): ``desk_excluded`` (内业排除 suggested) when
    #: the warning now scores below the operating point; a person decides (cspon_rs.training.county_refit).
    suggested_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: Land class before the change (revision 0007, :mod:`cspon_rs.rules.landuse`): m² by GB/T 21010 code,
    #: 占用耕地 (01xx) in m², the main code; ``NULL`` when the run had no land-use layer.
    landuse_areas: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)
    cropland_m2: Mapped[float | None] = mapped_column(Float, nullable=True)
    landuse_main: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: Number of the issued 监测图斑 (JCBH) it answers for (``cspon-rs tuban import``); ``NULL``: 自主发现 or none
    #: imported. Case fields after the check (revision 0007, :mod:`cspon_rs.store.cases`): 用地主体, 项目名称,
    #: 建设状态, 违法类型 and the rectification status (pending 待整改 → in_progress 整改中 → rectified 已整改 /
    #: closed_out 已销号).
    issued_no: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    land_user: Mapped[str | None] = mapped_column(String(200), nullable=True)
    project_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    construction_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    violation_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rectification_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    history: Mapped[list[WarningHistory]] = relationship(
        back_populates="warning", order_by="WarningHistory.id", cascade="all, delete-orphan"
    )
    verifications: Mapped[list[Verification]] = relationship(
        back_populates="warning", order_by="Verification.id", cascade="all, delete-orphan"
    )

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 - SQLAlchemy optimistic locking


class WarningHistory(Base):
    """One event in a warning's life: creation, assignment, status change, re-detection."""

    __tablename__ = "warning_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    warning_id: Mapped[str] = mapped_column(ForeignKey("warnings.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(32))  # created | assigned | status | verified | seen_again
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    by: Mapped[str | None] = mapped_column(String(64))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    why: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    warning: Mapped[WarningRecord] = relationship(back_populates="history")


class Verification(Base):
    """A field check (外业核查) of a warning."""

    __tablename__ = "verifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    warning_id: Mapped[str] = mapped_column(ForeignKey("warnings.id", ondelete="CASCADE"), index=True)
    result: Mapped[str] = mapped_column(String(16))  # illegal | legal | false_change
    reason: Mapped[str | None] = mapped_column(Text)
    actual_use: Mapped[str | None] = mapped_column(String(128))
    notes: Mapped[str | None] = mapped_column(Text)
    lon: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    observed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: GPS accuracy radius of ``lon``/``lat`` in metres (>= 0), as the device reported it.
    position_accuracy_m: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: Direction the device faced, degrees clockwise from true north (0-360).
    heading_deg: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: When the position fix was taken (device clock).
    position_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Device time of the check (may differ from ``created_at`` when it was queued offline).
    recorded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: GPS track recorded during the patrol, JSON ``[[lon, lat, iso_time], ...]`` (EPSG:4326; revision 0008).
    track_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    warning: Mapped[WarningRecord] = relationship(back_populates="verifications")

    @property
    def has_track(self) -> bool:
        """Whether a GPS track was recorded with this check (``track_json``)."""
        return bool(self.track_json)


class Patch(Base):
    """A raw change patch of one run (kept for audit and retraining)."""

    __tablename__ = "patches"
    __table_args__ = (UniqueConstraint("period", "county_code", "patch_id", name="uq_patches_run_patch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    period: Mapped[str] = mapped_column(String(16), index=True)
    county_code: Mapped[str] = mapped_column(String(12))
    patch_id: Mapped[str] = mapped_column(String(128))
    warning_id: Mapped[str | None] = mapped_column(ForeignKey("warnings.id", ondelete="SET NULL"), index=True)
    area_m2: Mapped[float] = mapped_column(Float)
    prob_mean: Mapped[float | None] = mapped_column(Float)
    prob_max: Mapped[float | None] = mapped_column(Float)
    t1: Mapped[dt.date | None] = mapped_column(Date)
    t2: Mapped[dt.date | None] = mapped_column(Date)
    #: Absolute paths of the scenes (bare file names in rows stored before revision 0003) and their sha256.
    scene_before: Mapped[str | None] = mapped_column(String(512))
    scene_after: Mapped[str | None] = mapped_column(String(512))
    scene_before_sha256: Mapped[str | None] = mapped_column(String(64))
    scene_after_sha256: Mapped[str | None] = mapped_column(String(64))
    detector: Mapped[str | None] = mapped_column(String(128))
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    model_version_id: Mapped[int | None] = mapped_column(Integer)
    geometry_wkt: Mapped[str] = mapped_column(Text)  # EPSG:4326
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The warning classifier's inputs (revision 0010): ``{"v": version, "bands": [...], "x": {name: value}}``;
    #: NULL when the run had no classifier. County re-fits and re-scoring read them (training.county_refit).
    features: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


#: Life of a registered model: registered → promoted (the county's current model) → retired.
MODEL_STATUSES: tuple[str, ...] = ("registered", "promoted", "retired")


class ModelVersion(Base):
    """A checkpoint registered for one county, with the held-back verification figures that justify it.

    At most one version per county is ``promoted`` (a partial unique index enforces it): that is the
    county's current model, which jobs and ``cspon-rs detect --db --county`` use. ``replaced_id`` is the
    version that was current when this one was promoted: rolling back makes it current again.
    """

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("county_code", "checkpoint_sha256", name="uq_model_versions_county_sha"),
        Index(
            "uq_model_versions_one_promoted",
            "county_code",
            unique=True,
            sqlite_where=text("status = 'promoted'"),
            postgresql_where=text("status = 'promoted'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    county_code: Mapped[str] = mapped_column(String(12), index=True)
    checkpoint_path: Mapped[str] = mapped_column(Text)  # absolute path of the .safetensors weights
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    bands: Mapped[list[str]] = mapped_column(JSON, default=list)
    detector: Mapped[str] = mapped_column(String(128))  # card name@version
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    parent_checkpoint: Mapped[str | None] = mapped_column(Text)
    parent_sha256: Mapped[str | None] = mapped_column(String(64))
    labels_path: Mapped[str | None] = mapped_column(Text)
    labels_sha256: Mapped[str | None] = mapped_column(String(64))
    labels_n_train: Mapped[int | None] = mapped_column(Integer)
    labels_n_holdout: Mapped[int | None] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(32))  # the deciding figure, e.g. "f1"
    #: ``holdout.json`` of the fine-tune: figures of this model ("candidate") and of the model it was compared
    #: against ("parent") on the same held-back verifications, plus the labels used.
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="registered", index=True)
    replaced_id: Mapped[int | None] = mapped_column(Integer)
    registered_by: Mapped[str | None] = mapped_column(String(64))
    registered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    promoted_by: Mapped[str | None] = mapped_column(String(64))
    promoted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ModelEvent(Base):
    """One event in the model registry of a county: registered, promoted, retired, rolled_back."""

    __tablename__ = "model_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    county_code: Mapped[str] = mapped_column(String(12), index=True)
    event: Mapped[str] = mapped_column(String(32))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    by: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class TriageDecision(Base):
    """A desk decision (内业判读) on a warning: a label with source ``desk`` (field checks are ``field``).

    ``decision`` is ``illegal`` (疑似违法 → field), ``legal`` (合法/已批), ``false_alarm`` (误报) or ``unsure``
    (不确定 → field). The row keeps who decided, when, the status move it made and the model that raised the
    warning. An undone decision keeps its row with ``undone_at``/``undone_by`` set; at most one decision per
    warning is active (not undone). See :mod:`cspon_rs.store.triage`.
    """

    __tablename__ = "triage_decisions"
    __table_args__ = (Index("ix_triage_decisions_county_period", "county_code", "period"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    warning_id: Mapped[str] = mapped_column(ForeignKey("warnings.id", ondelete="CASCADE"), index=True)
    county_code: Mapped[str] = mapped_column(String(12))
    period: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(16))  # illegal | legal | false_alarm | unsure
    source: Mapped[str] = mapped_column(String(8), default="desk")
    by: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    #: Confidence of the warning when it was judged, and the model that raised it (as on the warning).
    confidence: Mapped[float | None] = mapped_column(Float)
    detector: Mapped[str | None] = mapped_column(String(128))
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    model_version_id: Mapped[int | None] = mapped_column(Integer)
    #: How a bulk decision selected it (e.g. ``confidence 0.20-0.40``); ``None`` for one-by-one decisions.
    batch: Mapped[str | None] = mapped_column(String(128))
    undone_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    undone_by: Mapped[str | None] = mapped_column(String(64))


# Issued 图斑 and case tables (issue 23) live in their own module; imported here so every user of the ORM
# metadata (Alembic, the store) sees them.
from cspon_rs.store.case_models import CaseDocument, CaseStep, IssuedTuban  # noqa: E402, F401

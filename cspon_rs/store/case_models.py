"""ORM tables of 卫片执法 content (revision 0007, issue 23): issued 图斑 and the case handling after a check.

* ``issued_tuban``: the 监测图斑 a province/ministry issued for a county and period, with their own numbers
  (``JCBH``), imported by ``cspon-rs tuban import`` (:mod:`cspon_rs.store.issued`) and matched to the
  county's warnings;
* ``case_steps``: the 整改/处理 steps of a verified warning (立案, 拆除, 补办手续, 罚没, ...) with dates, each
  possibly moving the rectification status 待整改 → 整改中 → 已整改 / 已销号 (:mod:`cspon_rs.store.cases`);
* ``case_documents``: files attached to a case (decisions, receipts), stored under the service's data
  directory like photos.

The case fields themselves (用地主体, 项目名称, 建设状态, 违法类型, 整改状态) and ``issued_no`` are nullable
columns of ``warnings`` (:class:`cspon_rs.store.models.WarningRecord`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, Date, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cspon_rs.store.base import Base, UTCDateTime

__all__ = ["CaseDocument", "CaseStep", "IssuedTuban"]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class IssuedTuban(Base):
    """One issued 监测图斑 of a county and period, and what it matched among the warnings."""

    __tablename__ = "issued_tuban"
    __table_args__ = (UniqueConstraint("county_code", "period", "number", name="uq_issued_tuban_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    county_code: Mapped[str] = mapped_column(String(12), index=True)
    period: Mapped[str] = mapped_column(String(16), index=True)
    #: The issuer's number (监测编号 JCBH), kept as given.
    number: Mapped[str] = mapped_column(String(64))
    #: Area as issued (m², converted from the file's unit) and as measured here (GK planar m²).
    issued_area_m2: Mapped[float | None] = mapped_column(Float, nullable=True)
    area_m2: Mapped[float] = mapped_column(Float, default=0.0)
    change_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    t1: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    t2: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    #: ``polygon`` (SHP/GPKG) or ``point`` (a table with coordinates; stored as a circle of the issued area).
    geometry_kind: Mapped[str] = mapped_column(String(8), default="polygon")
    geometry_wkt: Mapped[str] = mapped_column(Text)  # EPSG:4326
    #: The warning that answers for it: the detected warning with the largest overlap, or the warning created
    #: for it when nothing was detected (``detected`` false).
    warning_id: Mapped[str | None] = mapped_column(ForeignKey("warnings.id", ondelete="SET NULL"), nullable=True)
    matched_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    match_share: Mapped[float | None] = mapped_column(Float, nullable=True)
    detected: Mapped[bool] = mapped_column(Boolean, default=False)
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    source_file: Mapped[str | None] = mapped_column(Text, nullable=True)
    imported_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    imported_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=_utcnow)


class CaseStep(Base):
    """One 整改/处理 step of a warning's case, optionally moving its rectification status."""

    __tablename__ = "case_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    warning_id: Mapped[str] = mapped_column(ForeignKey("warnings.id", ondelete="CASCADE"), index=True)
    #: filed 立案 | demolished 拆除 | permit_applied 补办手续 | fined 罚没 | reclaimed 复耕 | other 其他
    step: Mapped[str] = mapped_column(String(32))
    on_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=_utcnow)


class CaseDocument(Base):
    """A file attached to a case (the file lives at ``<data_dir>/<path>``)."""

    __tablename__ = "case_documents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    warning_id: Mapped[str] = mapped_column(ForeignKey("warnings.id", ondelete="CASCADE"), index=True)
    step_id: Mapped[int | None] = mapped_column(ForeignKey("case_steps.id", ondelete="SET NULL"), nullable=True)
    path: Mapped[str] = mapped_column(Text)
    original_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=_utcnow)

"""Case handling after the field check (查处/整改): case fields, 整改 steps with dates, documents, history.

Once a warning is verified, the bureau records the case: 用地主体 (``land_user``), 项目名称 (``project_name``),
建设状态 (``construction_status``: :data:`CONSTRUCTION_STATUSES`) and 违法类型 (``violation_type``, free text,
e.g. 未批先建, 非法占用耕地), and the 整改/处理 steps (:data:`CASE_STEPS`: 立案, 拆除, 补办手续, 罚没, 复耕, 销号,
其他) with their dates. A step may move the rectification status along its own line::

    (none) → pending 待整改 → in_progress 整改中 → rectified 已整改 → closed_out 已销号
                         ↘──────────────────────↗ (directly)      ↖ rectified → in_progress (re-opened)

Every change is one transaction with a ``case`` / ``case_step`` / ``case_document`` history event on the
warning (its ``version`` increases, so ``expected_version`` protects against concurrent edits like every
other write). Documents are files stored by the API (``<data_dir>/cases/<warning id>/``), listed in
``case_documents``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import geopandas as gpd
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cspon_rs.errors import ConflictError, InvalidTransitionError, SchemaError
from cspon_rs.store.case_models import CaseDocument, CaseStep
from cspon_rs.store.crud import get_warning
from cspon_rs.store.models import WarningHistory, WarningRecord

__all__ = [
    "CASE_COLUMNS",
    "CASE_STEPS",
    "CONSTRUCTION_STATUSES",
    "RECTIFICATION",
    "RECTIFICATION_ZH",
    "DocumentFile",
    "add_case_document",
    "add_case_step",
    "attach_case_records",
    "case_steps",
    "update_case",
]

#: 整改/处理 steps (code → 中文).
CASE_STEPS: dict[str, str] = {
    "filed": "立案", "demolished": "拆除", "permit_applied": "补办手续", "fined": "罚没", "reclaimed": "复耕",
    "closed_out": "销号", "other": "其他",
}
StepName = Literal["filed", "demolished", "permit_applied", "fined", "reclaimed", "closed_out", "other"]
#: 建设状态 (code → 中文).
CONSTRUCTION_STATUSES: dict[str, str] = {
    "not_started": "未动工", "under_construction": "在建", "completed": "已建成", "stopped": "停工",
    "demolished": "已拆除",
}
ConstructionStatus = Literal["not_started", "under_construction", "completed", "stopped", "demolished"]
#: Rectification status line: allowed moves (``None`` = no case yet).
RECTIFICATION: dict[str | None, frozenset[str]] = {
    None: frozenset({"pending"}),
    "pending": frozenset({"in_progress", "rectified", "closed_out"}),
    "in_progress": frozenset({"rectified", "closed_out"}),
    "rectified": frozenset({"closed_out", "in_progress"}),
    "closed_out": frozenset(),
}
Rectification = Literal["pending", "in_progress", "rectified", "closed_out"]
RECTIFICATION_ZH: dict[str, str] = {
    "pending": "待整改", "in_progress": "整改中", "rectified": "已整改", "closed_out": "已销号",
}
#: Columns :func:`attach_case_records` adds to a warnings frame.
CASE_COLUMNS: tuple[str, ...] = (
    "land_user", "project_name", "construction_status_zh", "violation_type", "rectification_zh", "case_steps_zh",
    "case_document_count",
)
_AFTER_CHECK = ("verified", "closed")


def _editable(record: WarningRecord, expected_version: int | None) -> None:
    if record.status not in _AFTER_CHECK:
        raise InvalidTransitionError(
            f"warning {record.id} is {record.status}: a case is recorded after the field check (status verified "
            "or closed)")
    if expected_version is not None and record.version != expected_version:
        raise ConflictError(f"warning {record.id} changed (version {record.version}, you saw {expected_version}); "
                            "reload it and try again")


def _clean(value: str | None, field: str, limit: int) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if len(text) > limit:
        raise SchemaError(f"{field}: at most {limit} characters (got {len(text)})")
    return text or None


def update_case(
    session: Session,
    warning_id: str,
    *,
    by: str,
    expected_version: int | None = None,
    land_user: str | None = None,
    project_name: str | None = None,
    construction_status: ConstructionStatus | None = None,
    violation_type: str | None = None,
) -> WarningRecord:
    """Set the case fields given (``None`` leaves a field as it is) with a ``case`` history event.

    Raises:
        NotFoundError: No such warning; InvalidTransitionError: not verified yet; ConflictError: stale version;
        SchemaError: a value too long or an unknown construction status.
    """
    record = get_warning(session, warning_id)
    _editable(record, expected_version)
    if construction_status is not None and construction_status not in CONSTRUCTION_STATUSES:
        raise SchemaError(f"construction_status {construction_status!r}: use one of {list(CONSTRUCTION_STATUSES)}")
    values = {"land_user": _clean(land_user, "land_user", 200), "project_name": _clean(project_name, "project_name",
                                                                                       200),
              "construction_status": construction_status,
              "violation_type": _clean(violation_type, "violation_type", 64)}
    changed = {k: v for k, v in values.items() if v is not None and getattr(record, k) != v}
    if not changed:
        return record
    before = {k: getattr(record, k) for k in changed}
    for key, value in changed.items():
        setattr(record, key, value)
    record.history.append(WarningHistory(event="case", by=by, from_status=record.status, to_status=record.status,
                                         why="case fields: " + ", ".join(sorted(changed)),
                                         details={"before": before, "after": changed}))
    session.commit()
    return record


@dataclass(frozen=True)
class DocumentFile:
    """A stored file to list as a case document (``path`` relative to the service data directory)."""

    path: str
    content_type: str
    size: int
    sha256: str
    original_name: str | None = None


def add_case_step(
    session: Session,
    warning_id: str,
    *,
    step: StepName,
    by: str,
    on_date: dt.date | None = None,
    to_status: Rectification | None = None,
    notes: str | None = None,
    expected_version: int | None = None,
    documents: Sequence[DocumentFile] = (),
) -> CaseStep:
    """Record one 整改/处理 step with its documents (one transaction); ``to_status`` moves the rectification
    status (the first step of a case opens it as ``pending`` when no status is given).

    Raises:
        InvalidTransitionError: Not verified yet, or a move not in :data:`RECTIFICATION`; ConflictError: stale
            version; SchemaError: unknown step, a date in the future or before 2000.
    """
    record = get_warning(session, warning_id)
    _editable(record, expected_version)
    if step not in CASE_STEPS:
        raise SchemaError(f"step {step!r}: use one of {list(CASE_STEPS)}")
    today = dt.date.today()
    if on_date is not None and not dt.date(2000, 1, 1) <= on_date <= today + dt.timedelta(days=1):
        raise SchemaError(f"on_date {on_date.isoformat()}: give a date between 2000-01-01 and today")
    current = record.rectification_status
    target = to_status if to_status is not None else ("pending" if current is None else None)
    if target is not None and target != current and target not in RECTIFICATION.get(current, frozenset()):
        allowed = sorted(RECTIFICATION.get(current, frozenset()))
        raise InvalidTransitionError(f"rectification {current or '(none)'} → {target} is not allowed; "
                                     f"from {current or '(none)'} go to {allowed or 'nothing (final)'}")
    row = CaseStep(warning_id=record.id, step=step, on_date=on_date or today, from_status=current,
                   to_status=target if target is not None else current, notes=_clean(notes, "notes", 4000), by=by)
    session.add(row)
    if target is not None and target != current:
        record.rectification_status = target
    record.history.append(WarningHistory(
        event="case_step", by=by, from_status=record.status, to_status=record.status,
        why=f"{CASE_STEPS[step]} ({step}) on {row.on_date.isoformat() if row.on_date else ''}"
            + (f"; 整改状态 {RECTIFICATION_ZH.get(current or '', '—')} → {RECTIFICATION_ZH[target]}"
               if target is not None and target != current else ""),
        details={"step": step, "on_date": row.on_date.isoformat() if row.on_date else None,
                 "from": current, "to": row.to_status, "documents": len(documents)},
    ))
    record.updated_at = dt.datetime.now(dt.UTC)  # a step is a change of the warning (version increases)
    if documents:
        session.flush()  # the step's id for its documents
        for doc in documents:
            _attach(session, record, doc, by, row.id)
    session.commit()
    return row


def _attach(session: Session, record: WarningRecord, doc: DocumentFile, by: str, step_id: int | None
            ) -> CaseDocument:
    row = CaseDocument(warning_id=record.id, step_id=step_id, path=doc.path, content_type=doc.content_type,
                       size=doc.size, sha256=doc.sha256, by=by, original_name=(doc.original_name or "")[:255] or None)
    session.add(row)
    record.history.append(WarningHistory(event="case_document", by=by, from_status=record.status,
                                         to_status=record.status, why=f"document {doc.original_name or doc.path}",
                                         details={"sha256": doc.sha256, "size": doc.size, "step_id": step_id}))
    return row


def add_case_document(
    session: Session, warning_id: str, doc: DocumentFile, *, by: str, step_id: int | None = None
) -> CaseDocument:
    """List a stored file as a document of the case (after :func:`cspon_rs.api.uploads.save_upload`).

    Raises:
        InvalidTransitionError: Not verified yet; SchemaError: ``step_id`` is not a step of this warning.
    """
    record = get_warning(session, warning_id)
    _editable(record, None)
    if step_id is not None:
        step = session.get(CaseStep, step_id)
        if step is None or step.warning_id != record.id:
            raise SchemaError(f"step_id {step_id}: not a case step of {record.id}")
    row = _attach(session, record, doc, by, step_id)
    record.updated_at = dt.datetime.now(dt.UTC)
    session.commit()
    return row


def case_steps(session: Session, warning_id: str) -> tuple[list[CaseStep], list[CaseDocument]]:
    """The steps and documents of a warning's case, oldest first."""
    steps = list(session.scalars(select(CaseStep).where(CaseStep.warning_id == warning_id).order_by(CaseStep.id)))
    docs = list(session.scalars(select(CaseDocument).where(CaseDocument.warning_id == warning_id)
                                .order_by(CaseDocument.id)))
    return steps, docs


def _steps_text(steps: Sequence[CaseStep]) -> str | None:
    parts = [f"{s.on_date.isoformat() if s.on_date else ''} {CASE_STEPS.get(s.step, s.step)}"
             + (f"（{s.notes}）" if s.notes else "") for s in steps]
    return "；".join(p.strip() for p in parts) or None


def attach_case_records(warnings: gpd.GeoDataFrame, session: Session) -> gpd.GeoDataFrame:
    """``warnings`` (with ``warning_id``) plus :data:`CASE_COLUMNS` from the store, and ``verified_by`` as the
    checker's display name (``users add --display-name``) where one is set. A copy; rows not in the store get
    empty values."""
    out = warnings.copy()
    ids = [str(v) for v in out["warning_id"]] if "warning_id" in out.columns else []
    records: dict[str, WarningRecord] = {}
    steps: dict[str, list[CaseStep]] = {}
    docs: dict[str, int] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        records.update({r.id: r for r in session.scalars(select(WarningRecord).where(WarningRecord.id.in_(chunk)))})
        for step in session.scalars(select(CaseStep).where(CaseStep.warning_id.in_(chunk)).order_by(CaseStep.id)):
            steps.setdefault(step.warning_id, []).append(step)
        query = select(CaseDocument.warning_id, func.count(CaseDocument.id)).where(CaseDocument.warning_id.in_(chunk))
        docs.update({str(w): int(n) for w, n in session.execute(query.group_by(CaseDocument.warning_id))})

    def value(i: str, name: str) -> Any:
        record = records.get(i)
        return getattr(record, name) if record is not None else None

    out["land_user"] = [value(i, "land_user") for i in ids]
    out["project_name"] = [value(i, "project_name") for i in ids]
    out["construction_status_zh"] = [CONSTRUCTION_STATUSES.get(value(i, "construction_status") or "")
                                     for i in ids]
    out["violation_type"] = [value(i, "violation_type") for i in ids]
    out["rectification_zh"] = [RECTIFICATION_ZH.get(value(i, "rectification_status") or "") for i in ids]
    out["case_steps_zh"] = [_steps_text(steps.get(i, [])) for i in ids]
    out["case_document_count"] = pd.Series([docs.get(i, 0) for i in ids], index=out.index, dtype="int64")
    if "verified_by" in out.columns and len(out):
        from sqlalchemy import inspect

        if inspect(session.connection()).has_table("api_users"):
            from cspon_rs.store.api_models import ApiUser

            names = {str(n) for n in out["verified_by"] if isinstance(n, str)}
            shown = {u.name: u.display_name for u in session.scalars(select(ApiUser).where(ApiUser.name.in_(names)))
                     if u.display_name} if names else {}
            out["verified_by"] = [shown.get(n, n) if isinstance(n, str) else n for n in out["verified_by"]]
    return out

"""Desk triage (内业判读): plain functions that judge warnings at the desk before anyone drives out.

A desk decision is a label with source ``desk`` (field verifications are ``field``): who decided, when, the
decision and the model that raised the warning, kept as a :class:`~cspon_rs.store.models.TriageDecision` row.
It moves the warning along the status workflow and is recorded in ``warning_history``:

==============  ==============  ==========================================
decision        中文             status move
==============  ==============  ==========================================
``illegal``     疑似违法          ``new`` → ``to_field`` (待外业)
``unsure``      不确定           ``new`` → ``to_field`` (待外业)
``legal``       合法/已批         ``new`` → ``desk_excluded`` (内业排除)
``false_alarm`` 误报             ``new`` → ``desk_excluded`` (内业排除)
==============  ==============  ==========================================

Rules:

* only ``new`` warnings are triaged; a warning already assigned, verified or closed is refused
  (:class:`~cspon_rs.errors.InvalidTransitionError`);
* at most one decision per warning is active. A second decision by **another** reviewer raises
  :class:`TriageConflictError` carrying the first one (never a silent overwrite); the same reviewer may change
  their own decision while the warning has not moved on (the old row is marked undone);
* :func:`undo_decision` puts the warning back to ``new`` (only the reviewer who decided, or an admin, and only
  while the warning is still where the decision put it);
* both ``to_field`` and ``desk_excluded`` warnings can be assigned to a field team; a field verification then
  overrides the desk label (:func:`desk_labels` leaves out every warning that has a field check).

Every writing function is one transaction (commit on success, rollback on error), as in
:mod:`cspon_rs.store.crud`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import shapely
from shapely import wkt as shapely_wkt
from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from cspon_rs.errors import ConflictError, InvalidTransitionError, SchemaError
from cspon_rs.store.crud import _check_version, _transaction, get_warning, own_patches
from cspon_rs.store.models import (
    Patch,
    TriageDecision,
    Verification,
    WarningHistory,
    WarningRecord,
    utcnow,
)

__all__ = [
    "DECISION_STATUS",
    "DECISION_ZH",
    "DESK_DECISIONS",
    "DESK_LABEL",
    "TRIAGE_ORDERS",
    "BulkResult",
    "Decision",
    "TriageConflictError",
    "TriageCounters",
    "TriageOrder",
    "active_decision",
    "bulk_decide",
    "decide",
    "desk_labels",
    "recent_decisions",
    "triage_counters",
    "triage_queue",
    "undo_decision",
]

Decision = Literal["illegal", "legal", "false_alarm", "unsure"]
TriageOrder = Literal["confidence", "township", "area"]

#: The four desk decisions, in the order of their keys (1-4) in the triage screen.
DESK_DECISIONS: tuple[str, ...] = ("illegal", "legal", "false_alarm", "unsure")
#: Orders of the queue: highest confidence first, by township (then confidence), largest area first.
TRIAGE_ORDERS: tuple[str, ...] = ("confidence", "township", "area")
#: Status each decision moves a ``new`` warning to.
DECISION_STATUS: dict[str, str] = {
    "illegal": "to_field", "unsure": "to_field", "legal": "desk_excluded", "false_alarm": "desk_excluded",
}
DECISION_ZH: dict[str, str] = {"illegal": "疑似违法", "legal": "合法/已批", "false_alarm": "误报", "unsure": "不确定"}
#: Training label of a desk decision: 1 real change, 0 false alarm; ``unsure`` is no label.
DESK_LABEL: dict[str, int] = {"illegal": 1, "legal": 1, "false_alarm": 0}
#: Largest selection one bulk decision may change (a bigger one is refused: narrow the box or band).
MAX_BULK = 5000


class TriageConflictError(ConflictError):
    """Another reviewer already decided this warning (or changed it meanwhile); ``first`` is their decision."""

    def __init__(self, message: str, first: TriageDecision | None = None) -> None:
        super().__init__(message)
        self.first = first


@dataclass
class BulkResult:
    """What :func:`bulk_decide` did (or, with ``dry_run``, would do).

    Attributes:
        count: Warnings decided (or selected, in a dry run).
        ids: Their ids, in queue order.
        skipped: Ids named in ``ids`` that are not untriaged ``new`` warnings of the county and period.
        dry_run: Nothing was written.
    """

    count: int
    ids: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dry_run: bool = False


@dataclass
class TriageCounters:
    """Progress of the desk triage of one county and period.

    Attributes:
        total: Warnings of the period (legal rows without flags are not warnings and not counted).
        done: Warnings with an active desk decision.
        left: Untriaged warnings still ``new`` (what the queue holds).
        by_decision: Active decisions per decision.
        mine: Active decisions of the caller; ``mine_last_hour`` those made in the last 60 minutes.
        per_hour: The caller's pace: decisions of the last hour, counted over the time since the first of them
            (at least 60 s), scaled to one hour; 0 without decisions.
        labels_desk, labels_field: Training labels of the whole county (every period): active desk decisions
            other than ``unsure`` on warnings without a field check, and warnings with a field check.
    """

    total: int
    done: int
    left: int
    by_decision: dict[str, int]
    mine: int
    mine_last_hour: int
    per_hour: float
    labels_desk: int = 0
    labels_field: int = 0


def _active_clause() -> Any:
    return TriageDecision.undone_at.is_(None)


def active_decision(session: Session, warning_id: str) -> TriageDecision | None:
    """The warning's active (not undone) desk decision, or ``None``."""
    return session.scalars(
        select(TriageDecision)
        .where(TriageDecision.warning_id == warning_id, _active_clause())
        .order_by(TriageDecision.id.desc())
        .limit(1)
    ).first()


def _untriaged(county_code: str, period: str) -> list[Any]:
    """Clauses of the queue: the period's ``new`` warnings without an active desk decision."""
    decided = exists().where(TriageDecision.warning_id == WarningRecord.id, _active_clause())
    return [
        WarningRecord.county_code == county_code,
        WarningRecord.period == period,
        WarningRecord.is_warning.is_(True),
        WarningRecord.status == "new",
        ~decided,
    ]


def _order(order: str) -> list[Any]:
    if order not in TRIAGE_ORDERS:
        raise SchemaError(f"triage order {order!r}: use one of {list(TRIAGE_ORDERS)}")
    by_confidence = [WarningRecord.confidence.is_(None), WarningRecord.confidence.desc(),
                     WarningRecord.priority.desc(), WarningRecord.id]
    if order == "township":
        return [WarningRecord.township_name.is_(None), WarningRecord.township_name, *by_confidence]
    if order == "area":
        return [WarningRecord.area_m2.desc(), WarningRecord.id]
    return by_confidence


def triage_queue(
    session: Session,
    *,
    county_code: str,
    period: str,
    order: TriageOrder = "confidence",
    limit: int | None = 200,
    offset: int = 0,
) -> tuple[list[WarningRecord], int]:
    """The untriaged warnings of a county and period in triage order, one page, and how many there are.

    Args:
        order: ``confidence`` (highest first; warnings without one last), ``township`` (by township name,
            then confidence) or ``area`` (largest first).
        limit: At most this many (``None``: all); ``offset`` skips the first ones.
    """
    clauses = _untriaged(county_code, period)
    query = select(WarningRecord).where(and_(*clauses)).order_by(*_order(order)).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    rows = list(session.scalars(query))
    if offset == 0 and (limit is None or len(rows) < limit):
        return rows, len(rows)
    total = int(session.scalar(select(func.count(WarningRecord.id)).where(and_(*clauses))) or 0)
    return rows, total


def _check_decision(decision: str) -> None:
    if decision not in DESK_DECISIONS:
        raise SchemaError(f"desk decision {decision!r}: use one of {list(DESK_DECISIONS)}")


def _first_line(first: TriageDecision) -> str:
    at = first.at.isoformat(timespec="seconds") if first.at else "?"
    return f"{first.decision} ({DECISION_ZH.get(first.decision, '?')}) by {first.by or '?'} at {at}"


def _apply(
    session: Session, record: WarningRecord, decision: str, *, by: str | None, batch: str | None,
    from_status: str, changed_from: str | None = None,
) -> TriageDecision:
    """Inside a transaction: move ``record`` for ``decision`` and add the decision row and history event."""
    to_status = DECISION_STATUS[decision]
    row = TriageDecision(
        warning_id=record.id, county_code=record.county_code, period=record.period, decision=decision,
        source="desk", by=by, at=utcnow(), from_status=from_status, to_status=to_status,
        confidence=record.confidence, detector=record.detector, model_sha256=record.model_sha256,
        model_version_id=record.model_version_id, batch=batch,
    )
    session.add(row)
    before = record.status
    record.status = to_status
    why = (f"desk triage: {decision} ({DECISION_ZH[decision]})" + (f"; bulk, {batch}" if batch else "")
           + (f"; changed from {changed_from}" if changed_from else ""))
    record.history.append(WarningHistory(
        event="triage", by=by, from_status=before, to_status=to_status, why=why,
        details={"decision": decision, "source": "desk", "batch": batch, "detector": record.detector,
                 "model_version_id": record.model_version_id},
    ))
    return row


def decide(
    session: Session,
    warning_id: str,
    decision: Decision,
    *,
    by: str,
    expected_version: int | None = None,
) -> TriageDecision:
    """Record a desk decision on one warning and move it (``new`` → ``to_field`` / ``desk_excluded``).

    Args:
        decision: ``illegal`` / ``unsure`` (→ 待外业 ``to_field``) or ``legal`` / ``false_alarm``
            (→ 内业排除 ``desk_excluded``).
        by: The reviewer (user name).
        expected_version: The warning ``version`` the reviewer saw (optimistic lock); ``None`` skips the check.

    Raises:
        NotFoundError: No such warning.
        TriageConflictError: Another reviewer decided it already (``first`` is that decision), or the
            version is stale.
        InvalidTransitionError: The warning is not ``new`` (assigned, verified, closed), or it moved on
            since the reviewer's own decision.
        SchemaError: Unknown decision.
    """
    _check_decision(decision)
    with _transaction(session, f"warning {warning_id}"):
        record = get_warning(session, warning_id)
        first = active_decision(session, warning_id)
        from_status = record.status
        if first is not None:
            if first.by != by:
                raise TriageConflictError(
                    f"warning {warning_id} was already triaged: {_first_line(first)}; a second decision is "
                    "refused (ask them, or have them undo it)", first)
            if record.status != first.to_status:
                raise InvalidTransitionError(
                    f"warning {warning_id}: your decision {first.decision!r} moved it to {first.to_status!r}, but "
                    f"it is {record.status!r} now; it cannot be re-triaged")
            if first.decision == decision:
                return first
            first.undone_at, first.undone_by = utcnow(), by
            from_status = first.from_status or "new"
        else:
            if record.status != "new":
                raise InvalidTransitionError(
                    f"warning {warning_id} is {record.status!r}: desk triage judges only new (待核查) warnings")
        try:
            _check_version(record, expected_version)
        except ConflictError as exc:
            raise TriageConflictError(str(exc), first) from exc
        row = _apply(session, record, decision, by=by, batch=None, from_status=from_status,
                     changed_from=first.decision if first is not None else None)
    return row


def undo_decision(session: Session, warning_id: str, *, by: str, admin: bool = False) -> TriageDecision:
    """Undo the warning's active desk decision: the warning goes back to the status it had (``new``).

    Args:
        by: Who undoes it; must be the reviewer who decided unless ``admin``.

    Returns:
        The undone decision (``undone_at`` / ``undone_by`` set).

    Raises:
        NotFoundError: No such warning.
        InvalidTransitionError: No active desk decision, or the warning moved on (e.g. assigned to a team).
        TriageConflictError: Another reviewer's decision (``first``).
    """
    with _transaction(session, f"warning {warning_id}"):
        record = get_warning(session, warning_id)
        first = active_decision(session, warning_id)
        if first is None:
            raise InvalidTransitionError(f"warning {warning_id} has no desk decision to undo")
        if first.by != by and not admin:
            raise TriageConflictError(
                f"warning {warning_id} was triaged by someone else: {_first_line(first)}; only they can undo it",
                first)
        if record.status != first.to_status:
            raise InvalidTransitionError(
                f"warning {warning_id}: the desk decision moved it to {first.to_status!r}, but it is "
                f"{record.status!r} now (e.g. assigned to a field team); un-assign it first")
        back = first.from_status or "new"
        first.undone_at, first.undone_by = utcnow(), by
        before = record.status
        record.status = back
        record.history.append(WarningHistory(
            event="triage_undone", by=by, from_status=before, to_status=back,
            why=f"desk triage undone: {first.decision} ({DECISION_ZH.get(first.decision, '?')})",
            details={"decision": first.decision, "source": "desk", "decision_id": first.id},
        ))
    return first


def _selection(
    session: Session,
    *,
    county_code: str,
    period: str,
    ids: Sequence[str] | None,
    bbox: tuple[float, float, float, float] | None,
    min_confidence: float | None,
    max_confidence: float | None,
    order: str,
) -> tuple[list[WarningRecord], list[str]]:
    if ids is None and bbox is None and min_confidence is None and max_confidence is None:
        raise SchemaError("bulk triage needs a selection: ids, bbox or a confidence band (min/max_confidence)")
    clauses = _untriaged(county_code, period)
    if ids is not None:
        clauses.append(WarningRecord.id.in_(list(ids)))
    if min_confidence is not None:
        clauses.append(WarningRecord.confidence >= min_confidence)
    if max_confidence is not None:
        clauses.append(WarningRecord.confidence <= max_confidence)
    if bbox is not None:
        minx, miny, maxx, maxy = bbox
        if minx > maxx or miny > maxy:
            raise SchemaError(f"bbox {bbox}: expected (min_lon, min_lat, max_lon, max_lat)")
        clauses += [WarningRecord.maxx >= minx, WarningRecord.minx <= maxx,
                    WarningRecord.maxy >= miny, WarningRecord.miny <= maxy]
    rows = list(session.scalars(select(WarningRecord).where(and_(*clauses)).order_by(*_order(order))))
    if bbox is not None:
        box = shapely.box(*bbox)
        rows = [w for w in rows if shapely_wkt.loads(w.geometry_wkt).intersects(box)]
    skipped = sorted(set(ids) - {w.id for w in rows}) if ids is not None else []
    return rows, skipped


def bulk_decide(
    session: Session,
    *,
    county_code: str,
    period: str,
    decision: Decision,
    by: str,
    ids: Sequence[str] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    min_confidence: float | None = None,
    max_confidence: float | None = None,
    dry_run: bool = False,
    order: TriageOrder = "confidence",
) -> BulkResult:
    """One desk decision for every untriaged warning of a selection, in one transaction.

    The selection is the untriaged ``new`` warnings of the county and period that match every criterion
    given: ``ids``, ``bbox`` (``min_lon, min_lat, max_lon, max_lat``, EPSG:4326; the polygon must intersect
    it) and the confidence band ``min_confidence <= confidence <= max_confidence`` (warnings without a
    confidence never match a band). Warnings decided already are never changed; named ``ids`` that are not
    selectable are returned in ``skipped``.

    Args:
        dry_run: Only count (for the confirmation that states the count); nothing is written.

    Raises:
        SchemaError: No criterion, a bad bbox, an unknown decision, or more than :data:`MAX_BULK` warnings.
    """
    _check_decision(decision)
    for name, value in (("min_confidence", min_confidence), ("max_confidence", max_confidence)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise SchemaError(f"{name} {value!r}: give a confidence between 0 and 1")
    with _transaction(session, f"bulk triage of {county_code} {period}"):
        rows, skipped = _selection(session, county_code=county_code, period=period, ids=ids, bbox=bbox,
                                   min_confidence=min_confidence, max_confidence=max_confidence, order=order)
        if len(rows) > MAX_BULK:
            raise SchemaError(f"bulk triage: {len(rows)} warnings selected, at most {MAX_BULK} at once; "
                              "narrow the box or the confidence band")
        result = BulkResult(count=len(rows), ids=[w.id for w in rows], skipped=skipped, dry_run=dry_run)
        if dry_run or not rows:
            session.rollback()
            return result
        parts = []
        if min_confidence is not None or max_confidence is not None:
            parts.append(f"confidence {min_confidence if min_confidence is not None else 0:.2f}-"
                         f"{max_confidence if max_confidence is not None else 1:.2f}")
        if bbox is not None:
            parts.append("box " + ",".join(f"{v:.5f}" for v in bbox))
        if ids is not None:
            parts.append(f"{len(ids)} ids")
        batch = f"{len(rows)} warnings: " + "; ".join(parts)
        for record in rows:
            _apply(session, record, decision, by=by, batch=batch[:128], from_status=record.status)
    return result


def triage_counters(session: Session, *, county_code: str, period: str, by: str | None = None,
                    now: dt.datetime | None = None) -> TriageCounters:
    """Done / left / per-hour counters of the desk triage of a county and period (see :class:`TriageCounters`)."""
    now = now or utcnow()
    total = int(session.scalar(select(func.count(WarningRecord.id)).where(
        WarningRecord.county_code == county_code, WarningRecord.period == period,
        WarningRecord.is_warning.is_(True))) or 0)
    left = int(session.scalar(select(func.count(WarningRecord.id)).where(
        and_(*_untriaged(county_code, period)))) or 0)
    active = and_(TriageDecision.county_code == county_code, TriageDecision.period == period, _active_clause())
    by_decision = {d: 0 for d in DESK_DECISIONS}
    for decision, n in session.execute(
        select(TriageDecision.decision, func.count(TriageDecision.id)).where(active).group_by(TriageDecision.decision)
    ):
        by_decision[str(decision)] = int(n)
    mine = mine_hour = 0
    per_hour = 0.0
    if by is not None:
        mine = int(session.scalar(select(func.count(TriageDecision.id)).where(active, TriageDecision.by == by)) or 0)
        hour_ago = now - dt.timedelta(hours=1)
        row = session.execute(select(func.count(TriageDecision.id), func.min(TriageDecision.at)).where(
            TriageDecision.county_code == county_code, TriageDecision.period == period, TriageDecision.by == by,
            TriageDecision.at >= hour_ago)).one()
        mine_hour = int(row[0] or 0)
        if mine_hour:
            first = row[1] if row[1].tzinfo else row[1].replace(tzinfo=dt.UTC)
            span_s = max((now - first).total_seconds(), 60.0)
            per_hour = round(mine_hour * 3600.0 / span_s, 1)
    checked = exists().where(Verification.warning_id == TriageDecision.warning_id)
    labels_desk = int(session.scalar(select(func.count(TriageDecision.id)).where(
        TriageDecision.county_code == county_code, _active_clause(), TriageDecision.decision.in_(list(DESK_LABEL)),
        ~checked)) or 0)
    labels_field = int(session.scalar(
        select(func.count(func.distinct(Verification.warning_id)))
        .join(WarningRecord, WarningRecord.id == Verification.warning_id)
        .where(WarningRecord.county_code == county_code)) or 0)
    return TriageCounters(total=total, done=sum(by_decision.values()), left=left, by_decision=by_decision,
                          mine=mine, mine_last_hour=mine_hour, per_hour=per_hour, labels_desk=labels_desk,
                          labels_field=labels_field)


def recent_decisions(session: Session, *, county_code: str, period: str, by: str | None = None,
                     limit: int = 200) -> list[TriageDecision]:
    """Desk decisions of a county and period, newest first (undone ones included); only ``by``'s if given."""
    query = select(TriageDecision).where(TriageDecision.county_code == county_code, TriageDecision.period == period)
    if by is not None:
        query = query.where(TriageDecision.by == by)
    return list(session.scalars(query.order_by(TriageDecision.id.desc()).limit(limit)))


def desk_labels(
    session: Session, *, county_code: str, period: str | None = None
) -> list[tuple[WarningRecord, TriageDecision, Patch | None]]:
    """Active desk decisions that are labels (not ``unsure``) on warnings **without** a field check.

    A field verification overrides the desk: a warning that has one is left out here (its field label is
    exported instead). Returns each warning with its decision and the raw patch of its own period and patch
    id (``None`` for 批而不建 permit rows or when no patch was stored), ordered by warning id.
    """
    checked = exists().where(Verification.warning_id == WarningRecord.id)
    query = (
        select(WarningRecord, TriageDecision)
        .join(TriageDecision, TriageDecision.warning_id == WarningRecord.id)
        .where(TriageDecision.county_code == county_code, _active_clause(),
               TriageDecision.decision.in_(list(DESK_LABEL)), ~checked)
        .order_by(WarningRecord.id)
    )
    if period is not None:
        query = query.where(WarningRecord.period == period)
    pairs = [(r[0], r[1]) for r in session.execute(query)]
    patches = own_patches(session, [record for record, _ in pairs])
    return [(record, row, patches.get(record.id)) for record, row in pairs]

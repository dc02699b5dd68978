"""Desk triage (内业判读) for bureaus: the queue of untriaged warnings, decisions, undo, bulk decisions, counters,
and the triage page (``GET /triage``).

Every endpoint is for the bureau role (and admin) and county-scoped like the warnings: a warning of another
county answers the same 404 as a missing one; asking for another county is 403. A second reviewer's decision
on a warning someone already decided is a 409 whose body shows the first decision (``first``).
Store functions: :mod:`cspon_rs.store.triage`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse

from cspon_rs.api.deps import SessionDep, error_detail, require_roles
from cspon_rs.api.routers.warnings import scoped_county, visible_warning, warning_out
from cspon_rs.api.triage_schemas import (
    BulkIn,
    BulkOut,
    CountersOut,
    DecideIn,
    DecisionOut,
    DecisionResult,
    TriageConflictOut,
    TriageQueue,
    UndoIn,
)
from cspon_rs.errors import ConflictError
from cspon_rs.store.api_models import ApiUser

router = APIRouter(prefix="/triage", tags=["triage"])
page_router = APIRouter()

BureauUser = Annotated[ApiUser, Depends(require_roles("bureau"))]
Period = Annotated[str, Query(max_length=16, pattern=r"^[0-9A-Za-z][0-9A-Za-z_-]{0,15}$", description="e.g. 2018Q1")]
County = Annotated[str | None, Query(max_length=12, description="default: your county (admin: required)")]

_CONFLICT = {409: {"model": TriageConflictOut, "description": "decided by someone else: `first` shows it"}}


def _county(user: ApiUser, requested: str | None) -> str:
    county = scoped_county(user, requested)
    if county is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=error_detail("county_code", "give the county_code to triage (an admin has no county)", "query"),
        )
    return county


def _conflict(session: SessionDep, warning_id: str, exc: ConflictError) -> JSONResponse:
    """409 naming the problem, with the decision already recorded and the warning as it is now."""
    from cspon_rs.store.crud import get_warning
    from cspon_rs.store.triage import TriageConflictError, active_decision

    session.rollback()
    first = exc.first if isinstance(exc, TriageConflictError) else None
    if first is None:
        first = active_decision(session, warning_id)
    body = TriageConflictOut(
        detail=[{"loc": ["path", "warning_id"], "msg": str(exc), "type": "conflict"}],
        error=type(exc).__name__,
        first=DecisionOut.model_validate(first) if first is not None else None,
        warning=warning_out(get_warning(session, warning_id)),
    )
    return JSONResponse(status_code=status.HTTP_409_CONFLICT, content=jsonable_encoder(body))


def _counters(session: SessionDep, user: ApiUser, county: str, period: str) -> CountersOut:
    from cspon_rs.store.triage import triage_counters

    c = triage_counters(session, county_code=county, period=period, by=user.name)
    return CountersOut(county_code=county, period=period, total=c.total, done=c.done, left=c.left,
                       by_decision=c.by_decision, mine=c.mine, mine_last_hour=c.mine_last_hour, per_hour=c.per_hour,
                       labels_desk=c.labels_desk, labels_field=c.labels_field)


def _result(session: SessionDep, user: ApiUser, row: Any) -> DecisionResult:
    from cspon_rs.store.crud import get_warning

    warning = warning_out(get_warning(session, row.warning_id))
    return DecisionResult(decision=DecisionOut.model_validate(row), warning=warning,
                          counters=_counters(session, user, warning.county_code, warning.period))


@router.get("/queue", response_model=TriageQueue, summary="Untriaged warnings in triage order (bureau)")
def queue(
    user: BureauUser,
    session: SessionDep,
    period: Period,
    county_code: County = None,
    order: Annotated[str, Query(pattern="^(confidence|township|area)$",
                                description="confidence (highest first) | township | area (largest first)")]
    = "confidence",
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> TriageQueue:
    """The county's ``new`` warnings of the period that have no desk decision yet."""
    from cspon_rs.store.triage import triage_queue

    county = _county(user, county_code)
    rows, total = triage_queue(session, county_code=county, period=period, order=order,  # type: ignore[arg-type]
                               limit=limit, offset=offset)
    return TriageQueue(items=[warning_out(r) for r in rows], total=total, limit=limit, offset=offset, order=order)


@router.get("/counters", response_model=CountersOut, summary="Triage progress: done / left / per hour (bureau)")
def counters(user: BureauUser, session: SessionDep, period: Period, county_code: County = None) -> CountersOut:
    """Warnings of the period, decided, left in the queue, per decision, and the caller's own pace."""
    return _counters(session, user, _county(user, county_code), period)


@router.get("/decisions", response_model=list[DecisionOut], summary="Recent desk decisions of a period (bureau)")
def recent(
    user: BureauUser,
    session: SessionDep,
    period: Period,
    county_code: County = None,
    mine: Annotated[bool, Query(description="only your own decisions")] = False,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[DecisionOut]:
    """Newest first, undone ones included (``undone_at`` set)."""
    from cspon_rs.store.triage import recent_decisions

    county = _county(user, county_code)
    rows = recent_decisions(session, county_code=county, period=period, by=user.name if mine else None, limit=limit)
    return [DecisionOut.model_validate(r) for r in rows]


@router.get("/{warning_id}/decisions", response_model=list[DecisionOut], summary="Desk decisions of a warning")
def decisions(warning_id: str, user: BureauUser, session: SessionDep) -> list[DecisionOut]:
    """Every desk decision on the warning, oldest first, undone ones included (``undone_at`` set)."""
    from sqlalchemy import select

    from cspon_rs.store.models import TriageDecision

    record = visible_warning(session, user, warning_id)
    rows = session.scalars(select(TriageDecision).where(TriageDecision.warning_id == record.id)
                           .order_by(TriageDecision.id))
    return [DecisionOut.model_validate(r) for r in rows]


@router.post("/{warning_id}/decide", response_model=DecisionResult, responses=_CONFLICT,  # type: ignore[arg-type]
             summary="Desk decision on one warning (bureau)")
def decide(warning_id: str, body: DecideIn, user: BureauUser, session: SessionDep) -> DecisionResult | JSONResponse:
    """``illegal`` / ``unsure`` → 待外业 ``to_field``; ``legal`` / ``false_alarm`` → 内业排除 ``desk_excluded``.
    Only ``new`` warnings (422 otherwise). Someone else's decision already there: 409 with ``first``. Your own
    earlier decision is replaced (kept as undone)."""
    from cspon_rs.store.triage import decide as decide_warning

    visible_warning(session, user, warning_id)
    try:
        row = decide_warning(session, warning_id, body.decision, by=user.name,
                             expected_version=body.expected_version)
    except ConflictError as exc:
        return _conflict(session, warning_id, exc)
    return _result(session, user, row)


@router.post("/{warning_id}/undo", response_model=DecisionResult, responses=_CONFLICT,  # type: ignore[arg-type]
             summary="Undo the desk decision on one warning (bureau)")
def undo(
    warning_id: str, user: BureauUser, session: SessionDep, body: UndoIn | None = None
) -> DecisionResult | JSONResponse:
    """Back to ``new`` (待核查), recorded in the history. Only the reviewer who decided (or an admin); 422 when
    there is no decision or the warning moved on (e.g. assigned to a field team)."""
    from cspon_rs.store.crud import _check_version
    from cspon_rs.store.triage import undo_decision

    record = visible_warning(session, user, warning_id)
    try:
        if body is not None:
            _check_version(record, body.expected_version)
        row = undo_decision(session, warning_id, by=user.name, admin=user.role == "admin")
    except ConflictError as exc:
        return _conflict(session, warning_id, exc)
    return _result(session, user, row)


@router.post("/bulk", response_model=BulkOut, summary="One desk decision for a selection (bureau)")
def bulk(body: BulkIn, user: BureauUser, session: SessionDep) -> BulkOut:
    """The untriaged ``new`` warnings of the county and period matching every criterion given (``ids``,
    ``bbox``, ``min_confidence`` ≤ confidence ≤ ``max_confidence``) get the decision, in one transaction.
    ``dry_run: true`` only counts them (the page's confirmation states that count)."""
    from cspon_rs.store.triage import bulk_decide

    county = _county(user, body.county_code)
    bbox: Any = tuple(body.bbox) if body.bbox is not None else None
    result = bulk_decide(session, county_code=county, period=body.period, decision=body.decision, by=user.name,
                         ids=body.ids, bbox=bbox, min_confidence=body.min_confidence,
                         max_confidence=body.max_confidence, dry_run=body.dry_run)
    return BulkOut(count=result.count, ids=result.ids, skipped=result.skipped, dry_run=result.dry_run,
                   decision=body.decision)


@page_router.get("/triage", include_in_schema=False)
def triage_page() -> FileResponse:
    """The triage screen (static; signs in like the review map)."""
    from cspon_rs.api.web import STATIC_DIR

    return FileResponse(STATIC_DIR / "triage.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


routers = [router]

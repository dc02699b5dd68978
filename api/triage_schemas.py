"""Request and response bodies of the desk triage API (``/api/v1/triage``; kept apart from the ORM models)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cspon_rs.api.schemas import COUNTY_PATTERN, MAX_ID, PERIOD_PATTERN, WarningOut

__all__ = [
    "BulkIn",
    "BulkOut",
    "CountersOut",
    "DecideIn",
    "DecisionOut",
    "DecisionResult",
    "TriageConflictOut",
    "TriageQueue",
    "UndoIn",
]

DecisionName = Literal["illegal", "legal", "false_alarm", "unsure"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecisionOut(BaseModel):
    """One desk decision (a label with source ``desk``)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    warning_id: str
    county_code: str
    period: str
    decision: str = Field(description="illegal 疑似违法 | legal 合法/已批 | false_alarm 误报 | unsure 不确定")
    source: str = Field(description="always `desk` (field verifications are `field`)")
    by: str | None
    at: dt.datetime
    from_status: str | None
    to_status: str | None = Field(description="to_field 待外业 or desk_excluded 内业排除")
    confidence: float | None
    detector: str | None = Field(description="card name@version of the model that raised the warning")
    model_sha256: str | None
    model_version_id: int | None
    batch: str | None = Field(description="the selection of a bulk decision; null for one-by-one decisions")
    undone_at: dt.datetime | None
    undone_by: str | None


class TriageQueue(BaseModel):
    """Untriaged warnings of a county and period in triage order."""

    items: list[WarningOut]
    total: int
    limit: int
    offset: int
    order: str


class DecideIn(_In):
    """A desk decision on one warning."""

    decision: DecisionName
    expected_version: int | None = Field(default=None, ge=1, le=MAX_ID, description="version you saw")


class UndoIn(_In):
    """Undo the warning's active desk decision (optional body)."""

    expected_version: int | None = Field(default=None, ge=1, le=MAX_ID, description="version you saw")


class DecisionResult(BaseModel):
    """The decision, the warning as it is now and the period's triage counters after it."""

    decision: DecisionOut
    warning: WarningOut
    counters: CountersOut | None = None


class TriageConflictOut(BaseModel):
    """409: the warning was decided by someone else (``first``) or changed meanwhile."""

    detail: list[dict[str, object]]
    error: str
    first: DecisionOut | None = Field(description="the decision already recorded (null: only the version moved)")
    warning: WarningOut | None = None


class BulkIn(_In):
    """One desk decision for a selection of untriaged warnings (ids, box and/or confidence band)."""

    period: str = Field(pattern=PERIOD_PATTERN)
    county_code: str | None = Field(default=None, pattern=COUNTY_PATTERN)
    decision: DecisionName
    ids: list[str] | None = Field(default=None, max_length=5000)
    bbox: list[float] | None = Field(
        default=None, min_length=4, max_length=4, description="[min_lon, min_lat, max_lon, max_lat], EPSG:4326")
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    max_confidence: float | None = Field(default=None, ge=0, le=1)
    dry_run: bool = Field(default=False, description="only count the selection (for the confirmation)")

    @model_validator(mode="after")
    def _selection(self) -> BulkIn:
        if self.ids is None and self.bbox is None and self.min_confidence is None and self.max_confidence is None:
            raise ValueError("give a selection: ids, bbox, min_confidence and/or max_confidence")
        if self.bbox is not None:
            w, s, e, n = self.bbox
            if not (-180 <= w <= e <= 180 and -90 <= s <= n <= 90):
                raise ValueError(f"bbox {self.bbox}: expected [min_lon, min_lat, max_lon, max_lat] in EPSG:4326")
        if (self.min_confidence is not None and self.max_confidence is not None
                and self.min_confidence > self.max_confidence):
            raise ValueError("min_confidence is larger than max_confidence")
        return self


class BulkOut(BaseModel):
    """What a bulk decision changed (or, with ``dry_run``, would change)."""

    count: int
    ids: list[str]
    skipped: list[str] = Field(description="named ids that are not untriaged new warnings of the county/period")
    dry_run: bool
    decision: str


class CountersOut(BaseModel):
    """Progress of the desk triage of a county and period."""

    county_code: str
    period: str
    total: int
    done: int
    left: int
    by_decision: dict[str, int]
    mine: int
    mine_last_hour: int
    per_hour: float = Field(description="the caller's decisions per hour over the last hour")
    labels_desk: int = Field(description="desk labels of the county (all periods; not unsure, no field check)")
    labels_field: int = Field(description="warnings of the county with a field check (all periods)")


DecisionResult.model_rebuild()

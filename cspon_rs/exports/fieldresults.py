"""Field-check results of stored warnings, for the exports (核查结果, 实际用途, team, due date, photos).

Exports read these from the store at the time they are written, so a verification recorded through the
API or the CLI changes the next export's row.
"""

from __future__ import annotations

from collections.abc import Sequence

import geopandas as gpd
import pandas as pd
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

from cspon_rs.store.crud import aware
from cspon_rs.store.models import Verification, WarningRecord

__all__ = ["FIELD_RESULT_COLUMNS", "attach_field_results", "field_results"]

#: Columns :func:`field_results` returns (``verified_at`` timezone-aware UTC).
FIELD_RESULT_COLUMNS: tuple[str, ...] = (
    "status", "verification_result", "actual_use", "verification_notes", "verified_by", "verified_at",
    "assigned_team", "due_date", "photo_count",
)


def field_results(session: Session, ids: Sequence[str]) -> pd.DataFrame:
    """State and latest field check of each stored warning.

    Args:
        session: Store session.
        ids: Warning ids; ids not in the store are left out.

    Returns:
        A frame indexed by warning id with :data:`FIELD_RESULT_COLUMNS` (``photo_count`` 0 when none).
    """
    wanted = [str(i) for i in ids if i is not None]
    rows: dict[str, dict[str, object]] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        for record in session.scalars(select(WarningRecord).where(WarningRecord.id.in_(chunk))):
            rows[record.id] = {
                "status": record.status, "verification_result": record.verification_result, "actual_use": None,
                "verification_notes": None, "verified_by": None, "verified_at": None,
                "assigned_team": record.assigned_team, "due_date": record.due_date, "photo_count": 0,
            }
        latest = (
            select(Verification.warning_id, func.max(Verification.id).label("vid"))
            .where(Verification.warning_id.in_(chunk)).group_by(Verification.warning_id).subquery()
        )
        for verification in session.scalars(select(Verification).join(latest, Verification.id == latest.c.vid)):
            row = rows.get(verification.warning_id)
            if row is not None:
                row.update(
                    actual_use=verification.actual_use,
                    verification_notes=verification.reason or verification.notes,
                    verified_by=verification.by,
                    verified_at=aware(verification.observed_at or verification.created_at),
                )
        if inspect(session.connection()).has_table("api_photos"):
            from cspon_rs.store.api_models import Photo

            query = select(Photo.warning_id, func.count(Photo.id)).where(Photo.warning_id.in_(chunk))
            for warning_id, count in session.execute(query.group_by(Photo.warning_id)):
                if warning_id in rows:
                    rows[warning_id]["photo_count"] = int(count)
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(FIELD_RESULT_COLUMNS))
    frame.index.name = "warning_id"
    return frame


def attach_field_results(warnings: gpd.GeoDataFrame, session: Session) -> gpd.GeoDataFrame:
    """A copy of ``warnings`` whose :data:`FIELD_RESULT_COLUMNS` come from the store (by ``warning_id``)."""
    out = warnings.copy()
    ids = [str(v) for v in out["warning_id"]] if "warning_id" in out.columns else []
    results = field_results(session, ids)
    for column in FIELD_RESULT_COLUMNS:
        stored = [results.at[i, column] if i in results.index else None for i in ids]
        if column == "status" and "status" in out.columns:
            stored = [s if s is not None else old for s, old in zip(stored, out["status"], strict=True)]
        if column == "photo_count":
            stored = [int(float(str(v))) if v is not None else 0 for v in stored]
        out[column] = pd.Series(stored, index=out.index, dtype=object)
    from cspon_rs.store.cases import attach_case_records

    return attach_case_records(out, session)  # case fields, 整改 steps, documents; 核查人 by display name

"""Training labels from field verifications and desk triage: ``cspon-rs labels export``.

Every field check says whether a warning was real change. :func:`export_labels` writes one feature per
*verified* warning of a county (its latest verification) to a GeoPackage layer ``verified_labels``:
``label`` 1 = real change (result ``illegal`` or ``legal``), 0 = ``false_change``, with the verification,
the before/after scenes (absolute path + sha256 recorded at detection) and the model that raised it.
Desk decisions (内业判读, :mod:`cspon_rs.store.triage`) are labels too: ``illegal`` / ``legal`` → 1,
``false_alarm`` → 0 (``unsure`` is none), with ``source`` = ``desk`` and their ``decision_id`` (field rows
have ``source`` = ``field``). A field check overrides the desk: a warning that has one is exported once,
from the field. ``cspon_rs.training.verified`` reads that layer to fine-tune the county's model.

Never a label: unverified warnings, warnings re-opened for a re-check, 批而不建 permit rows (no detected
change), and verifications whose scene file is gone, changed since detection (sha256) or was never
recorded with a checksum -- those are listed in :attr:`LabelExport.skipped` with the reason.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely
from shapely import wkt as shapely_wkt
from sqlalchemy.orm import Session

from cspon_rs.geo.files import SceneCheck
from cspon_rs.store.crud import aware, latest_verifications, provenance_fields, verification_reason
from cspon_rs.store.models import Patch, TriageDecision, Verification, WarningRecord
from cspon_rs.store.triage import DECISION_ZH, DESK_LABEL, desk_labels

__all__ = ["LABEL_COLUMNS", "LABEL_LAYER", "LabelExport", "SkippedLabel", "export_labels", "verified_labels"]

#: Layer name in the labels GeoPackage.
LABEL_LAYER = "verified_labels"

#: Attribute columns of the labels layer, in order, with their pandas dtype (plus a MultiPolygon
#: ``geometry`` in EPSG:4326: the warning polygon as stored).
LABEL_COLUMNS: dict[str, str] = {
    "label": "int32",  # 1 real change (illegal / legal construction), 0 false change
    "source": "object",  # field (a field verification) | desk (a desk triage decision)
    "verification_id": "Int64",  # null for desk labels
    "decision_id": "Int64",  # the desk decision (triage_decisions.id); null for field labels
    "result": "object",  # illegal | legal | false_change (field); illegal | legal | false_alarm (desk)
    "reason": "object",  # the verifier's reason, else notes, else the result in words
    "actual_use": "object",
    "verified_by": "object",
    "verified_at": "object",  # ISO 8601 with UTC offset (observed_at, else when it was recorded)
    "warning_id": "object",
    "period": "object",
    "county_code": "object",
    "category": "object",
    "t1": "object",  # ISO date of the before scene
    "t2": "object",
    "scene_before": "object",  # absolute path
    "scene_before_sha256": "object",
    "scene_after": "object",
    "scene_after_sha256": "object",
    "detector": "object",  # card name@version of the model that raised the warning
    "model_sha256": "object",  # sha256 of that checkpoint's weights
    "model_version_id": "Int64",  # its registry id, null when it was not a registered county model
}

_REAL = {"illegal": 1, "legal": 1, "false_change": 0}


@dataclass(frozen=True)
class SkippedLabel:
    """A verification that did not become a label, and why."""

    verification_id: int  # the desk decision's id when ``source`` is ``desk``
    warning_id: str
    reason: str
    source: str = "field"

    def __str__(self) -> str:
        what = "desk decision" if self.source == "desk" else "verification"
        return f"{what} {self.verification_id} (warning {self.warning_id}): {self.reason}"


@dataclass
class LabelExport:
    """What :func:`export_labels` wrote.

    Attributes:
        path: The GeoPackage (layer :data:`LABEL_LAYER`).
        n_labels: Features written; ``n_real`` with label 1, ``n_false`` with label 0; ``n_desk`` of them
            from desk decisions (source ``desk``).
        skipped: Verifications and desk decisions left out, with the reason.
    """

    path: Path
    n_labels: int
    n_real: int
    n_false: int
    skipped: list[SkippedLabel] = field(default_factory=list)
    n_desk: int = 0


class _SceneCheck(SceneCheck):
    """The export's check: a label needs a stored absolute path and checksum, then an unchanged file."""

    def problem(self, which: str, path: str | None, stored_sha: str | None, *, since: str = "detection") -> str | None:
        if not path or not stored_sha or not Path(path).is_absolute():
            return (f"no stored identity for the {which} scene ({path or 'no path'}, "
                    f"{'sha256 ' + stored_sha[:12] + '…' if stored_sha else 'no checksum'}): the warning was stored "
                    "before scene checksums were kept; re-run detect + warn with --before/--after for its period")
        return super().problem(which, path, stored_sha, since=since)


def _row(record: WarningRecord, verification: Verification, patch: Patch | None) -> dict[str, Any]:
    at = aware(verification.observed_at or verification.created_at)
    return {
        "label": _REAL[verification.result],
        "source": "field",
        "verification_id": verification.id,
        "decision_id": None,
        "result": verification.result,
        "reason": verification_reason(verification),
        "actual_use": verification.actual_use,
        "verified_by": verification.by,
        "verified_at": at.isoformat(timespec="seconds") if at is not None else None,
        "warning_id": record.id,
        "period": record.period,
        "county_code": record.county_code,
        "category": record.category,
        "t1": record.t1.isoformat() if record.t1 else None,
        "t2": record.t2.isoformat() if record.t2 else None,
        **provenance_fields(record, patch),
    }


def _desk_row(record: WarningRecord, decision: TriageDecision, patch: Patch | None) -> dict[str, Any]:
    at = aware(decision.at)
    return {
        "label": DESK_LABEL[decision.decision],
        "source": "desk",
        "verification_id": None,
        "decision_id": decision.id,
        "result": decision.decision,
        "reason": f"desk triage: {decision.decision} ({DECISION_ZH.get(decision.decision, '?')})",
        "actual_use": None,
        "verified_by": decision.by,
        "verified_at": at.isoformat(timespec="seconds") if at is not None else None,
        "warning_id": record.id,
        "period": record.period,
        "county_code": record.county_code,
        "category": record.category,
        "t1": record.t1.isoformat() if record.t1 else None,
        "t2": record.t2.isoformat() if record.t2 else None,
        **provenance_fields(record, patch),
        # the model that raised the warning, as the decision recorded it
        "detector": decision.detector or record.detector,
        "model_sha256": decision.model_sha256 or record.model_sha256,
        "model_version_id": decision.model_version_id if decision.model_version_id is not None
        else record.model_version_id,
    }


def _no_patch(record: WarningRecord) -> str:
    """Why a warning without a stored change patch cannot become a label."""
    if record.source_key.startswith("permit:"):
        return "批而不建 permit warning: no detected change patch to label"
    return "no stored change patch for this warning, so no scene identity"


def _scene_problem(row: dict[str, Any], checks: _SceneCheck) -> str | None:
    """A label row's scene files that are gone or changed since detection (None when both are as recorded)."""
    return (checks.problem("before", row["scene_before"], row["scene_before_sha256"])
            or checks.problem("after", row["scene_after"], row["scene_after_sha256"]))


def verified_labels(
    session: Session, *, county_code: str, period: str | None = None, check_scenes: bool = True
) -> tuple[gpd.GeoDataFrame, list[SkippedLabel]]:
    """The county's labels (EPSG:4326, columns :data:`LABEL_COLUMNS`), and the skipped.

    Field verifications first (source ``field``), then the active desk decisions of warnings without a field
    check (source ``desk``, see :func:`cspon_rs.store.triage.desk_labels`).

    Args:
        county_code: County whose verifications and desk decisions are read.
        period: Only warnings of this period.
        check_scenes: Check that both scene files still exist with the sha256 recorded at detection
            (each file hashed once); a failed check skips the label.
    """
    checks = _SceneCheck()
    rows: list[dict[str, Any]] = []
    geoms: list[Any] = []
    skipped: list[SkippedLabel] = []
    for record, verification, patch in latest_verifications(session, county_code=county_code, period=period):
        def skip(reason: str, v: Verification = verification, r: WarningRecord = record) -> None:
            skipped.append(SkippedLabel(v.id, r.id, reason))

        if record.status not in ("verified", "closed"):
            skip(f"warning is {record.status!r} again (re-check pending); its verification is not final")
            continue
        if verification.result not in _REAL:
            skip(f"unknown verification result {verification.result!r}")
            continue
        if patch is None or record.source_key.startswith("permit:"):
            skip(_no_patch(record))
            continue
        row = _row(record, verification, patch)
        problem = _scene_problem(row, checks) if check_scenes else None
        if problem:
            skip(problem)
            continue
        rows.append(row)
        geoms.append(shapely_wkt.loads(record.geometry_wkt))
    for record, decision, patch in desk_labels(session, county_code=county_code, period=period):
        def skip_desk(reason: str, d: TriageDecision = decision, r: WarningRecord = record) -> None:
            skipped.append(SkippedLabel(d.id, r.id, reason, source="desk"))

        if patch is None or record.source_key.startswith("permit:"):
            skip_desk(_no_patch(record))
            continue
        row = _desk_row(record, decision, patch)
        problem = _scene_problem(row, checks) if check_scenes else None
        if problem:
            skip_desk(problem)
            continue
        rows.append(row)
        geoms.append(shapely_wkt.loads(record.geometry_wkt))
    frame = pd.DataFrame(rows, columns=list(LABEL_COLUMNS)).astype(LABEL_COLUMNS)
    multi = [shapely.MultiPolygon([g]) if isinstance(g, shapely.Polygon) else g for g in geoms]
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(multi, crs=4326), crs=4326), skipped


def export_labels(
    session: Session, out: str | Path, *, county_code: str, period: str | None = None
) -> LabelExport:
    """Write the county's verified warnings as a labels GeoPackage (layer :data:`LABEL_LAYER`), atomically.

    With no usable verification the layer is written empty, with the full schema. The file is written to a
    temporary name beside ``out`` and renamed, so a failed export never leaves a partial file.
    """
    labels, skipped = verified_labels(session, county_code=county_code, period=period)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".gpkg", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # GDAL creates the GeoPackage itself
    try:
        labels.to_file(tmp, layer=LABEL_LAYER, driver="GPKG", engine="pyogrio", geometry_type="MultiPolygon")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    n_real = int((labels["label"] == 1).sum())
    return LabelExport(path=path, n_labels=len(labels), n_real=n_real, n_false=len(labels) - n_real,
                       skipped=skipped, n_desk=int((labels["source"] == "desk").sum()))

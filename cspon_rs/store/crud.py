"""Plain functions over the warning store: save a run's warnings, query, assign, verify, close, count.

Every function takes a :class:`sqlalchemy.orm.Session` (from :func:`cspon_rs.store.db.open_store`) and
every writing function is one transaction: it commits on success and rolls back on any error, so the
store is never half-written. Status changes follow the lifecycle ``new → assigned → verified → closed``
(see :data:`cspon_rs.store.models.LIFECYCLE`); each is recorded in ``warning_history``. Concurrent edits
are detected with the optimistic-lock ``version`` column (:class:`~cspon_rs.errors.ConflictError`).

Periods are strings that sort chronologically (``2018Q1`` < ``2018Q2`` < ``2019Q1``; or ``2018-03``);
"earlier period" means a smaller string for the same county.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import geopandas as gpd
import pandas as pd
import shapely
from shapely import wkt as shapely_wkt
from sqlalchemy import and_, func, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from cspon_rs.errors import ConflictError, InvalidTransitionError, NotFoundError, SchemaError
from cspon_rs.geo.crs import SQM_PER_MU, area_crs_for
from cspon_rs.store.db import has_postgis_geom
from cspon_rs.store.models import (
    LIFECYCLE,
    ModelVersion,
    Patch,
    Verification,
    WarningHistory,
    WarningRecord,
    utcnow,
)

__all__ = [
    "JobStoppedError",
    "RunProvenance",
    "SaveResult",
    "assign_warning",
    "change_status",
    "count_warnings",
    "false_change_negatives",
    "field_time",
    "get_warning",
    "job_scope",
    "latest_verifications",
    "list_warnings",
    "provenance_from_patches",
    "record_verification",
    "save_warnings",
    "statistics",
    "verification_reason",
    "warnings_frame",
]

#: Field-capture times earlier than this are a device with a reset clock, not a real check.
EARLIEST_FIELD_TIME = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
#: How far ahead of the server clock a device time may be (phones drift).
FIELD_TIME_SLACK = dt.timedelta(minutes=10)
#: Largest GPS accuracy radius accepted (metres); anything bigger is no position at all.
MAX_ACCURACY_M = 100_000.0

VerificationResult = Literal["illegal", "legal", "false_change"]
_PERIOD = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,15}$")
_COUNTY = re.compile(r"^[0-9A-Za-z]{1,12}$")


@dataclass
class SaveResult:
    """What :func:`save_warnings` did.

    Attributes:
        ids: ``source_key`` (patch id or ``permit:<no>``) → warning id it is stored under.
        created: Ids of the warnings created by this call.
        unchanged: Ids already stored for this period (re-run): nothing was changed.
        merged: ``source_key`` → id of the earlier-period warning it was merged into.
        linked: New warning id → earlier-period ids it overlaps below the merge threshold.
        patches_added: Number of raw patches stored.
        model_version_id: Registry id of the model that raised the run's patches (``None``: not registered
            for this county, or unknown).
    """

    ids: dict[str, str] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    merged: dict[str, str] = field(default_factory=dict)
    linked: dict[str, list[str]] = field(default_factory=dict)
    patches_added: int = 0
    model_version_id: int | None = None


@dataclass(frozen=True)
class RunProvenance:
    """Where a run's patches came from: both scenes (absolute path + sha256) and the model that raised them.

    Attributes:
        scene_before, scene_after: Absolute paths of the scenes.
        scene_before_sha256, scene_after_sha256: Hex SHA-256 of those files when the run read them.
        detector: Card ``name@version`` of the checkpoint (or ``spectral-cva-otsu``).
        model_sha256: Hex SHA-256 of the checkpoint weights (``None`` for the spectral baseline).
    """

    scene_before: str | None = None
    scene_before_sha256: str | None = None
    scene_after: str | None = None
    scene_after_sha256: str | None = None
    detector: str | None = None
    model_sha256: str | None = None

    def patch_fields(self) -> dict[str, str | None]:
        """The non-null fields, as ``patches`` column values."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


_PROVENANCE_FIELDS = (
    "scene_before", "scene_before_sha256", "scene_after", "scene_after_sha256", "detector", "model_sha256",
)


def provenance_from_patches(patches: gpd.GeoDataFrame | None) -> RunProvenance:
    """The run's provenance read from a ``change_patches`` frame: each field's single non-null value.

    A column that is missing, empty or holds several different values gives ``None`` for that field.
    """
    values: dict[str, str | None] = {}
    for name in _PROVENANCE_FIELDS:
        found: set[str] = set()
        if patches is not None and name in patches.columns:
            found = {str(v) for v in patches[name] if _text_or_none(v) not in (None, "")}
        values[name] = found.pop() if len(found) == 1 else None
    return RunProvenance(**values)


def _model_version_id(session: Session, county_code: str, model_sha256: str | None) -> int | None:
    if not model_sha256:
        return None
    found = session.scalar(
        select(ModelVersion.id).where(
            ModelVersion.county_code == county_code, ModelVersion.checkpoint_sha256 == model_sha256
        )
    )
    return None if found is None else int(found)


def _check_keys(period: str, county_code: str) -> None:
    if not _PERIOD.match(period):
        raise SchemaError(f"period {period!r}: use a short sortable code such as 2026Q3 or 2026-07")
    if not _COUNTY.match(county_code):
        raise SchemaError(f"county code {county_code!r}: use the 6-digit administrative code, e.g. 510000")


def _date(value: Any) -> dt.date | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _float(value: Any, default: float | None = 0.0) -> float | None:
    if value is None:
        return default
    try:
        result = float(value)
    except (TypeError, ValueError):
        return default
    return default if pd.isna(result) else result


def _json_safe(value: Any) -> Any:
    """Replace NaN/NaT by None and numpy scalars by Python ones, recursively (JSON columns)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, dt.date):
        return value.isoformat()
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        return value
    if hasattr(value, "item"):
        return value.item()
    return value


def _text_or_none(value: Any) -> str | None:
    return None if _json_safe(value) is None else str(value)


#: Job whose warning-store stage runs in this context (see :func:`job_scope`).
_CURRENT_JOB: ContextVar[int | None] = ContextVar("cspon_current_job", default=None)


class JobStoppedError(ConflictError):
    """The job was cancelled or finished before its warnings could be committed; nothing was written."""


@contextmanager
def job_scope(job_id: int) -> Iterator[None]:
    """Make :func:`save_warnings` calls inside this block part of service job ``job_id``.

    In that transaction -- and only if the job is still ``running`` without a cancel request -- the job row's
    ``committed`` column records what was stored (counts and new ids), and history events name the job.
    Either both the warnings and that record are committed or neither is (:class:`JobStoppedError`).
    """
    token = _CURRENT_JOB.set(job_id)
    try:
        yield
    finally:
        _CURRENT_JOB.reset(token)


def _record_job_commit(session: Session, job_id: int, result: SaveResult, period: str, county_code: str) -> None:
    """Inside the store transaction: note on job ``job_id`` what it commits, or raise if it was stopped."""
    from cspon_rs.store.api_models import Job, utcnow

    summary = {
        "stage": "warning_store",
        "at": utcnow().isoformat(),
        "period": period,
        "county_code": county_code,
        "created": len(result.created),
        "merged": len(result.merged),
        "unchanged": len(result.unchanged),
        "patches": result.patches_added,
        "created_ids": result.created[:200],
        "merged_into": sorted(set(result.merged.values()))[:200],
    }
    done = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == "running", Job.cancel_requested.is_(False))
        .values(committed=summary)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise JobStoppedError(
            f"job {job_id} was cancelled or stopped before its warnings were committed; nothing was written"
        )


@contextmanager
def _transaction(session: Session, what: str) -> Iterator[None]:
    """Run the body and commit; roll back on any error; a stale optimistic lock becomes ConflictError."""
    try:
        yield
        session.commit()
    except StaleDataError as exc:
        session.rollback()
        raise ConflictError(f"{what}: changed by someone else meanwhile; reload and try again") from exc
    except BaseException:
        session.rollback()
        raise


def save_warnings(
    session: Session,
    warnings: gpd.GeoDataFrame,
    *,
    period: str,
    county_code: str,
    patches: gpd.GeoDataFrame | None = None,
    link_merge_share: float = 0.5,
    same_period_iou: float = 0.5,
    by: str = "cspon-rs",
    provenance: RunProvenance | None = None,
) -> SaveResult:
    """Store the warnings of one run (one period, one county), idempotently, in one transaction.

    * A row already stored for this period and county is left untouched (re-running a period changes
      nothing: same ids, no duplicates, status and history kept). 批而不建 rows are recognised by their
      permit number; patch rows by geometry (IoU with the stored warning ≥ ``same_period_iou``), because
      patch ids are positional and can name another place after a re-run. A new patch whose id is already
      taken is stored under ``<id>#2``.
    * A warning row (``is_warning``) whose geometry overlaps a warning of an EARLIER period of the same
      county by at least ``link_merge_share`` of the smaller of the two is merged into it: the earlier
      warning gets a ``seen_again`` history event and the period in ``seen_periods``; no new row.
    * Otherwise a new warning ``<county>-<period>-<seq:04d>`` is created (sequence in rank order),
      with ``linked_ids`` listing earlier warnings it overlaps below the threshold.

    Args:
        session: Open session.
        warnings: Output of :func:`cspon_rs.rules.engine.classify` (any CRS; stored in EPSG:4326).
        period: Period code, e.g. ``2026Q3``.
        county_code: County code, e.g. ``510000``.
        patches: The raw ``change_patches`` layer of the run, stored in ``patches`` (optional).
        link_merge_share: Overlap share (0..1) at which a patch merges into an earlier warning.
        same_period_iou: Intersection-over-union at which a patch is the same as a stored one of this period.
        by: Who is saving (recorded in history).
        provenance: Scenes (absolute path + sha256) and model of the run, stored on new warnings
            (``detector``, ``model_sha256``, ``model_version_id``) and on the raw patches. ``None``: read
            from the ``patches`` frame's columns (see :func:`provenance_from_patches`). The registry id is
            the county's :class:`~cspon_rs.store.models.ModelVersion` with that checkpoint sha256.

    Returns:
        A :class:`SaveResult`.
    """
    _check_keys(period, county_code)
    if _CURRENT_JOB.get() is not None and by == "cspon-rs":
        by = f"job {_CURRENT_JOB.get()}"
    result = SaveResult()
    prov = provenance if provenance is not None else provenance_from_patches(patches)
    if warnings.crs is None and len(warnings):
        raise SchemaError("warnings frame has no CRS")
    w84 = warnings.to_crs(4326) if len(warnings) else warnings
    with _transaction(session, f"saving {county_code} {period}"):
        model_id = _model_version_id(session, county_code, prov.model_sha256)
        result.model_version_id = model_id
        existing = list(session.scalars(
            select(WarningRecord).where(WarningRecord.period == period, WarningRecord.county_code == county_code)
        ))
        by_key = {w.source_key: w for w in existing}
        max_seq = max((w.seq for w in existing), default=0)
        seq = int(max_seq)
        work = area_crs_for(w84) if len(w84) else None
        same = [w for w in existing if not w.source_key.startswith("permit:")]
        same_geoms = _work_geoms(same, work)
        earlier = _earlier_warnings(session, w84, period, county_code)
        earlier_geoms = _work_geoms(earlier, work)
        geoms_work = list(w84.to_crs(work).geometry) if work is not None else []
        geoms_84 = list(w84.geometry)
        rows = cast(list[dict[str, Any]], pd.DataFrame(w84.drop(columns=w84.geometry.name)).to_dict("records"))
        for k, row in enumerate(rows):
            key = str(row["source_key"])
            permit_row = key.startswith("permit:")
            geom_w = geoms_work[k]
            # 1. Already stored for this period (a re-run): by permit number, or for patches by geometry
            #    (patch ids are positional and may shift between runs).
            match: WarningRecord | None = by_key.get(key) if permit_row else None
            if not permit_row and same_geoms is not None:
                best_iou = 0.0
                for j in same_geoms.sindex.query(geom_w, predicate="intersects"):
                    other = same_geoms.iloc[int(j)]
                    inter = shapely.intersection(geom_w, other).area
                    union = geom_w.area + other.area - inter
                    iou = inter / union if union > 0 else 0.0
                    if iou >= same_period_iou and iou > best_iou:
                        match, best_iou = same[int(j)], iou
            if match is not None:
                result.ids[key] = match.id
                result.unchanged.append(match.id)
                continue
            # 2. Seen in an earlier period: merge into that warning (history), or link to it.
            linked: list[str] = []
            target: WarningRecord | None = None
            if earlier_geoms is not None and bool(row["is_warning"]):
                best_share = 0.0
                for j in earlier_geoms.sindex.query(geom_w, predicate="intersects"):
                    candidate = earlier[int(j)]
                    if candidate.source_key.startswith("permit:") != permit_row:
                        continue
                    other = earlier_geoms.iloc[int(j)]
                    overlap = shapely.intersection(geom_w, other).area
                    if overlap <= 0:
                        continue
                    smaller = min(geom_w.area, other.area)
                    share = overlap / smaller if smaller > 0 else 0.0
                    if share >= link_merge_share and share > best_share:
                        target, best_share = candidate, share
                    linked.append(candidate.id)
                if target is not None:
                    if period not in (target.seen_periods or []):
                        _merge_into(target, row, period, key, best_share, by, prov, model_id)
                    result.ids[key] = target.id
                    result.merged[key] = target.id
                    continue
            # 3. New warning.
            seq += 1
            store_key, n = key, 2
            while store_key in by_key:  # a shifted patch id that now names another place
                store_key, n = f"{key}#{n}", n + 1
            record = _new_record(row, geoms_84[k], period, county_code, seq, sorted(set(linked)))
            record.source_key = store_key
            record.detector, record.model_sha256, record.model_version_id = prov.detector, prov.model_sha256, model_id
            session.add(record)
            record.history.append(WarningHistory(
                event="created", by=by, to_status="new", why=f"detected in {period}",
                details={"period": period, "source_key": store_key, "category": record.category},
            ))
            by_key[store_key] = record
            result.ids[key] = record.id
            result.created.append(record.id)
            if linked:
                result.linked[record.id] = sorted(set(linked))
        session.flush()
        if patches is not None and len(patches):
            result.patches_added = _store_patches(session, patches, period, county_code, result.ids, prov, model_id)
        job_id = _CURRENT_JOB.get()
        if job_id is not None:
            _record_job_commit(session, job_id, result, period, county_code)
    return result


def _work_geoms(records: list[WarningRecord], work: Any) -> gpd.GeoSeries | None:
    """Stored geometries (EPSG:4326 WKT) as a GeoSeries in the projected CRS ``work``."""
    if not records or work is None:
        return None
    return gpd.GeoSeries([shapely_wkt.loads(w.geometry_wkt) for w in records], crs=4326).to_crs(work)


def _earlier_warnings(
    session: Session, w84: gpd.GeoDataFrame, period: str, county_code: str
) -> list[WarningRecord]:
    if not len(w84):
        return []
    minx, miny, maxx, maxy = (float(v) for v in w84.total_bounds)
    return list(session.scalars(
        select(WarningRecord).where(
            WarningRecord.county_code == county_code,
            WarningRecord.period < period,
            WarningRecord.is_warning.is_(True),
            WarningRecord.maxx >= minx, WarningRecord.minx <= maxx,
            WarningRecord.maxy >= miny, WarningRecord.miny <= maxy,
        ).order_by(WarningRecord.period.desc(), WarningRecord.id)
    ))


def _merge_into(
    target: WarningRecord,
    row: dict[str, Any],
    period: str,
    key: str,
    share: float,
    by: str,
    prov: RunProvenance,
    model_id: int | None,
) -> None:
    target.seen_periods = sorted({*(target.seen_periods or []), period})
    target.history.append(WarningHistory(
        event="seen_again", by=by, from_status=target.status, to_status=target.status,
        why=f"change detected again in {period} (overlap {share:.0%}); category now {row['category']}",
        details=_json_safe({
            "period": period, "source_key": key, "patch_id": row.get("patch_id"),
            "category": row["category"], "area_m2": _float(row["area_m2"]), "overlap_share": round(share, 4),
            "detector": prov.detector, "model_sha256": prov.model_sha256, "model_version_id": model_id,
        }),
    ))


def _new_record(
    row: dict[str, Any], geom: Any, period: str, county_code: str, seq: int, linked: list[str]
) -> WarningRecord:
    minx, miny, maxx, maxy = geom.bounds
    point = geom.representative_point()
    rank = row.get("rank")
    return WarningRecord(
        id=f"{county_code}-{period}-{seq:04d}",
        period=period,
        county_code=county_code,
        seq=seq,
        source_key=str(row["source_key"]),
        patch_id=_text_or_none(row.get("patch_id")),
        township_code=_text_or_none(row.get("township_code")),
        township_name=_text_or_none(row.get("township_name")),
        category=str(row["category"]),
        is_warning=bool(row["is_warning"]),
        flags=_json_safe(list(row.get("flags") or [])),
        area_m2=_float(row["area_m2"]),
        area_mu=_float(row.get("area_mu"), _float(row["area_m2"], 0.0) / SQM_PER_MU),  # type: ignore[operator]
        covered_m2=_float(row.get("covered_m2")),
        excess_m2=_float(row.get("excess_m2")),
        farmland_overlap_m2=_float(row.get("farmland_overlap_m2")),
        redline_overlap_m2=_float(row.get("redline_overlap_m2")),
        outside_urban_m2=_float(row.get("outside_urban_m2")),
        landuse_areas=_json_safe(row["landuse_areas"]) if isinstance(row.get("landuse_areas"), dict) else None,
        cropland_m2=_float(row.get("cropland_m2"), None),
        landuse_main=_text_or_none(row.get("landuse_main")),
        reasons=_json_safe(list(row.get("reasons") or [])),
        permits=_json_safe(list(row.get("permits") or [])),
        priority=_float(row.get("priority")),
        rank=None if rank is None or pd.isna(rank) else int(rank),
        confidence=_float(row.get("confidence"), None),
        status="new",
        rule_set_version=str(row.get("rule_set_version") or "unknown"),
        t1=_date(row.get("t1")),
        t2=_date(row.get("t2")),
        geometry_wkt=geom.wkt,
        minx=minx, miny=miny, maxx=maxx, maxy=maxy,
        centroid_lon=point.x, centroid_lat=point.y,
        linked_ids=linked,
        seen_periods=[],
        version=1,
    )


def _store_patches(
    session: Session,
    patches: gpd.GeoDataFrame,
    period: str,
    county_code: str,
    ids: dict[str, str],
    prov: RunProvenance,
    model_id: int | None,
) -> int:
    stored = set(session.scalars(
        select(Patch.patch_id).where(Patch.period == period, Patch.county_code == county_code)
    ))
    p84 = patches.to_crs(4326)
    added = 0
    geoms = list(p84.geometry)
    for k, row in enumerate(pd.DataFrame(p84.drop(columns=p84.geometry.name)).to_dict("records")):
        pid = str(row["patch_id"])
        if pid in stored:
            continue
        identity = {name: _text_or_none(row.get(name)) for name in _PROVENANCE_FIELDS} | prov.patch_fields()
        session.add(Patch(
            period=period, county_code=county_code, patch_id=pid, warning_id=ids.get(pid),
            area_m2=_float(row.get("area_m2")), prob_mean=_float(row.get("prob_mean"), None),
            prob_max=_float(row.get("prob_max"), None), t1=_date(row.get("t1")), t2=_date(row.get("t2")),
            model_version_id=model_id, geometry_wkt=geoms[k].wkt, features=_features(row.get("features")),
            **identity,
        ))
        stored.add(pid)
        added += 1
    return added


def _features(value: Any) -> dict[str, Any] | None:
    """A patch's ``features`` cell (JSON text in the GeoPackage) as a dict; None when absent or unreadable."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def get_warning(session: Session, warning_id: str) -> WarningRecord:
    """The warning with this id (fresh from the database).

    Raises:
        NotFoundError: No such warning.
    """
    record = session.get(WarningRecord, warning_id, populate_existing=True)
    if record is None:
        raise NotFoundError(f"warning {warning_id!r} not found")
    return record


def _filters(
    session: Session,
    *,
    period: str | None,
    county_code: str | None,
    township_code: str | None,
    category: str | Sequence[str] | None,
    status: str | Sequence[str] | None,
    min_priority: float | None,
    bbox: tuple[float, float, float, float] | None,
    only_warnings: bool,
) -> tuple[list[Any], bool]:
    clauses: list[Any] = []
    if period is not None:
        clauses.append(WarningRecord.period == period)
    if county_code is not None:
        clauses.append(WarningRecord.county_code == county_code)
    if township_code is not None:
        clauses.append(WarningRecord.township_code == township_code)
    if category is not None:
        cats = [category] if isinstance(category, str) else list(category)
        clauses.append(WarningRecord.category.in_(cats))
    if status is not None:
        states = [status] if isinstance(status, str) else list(status)
        clauses.append(WarningRecord.status.in_(states))
    if min_priority is not None:
        clauses.append(WarningRecord.priority >= min_priority)
    if only_warnings:
        clauses.append(WarningRecord.is_warning.is_(True))
    exact_in_python = False
    if bbox is not None:
        minx, miny, maxx, maxy = (float(v) for v in bbox)
        if minx > maxx or miny > maxy:
            raise SchemaError(f"bbox {bbox}: expected (min_lon, min_lat, max_lon, max_lat)")
        clauses += [WarningRecord.maxx >= minx, WarningRecord.minx <= maxx,
                    WarningRecord.maxy >= miny, WarningRecord.miny <= maxy]
        if has_postgis_geom(session):
            clauses.append(text("ST_Intersects(warnings.geom, ST_MakeEnvelope(:bminx, :bminy, :bmaxx, :bmaxy, 4326))")
                           .bindparams(bminx=minx, bminy=miny, bmaxx=maxx, bmaxy=maxy))
        else:
            exact_in_python = True
    return clauses, exact_in_python


def list_warnings(
    session: Session,
    *,
    period: str | None = None,
    county_code: str | None = None,
    township_code: str | None = None,
    category: str | Sequence[str] | None = None,
    status: str | Sequence[str] | None = None,
    min_priority: float | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    only_warnings: bool = False,
    limit: int | None = 100,
    offset: int = 0,
) -> list[WarningRecord]:
    """Warnings matching all given filters, highest priority first (then id).

    Args:
        bbox: ``(min_lon, min_lat, max_lon, max_lat)`` in EPSG:4326; a warning matches when its geometry
            intersects the box (PostGIS ``ST_Intersects`` on PostgreSQL, bbox columns + shapely elsewhere).
        only_warnings: Leave out legal rows (category ``none`` without flags).
        limit: At most this many (None: all); ``offset`` skips the first ones.
    """
    clauses, exact = _filters(session, period=period, county_code=county_code, township_code=township_code,
                              category=category, status=status, min_priority=min_priority, bbox=bbox,
                              only_warnings=only_warnings)
    query = select(WarningRecord).where(and_(True, *clauses)).order_by(
        WarningRecord.priority.desc(), WarningRecord.id
    )
    if not exact:
        if offset:
            query = query.offset(offset)
        if limit is not None:
            query = query.limit(limit)
        return list(session.scalars(query))
    box = shapely.box(*bbox)  # type: ignore[misc]
    rows = [w for w in session.scalars(query) if shapely_wkt.loads(w.geometry_wkt).intersects(box)]
    return rows[offset: None if limit is None else offset + limit]


_FILTER_KEYS = ("period", "county_code", "township_code", "category", "status", "min_priority", "bbox")


def count_warnings(session: Session, **filters: Any) -> int:
    """Number of warnings matching the same filters as :func:`list_warnings` (without limit/offset).

    One SQL ``COUNT``; only a ``bbox`` without PostGIS (exact geometry test in Python) lists the rows.
    """
    filters.pop("limit", None)
    filters.pop("offset", None)
    clauses, exact = _filters(session, **{key: filters.get(key) for key in _FILTER_KEYS},
                              only_warnings=bool(filters.get("only_warnings", False)))
    if exact:
        return len(list_warnings(session, limit=None, **filters))
    return int(session.scalar(select(func.count(WarningRecord.id)).where(and_(True, *clauses))) or 0)


def _transition(record: WarningRecord, to_status: str) -> None:
    allowed = LIFECYCLE.get(record.status, frozenset())
    if to_status not in allowed:
        raise InvalidTransitionError(
            f"warning {record.id}: cannot go from {record.status!r} to {to_status!r} "
            f"(allowed from {record.status!r}: {sorted(allowed) or 'none'})"
        )


def _check_version(record: WarningRecord, expected_version: int | None) -> None:
    if expected_version is not None and record.version != expected_version:
        raise ConflictError(
            f"warning {record.id}: version {record.version} in the store, but the change was based on version "
            f"{expected_version}; reload it and try again"
        )


def assign_warning(
    session: Session,
    warning_id: str,
    *,
    team: str,
    due_date: dt.date | None = None,
    by: str | None = None,
    expected_version: int | None = None,
) -> WarningRecord:
    """Assign a warning to a field team (``new → assigned``; re-assigning an assigned one is allowed).

    Repeating an identical assignment (already assigned to ``team`` with the same due date) is a no-op:
    no history event, no version bump -- so a warning's version always counts its changes.

    Raises:
        NotFoundError, ConflictError (stale ``expected_version``), InvalidTransitionError.
    """
    with _transaction(session, f"warning {warning_id}"):
        record = get_warning(session, warning_id)
        _check_version(record, expected_version)
        if record.status == "assigned" and record.assigned_team == team and record.due_date == due_date:
            return record
        before = record.status
        if before != "assigned":
            _transition(record, "assigned")
        record.status = "assigned"
        record.assigned_team = team
        record.due_date = due_date
        record.history.append(WarningHistory(
            event="assigned", by=by, from_status=before, to_status="assigned",
            why=f"assigned to {team}" + (f", due {due_date}" if due_date else ""),
        ))
    return record


def change_status(
    session: Session,
    warning_id: str,
    to_status: Literal["new", "assigned", "closed"],
    *,
    by: str | None = None,
    why: str | None = None,
    expected_version: int | None = None,
) -> WarningRecord:
    """Move a warning along the lifecycle (``verified`` is reached only via :func:`record_verification`).

    Raises:
        NotFoundError, ConflictError, InvalidTransitionError (e.g. ``new → closed`` or to ``verified``).
    """
    with _transaction(session, f"warning {warning_id}"):
        record = get_warning(session, warning_id)
        _check_version(record, expected_version)
        if str(to_status) == "verified":
            raise InvalidTransitionError(f"warning {warning_id}: use record_verification to mark it verified")
        _transition(record, to_status)
        before = record.status
        record.status = to_status
        if to_status == "new":
            record.assigned_team = None
        record.history.append(WarningHistory(event="status", by=by, from_status=before, to_status=to_status,
                                             why=why))
    return record


def record_verification(
    session: Session,
    warning_id: str,
    *,
    result: VerificationResult,
    expected_version: int,
    reason: str | None = None,
    actual_use: str | None = None,
    notes: str | None = None,
    lon: float | None = None,
    lat: float | None = None,
    observed_at: dt.datetime | None = None,
    by: str | None = None,
    position_accuracy_m: float | None = None,
    heading_deg: float | None = None,
    position_at: dt.datetime | None = None,
    recorded_at: dt.datetime | None = None,
) -> Verification:
    """Record a field check and move the warning ``assigned → verified``.

    Args:
        result: ``illegal`` (violation confirmed), ``legal`` or ``false_change`` (no real change; used
            as a negative for retraining).
        expected_version: The ``version`` the verifier saw; a different stored version (someone else
            verified or edited it meanwhile) raises :class:`ConflictError` and nothing is written.
        lon, lat: Position of the check, EPSG:4326 degrees.
        position_accuracy_m: GPS accuracy radius of ``lon``/``lat`` in metres (0 to 100 km).
        heading_deg: Direction the device faced, degrees clockwise from north (0-360).
        position_at: When the position fix was taken; recorded_at: device time of the check. Both
            timezone-aware, see :func:`field_time`.

    Raises:
        NotFoundError, ConflictError, InvalidTransitionError, SchemaError (unknown result, a capture value
        out of range or a naive/implausible time).
    """
    if result not in ("illegal", "legal", "false_change"):
        raise SchemaError(f"verification result {result!r}: use illegal, legal or false_change")
    if position_accuracy_m is not None and not 0.0 <= position_accuracy_m <= MAX_ACCURACY_M:
        raise SchemaError(f"position_accuracy_m {position_accuracy_m!r}: give metres between 0 and "
                          f"{MAX_ACCURACY_M:.0f}")
    if heading_deg is not None and not 0.0 <= heading_deg <= 360.0:
        raise SchemaError(f"heading_deg {heading_deg!r}: give degrees clockwise from north between 0 and 360")
    position_at = field_time("position_at", position_at)
    recorded_at = field_time("recorded_at", recorded_at)
    with _transaction(session, f"warning {warning_id}"):
        record = get_warning(session, warning_id)
        _check_version(record, expected_version)
        _transition(record, "verified")
        before = record.status
        verification = Verification(
            result=result, reason=reason, actual_use=actual_use, notes=notes, lon=lon, lat=lat,
            observed_at=aware(observed_at) or utcnow(), by=by, position_accuracy_m=position_accuracy_m,
            heading_deg=heading_deg, position_at=position_at, recorded_at=recorded_at,
        )
        record.verifications.append(verification)
        record.status = "verified"
        record.verification_result = result
        record.history.append(WarningHistory(event="verified", by=by, from_status=before, to_status="verified",
                                             why=f"field check: {result}" + (f" ({reason})" if reason else "")))
    return verification


StatKey = Literal["period", "county_code", "township_code", "township_name", "category", "status"]


def statistics(
    session: Session,
    *,
    by: Iterable[StatKey] = ("period", "category"),
    period: str | None = None,
    county_code: str | None = None,
    only_warnings: bool = False,
) -> list[dict[str, Any]]:
    """Counts and areas grouped by the given columns.

    Returns:
        One dict per group: the group columns plus ``count``, ``area_m2`` and ``area_mu``.
    """
    keys = list(by)
    allowed = {"period", "county_code", "township_code", "township_name", "category", "status"}
    bad = [k for k in keys if k not in allowed]
    if bad:
        raise SchemaError(f"statistics: cannot group by {bad}; use {sorted(allowed)}")
    columns = [getattr(WarningRecord, k) for k in keys]
    query = select(*columns, func.count(WarningRecord.id), func.sum(WarningRecord.area_m2)).group_by(*columns)
    if period is not None:
        query = query.where(WarningRecord.period == period)
    if county_code is not None:
        query = query.where(WarningRecord.county_code == county_code)
    if only_warnings:
        query = query.where(WarningRecord.is_warning.is_(True))
    out = []
    for row in session.execute(query.order_by(*columns)):
        item: dict[str, Any] = {k: row[i] for i, k in enumerate(keys)}
        area = float(row[len(keys) + 1] or 0.0)
        item.update(count=int(row[len(keys)]), area_m2=round(area, 2), area_mu=round(area / SQM_PER_MU, 4))
        out.append(item)
    return out


def warnings_frame(records: Sequence[WarningRecord]) -> gpd.GeoDataFrame:
    """Stored warnings as a GeoDataFrame in EPSG:4326 (for exports, patrols and the API)."""
    columns = [
        "id", "period", "county_code", "township_code", "township_name", "source_key", "patch_id", "category",
        "is_warning", "flags", "area_m2", "area_mu", "covered_m2", "excess_m2", "farmland_overlap_m2",
        "redline_overlap_m2", "outside_urban_m2", "reasons", "permits", "priority", "rank", "confidence",
        "status", "verification_result", "assigned_team", "due_date", "rule_set_version", "t1", "t2",
        "centroid_lon", "centroid_lat", "linked_ids", "seen_periods", "version",
        "landuse_areas", "cropland_m2", "landuse_main", "issued_no", "land_user", "project_name",
        "construction_status", "violation_type", "rectification_status",
    ]
    data = {c: [getattr(r, c) for r in records] for c in columns}
    frame = gpd.GeoDataFrame(data, geometry=[shapely_wkt.loads(r.geometry_wkt) for r in records], crs=4326)
    frame["warning_id"] = frame["id"]
    return frame


def latest_verifications(
    session: Session, *, county_code: str | None = None, period: str | None = None
) -> list[tuple[WarningRecord, Verification, Patch | None]]:
    """Every warning that has a field check, with its LATEST verification and the patch it was made from.

    The patch is the stored raw patch of the warning's own period and patch id (``None`` for 批而不建
    permit rows, or when no patch was stored). Ordered by warning id.
    """
    latest = (
        select(Verification.warning_id, func.max(Verification.id).label("vid"))
        .group_by(Verification.warning_id)
        .subquery()
    )
    query = (
        select(WarningRecord, Verification)
        .join(latest, latest.c.warning_id == WarningRecord.id)
        .join(Verification, Verification.id == latest.c.vid)
        .order_by(WarningRecord.id)
    )
    if county_code is not None:
        query = query.where(WarningRecord.county_code == county_code)
    if period is not None:
        query = query.where(WarningRecord.period == period)
    pairs = [(row[0], row[1]) for row in session.execute(query)]
    patches = own_patches(session, [record for record, _ in pairs])
    return [(record, verification, patches.get(record.id)) for record, verification in pairs]


def own_patches(session: Session, records: Sequence[WarningRecord]) -> dict[str, Patch]:
    """Each warning's own stored raw patch (its period and patch id; the newest row), by warning id.

    Warnings without one (批而不建 permit rows, or no patch stored) are absent. Looked up 500 ids at a time.
    """
    wanted = {record.id: (record.period, record.patch_id or "") for record in records}
    ids = list(wanted)
    out: dict[str, Patch] = {}
    for start in range(0, len(ids), 500):
        for patch in session.scalars(
            select(Patch).where(Patch.warning_id.in_(ids[start:start + 500])).order_by(Patch.id.desc())
        ):
            wid = patch.warning_id
            if wid is not None and wid not in out and wanted[wid] == (patch.period, patch.patch_id):
                out[wid] = patch
    return out


def verification_reason(verification: Verification) -> str:
    """Why the field team decided as it did: the reason given, else the notes, else the result in words."""
    for text_ in (verification.reason, verification.notes):
        if text_ and text_.strip():
            return text_.strip()
    words = {"illegal": "illegal construction", "legal": "legal construction", "false_change": "no real change"}
    use = f" (actual use: {verification.actual_use})" if verification.actual_use else ""
    return f"field check: {words.get(verification.result, verification.result)}{use}"


def field_time(
    field: str, value: dt.datetime | None, now: dt.datetime | None = None, *, shown: str | None = None
) -> dt.datetime | None:
    """Check a time the field device reported and return it in UTC.

    Args:
        field: Name used in the error message (e.g. ``recorded_at``).
        value: The time; must carry a UTC offset. ``None`` passes through.
        now: Server time to compare with (default: now).
        shown: The value as the client wrote it, for the message (default: ``value`` in ISO 8601).

    Raises:
        SchemaError: naive, before 2000-01-01 or more than 10 minutes ahead of ``now``.
    """
    if value is None:
        return None
    text = shown if shown is not None else value.isoformat()
    if value.tzinfo is None or value.utcoffset() is None:
        raise SchemaError(f"{field} {text!r}: give a UTC offset, e.g. 2026-05-01T10:00:00+08:00 or ...Z")
    at = value.astimezone(dt.UTC)
    limit = (now or utcnow()) + FIELD_TIME_SLACK
    if at < EARLIEST_FIELD_TIME:
        raise SchemaError(f"{field} {text!r}: before 2000-01-01; check the device clock")
    if at > limit:
        raise SchemaError(f"{field} {text!r}: more than 10 minutes in the future; check the device clock")
    return at


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """A timestamp as timezone-aware UTC: naive values (SQLite gives them back) are UTC, others converted.

    Timestamps are stored in UTC (SQLite keeps no offset, so ``10:00+08:00`` must be stored as ``02:00``).
    """
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


#: Columns of :func:`false_change_negatives`, in order (plus ``geometry``).
NEGATIVE_COLUMNS: tuple[str, ...] = (
    "warning_id", "period", "county_code", "patch_id", "t1", "t2", "verification_id", "result", "reason",
    "actual_use", "verified_by", "verified_at", "scene_before", "scene_before_sha256", "scene_after",
    "scene_after_sha256", "detector", "model_sha256", "model_version_id",
)


def provenance_fields(record: WarningRecord, patch: Patch | None) -> dict[str, Any]:
    """Where a warning's pixels came from: the scenes (absolute paths + sha256) and the model that raised it."""
    return {
        "scene_before": patch.scene_before if patch else None,
        "scene_before_sha256": patch.scene_before_sha256 if patch else None,
        "scene_after": patch.scene_after if patch else None,
        "scene_after_sha256": patch.scene_after_sha256 if patch else None,
        "detector": record.detector or (patch.detector if patch else None),
        "model_sha256": record.model_sha256 or (patch.model_sha256 if patch else None),
        "model_version_id": record.model_version_id
        if record.model_version_id is not None
        else (patch.model_version_id if patch else None),
    }


def false_change_negatives(
    session: Session, *, county_code: str | None = None, period: str | None = None
) -> gpd.GeoDataFrame:
    """Warnings whose latest field check found no real change (``false_change``): negatives for retraining.

    A warning re-checked later with another result is not a negative. The scenes are identified by their
    absolute paths and the sha256 recorded when the patch was detected (bare file names and null checksums
    for rows stored before revision 0003); ``reason`` is the verifier's reason, else their notes, else the
    result in words -- never null.

    Returns:
        EPSG:4326 GeoDataFrame with :data:`NEGATIVE_COLUMNS` and the warning polygon.
    """
    rows: list[dict[str, Any]] = []
    geoms: list[Any] = []
    for record, verification, patch in latest_verifications(session, county_code=county_code, period=period):
        if verification.result != "false_change":
            continue
        at = aware(verification.observed_at or verification.created_at)
        rows.append({
            "warning_id": record.id, "period": record.period, "county_code": record.county_code,
            "patch_id": record.patch_id, "t1": record.t1, "t2": record.t2,
            "verification_id": verification.id, "result": verification.result,
            "reason": verification_reason(verification), "actual_use": verification.actual_use,
            "verified_by": verification.by, "verified_at": at.isoformat() if at else None,
            **provenance_fields(record, patch),
        })
        geoms.append(shapely_wkt.loads(record.geometry_wkt))
    if not rows:
        return gpd.GeoDataFrame({k: [] for k in NEGATIVE_COLUMNS}, geometry=[], crs=4326)
    return gpd.GeoDataFrame(rows, columns=list(NEGATIVE_COLUMNS), geometry=geoms, crs=4326)

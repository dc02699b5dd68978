"""Issued 监测图斑: import the list a province/ministry sends for a county and period, match it to the warnings.

``cspon-rs tuban import FILE --county C --period P --db URL`` reads the issued 图斑 (Shapefile -- any encoding
with a ``.cpg``, UTF-8 or GBK without one --, GeoPackage, or an XLSX/CSV table with centre coordinates), maps
their fields by ``configs/issued_tuban_fields.yaml`` (:class:`IssuedFields`; ``JCBH`` 监测编号, ``XZQDM``,
``TBMJ``, ``BHLX``, ``QSX``/``HSX``, ``ZXJD``/``ZXWD``), stores them in ``issued_tuban`` and sorts them into
three lists:

* **matched** (both numbers kept): the issued 图斑 overlaps one or more warnings of the county and period;
* **issued, not detected**: nothing of ours overlaps it. A warning of category ``issued`` 下发图斑(未检出) is
  created for it (``issued_no`` = its number, priority :data:`ISSUED_PRIORITY` + the area term), so it enters
  the same verification workflow, patrols and exports as every other warning;
* **detected, not issued** (自主发现): warnings of the county and period that no issued 图斑 overlaps.

**Matching rule.** Areas are measured in the CGCS2000 Gauss-Krüger zone of the data. An issued polygon ``I``
and a warning ``W`` match when their overlap is at least ``min_overlap_share`` (default 0.1) of the smaller
of the two. A point (a table row with coordinates) matches a warning within ``point_tolerance_m`` (10 m) of it.
One-to-many: an issued 图斑 matches *every* warning that passes the rule; the one with the largest overlap
(the nearest for points) answers for it (``issued_tuban.warning_id``) and all are listed in ``matched_ids``.
A warning matched by several issued 图斑 carries the number of the one it overlaps most in ``issued_no``.
Recall for the period = matched issued 图斑 / all issued 图斑.

A re-import of the same period keeps what is stored (numbers already imported are skipped and named); the
lists are always computed from the store.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import pandas as pd
import shapely
from pydantic import Field
from shapely import wkt as shapely_wkt
from sqlalchemy import select
from sqlalchemy.orm import Session

from cspon_rs.config import StrictModel, load_yaml_config
from cspon_rs.errors import MissingFileError, SchemaError
from cspon_rs.geo.areas import gk_crs_for
from cspon_rs.geo.crs import SQM_PER_MU
from cspon_rs.store.case_models import IssuedTuban
from cspon_rs.store.models import WarningHistory, WarningRecord

__all__ = [
    "ISSUED_CATEGORY",
    "ISSUED_PRIORITY",
    "IssuedFields",
    "IssuedImport",
    "import_issued",
    "issued_lists",
    "load_issued",
    "load_issued_fields",
]

#: Category of a warning created for an issued 图斑 that nothing detected.
ISSUED_CATEGORY = "issued"
#: Priority of such a warning before the area term: an issued 图斑 must be answered, like a farmland flag.
ISSUED_PRIORITY = 300.0


class IssuedFields(StrictModel):
    """Field mapping of an issued-图斑 file (``configs/issued_tuban_fields.yaml``); ``None`` = not in the file."""

    layer: str | None = None
    sheet: str | None = None
    default_crs: str = "EPSG:4490"
    number_field: str = "JCBH"
    county_field: str | None = "XZQDM"
    area_field: str | None = "TBMJ"
    area_unit: Literal["m2", "mu", "ha"] = "m2"
    change_type_field: str | None = "BHLX"
    t1_field: str | None = "QSX"
    t2_field: str | None = "HSX"
    x_field: str = "ZXJD"
    y_field: str = "ZXWD"
    xy_crs: str = "EPSG:4490"
    min_overlap_share: float = Field(0.1, gt=0, le=1)
    point_tolerance_m: float = Field(10.0, ge=0)


def load_issued_fields(path: str | Path | None = None) -> IssuedFields:
    """Load the mapping; ``None`` reads the bundled ``configs/issued_tuban_fields.yaml``."""
    target = Path(path) if path is not None else Path(str(files("cspon_rs.configs") / "issued_tuban_fields.yaml"))
    return load_yaml_config(target, IssuedFields)


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _unit_factor(unit: str) -> float:
    return {"m2": 1.0, "mu": SQM_PER_MU, "ha": 10000.0}[unit]


def load_issued(path: str | Path, *, mapping: IssuedFields | None = None) -> gpd.GeoDataFrame:
    """Read issued 图斑 into ``number``, ``county_code``, ``issued_area_m2``, ``change_type``, ``t1``, ``t2``,
    ``geometry_kind``, ``attributes`` (every original field, JSON-safe) and the geometry (EPSG:4490).

    Tables (``.xlsx``, ``.csv``) give points from ``x_field``/``y_field`` in ``xy_crs``, buffered to a circle of
    the issued area (10 m radius without one) so they can be drawn and patrolled.

    Raises:
        MissingFileError: No file; SchemaError: the number or coordinate field is missing, a number is empty or
            repeated, or a date does not parse (row named).
    """
    from cspon_rs.rules.inputs import _read, parse_date

    mapping = mapping or IssuedFields()
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: issued 图斑 file not found")
    table = path.suffix.lower() in (".xlsx", ".xls", ".csv")
    if table:
        raw = (pd.read_csv(path, dtype=object, encoding="utf-8-sig") if path.suffix.lower() == ".csv"
               else pd.read_excel(path, sheet_name=mapping.sheet or 0, dtype=object))
        for name in (mapping.x_field, mapping.y_field):
            if name not in raw.columns:
                raise SchemaError(f"{path}: coordinate field {name!r} missing (columns {list(raw.columns)}); set "
                                  "x_field/y_field in the issued-图斑 field mapping")
        xs = pd.to_numeric(raw[mapping.x_field], errors="coerce")
        ys = pd.to_numeric(raw[mapping.y_field], errors="coerce")
        bad = [i + 2 for i, ok in enumerate((xs.notna() & ys.notna()).tolist()) if not ok]
        if bad:
            raise SchemaError(f"{path}: row(s) {bad[:10]} have no numeric {mapping.x_field}/{mapping.y_field}")
        frame = gpd.GeoDataFrame(raw, geometry=gpd.points_from_xy(xs, ys), crs=mapping.xy_crs)
    else:
        frame = _read(path, mapping.layer, mapping.default_crs)
    if mapping.number_field not in frame.columns:
        raise SchemaError(f"{path}: number field {mapping.number_field!r} missing (fields "
                          f"{[c for c in frame.columns if c != frame.geometry.name]}); set number_field in the "
                          "issued-图斑 field mapping (--fields)")
    numbers = [_text(v) for v in frame[mapping.number_field]]
    empty = [i + 1 for i, n in enumerate(numbers) if n is None]
    if empty:
        raise SchemaError(f"{path}: feature(s) {empty[:10]} have no {mapping.number_field}")
    repeated = sorted({n for n in numbers if n is not None and numbers.count(n) > 1})
    if repeated:
        raise SchemaError(f"{path}: {mapping.number_field} repeated: {repeated[:10]}")

    def col(name: str | None) -> list[Any]:
        return list(frame[name]) if name is not None and name in frame.columns else [None] * len(frame)

    factor = _unit_factor(mapping.area_unit)
    areas = [None if _text(v) is None else float(pd.to_numeric(v)) * factor for v in col(mapping.area_field)]
    dates: dict[str, list[dt.date | None]] = {}
    for key, date_field in (("t1", mapping.t1_field), ("t2", mapping.t2_field)):
        values = []
        for row, value in enumerate(col(date_field), start=1):
            try:
                values.append(parse_date(value))
            except Exception as exc:
                raise SchemaError(f"{path}: {date_field} row {row}: cannot read date {value!r}") from exc
        dates[key] = values
    geometry_name = frame.geometry.name
    attributes = [{str(k): _text(v) for k, v in rec.items() if k != geometry_name}
                  for rec in frame.drop(columns=geometry_name).to_dict("records")]
    out = gpd.GeoDataFrame({
        "number": numbers,
        "county_code": [_text(v) for v in col(mapping.county_field)],
        "issued_area_m2": areas,
        "change_type": [_text(v) for v in col(mapping.change_type_field)],
        "t1": dates["t1"], "t2": dates["t2"],
        "geometry_kind": ["point" if table else "polygon"] * len(frame),
        "attributes": attributes,
    }, geometry=frame.geometry.values, crs=frame.crs).to_crs(4490)
    if table and len(out):
        gk = gk_crs_for(out)
        radius = [math.sqrt(a / math.pi) if a else mapping.point_tolerance_m or 10.0 for a in areas]
        circles = out.geometry.to_crs(gk).buffer(pd.Series(radius, index=out.index).to_numpy(), quad_segs=16)
        out["_point"] = list(out.geometry)
        out = out.set_geometry(gpd.GeoSeries(circles, crs=gk).to_crs(4490).values)
    else:
        out["_point"] = [None] * len(out)
    return out


@dataclass
class IssuedImport:
    """Result of an import (lists computed from the store after it).

    Attributes:
        county_code, period: The keys.
        matched: ``(issued number, [warning ids])``, the first id answering for it.
        missed: ``(issued number, created warning id)`` -- issued, not detected; in the workflow from now on.
        self_found: Warning ids detected but not issued (自主发现).
        recall: Matched / issued (``None`` without issued 图斑).
        skipped: Numbers already imported for this county and period (kept as stored).
        other_county: Numbers whose county field names another county (imported anyway, named here).
    """

    county_code: str
    period: str
    matched: list[tuple[str, list[str]]] = field(default_factory=list)
    missed: list[tuple[str, str | None]] = field(default_factory=list)
    self_found: list[str] = field(default_factory=list)
    recall: float | None = None
    skipped: list[str] = field(default_factory=list)
    other_county: list[str] = field(default_factory=list)


def _match(issued_geom: Any, point: Any, candidates: list[tuple[WarningRecord, Any]], rule: IssuedFields,
           ) -> list[tuple[str, float]]:
    """(warning id, score) of the warnings matching one issued 图斑, best first (in the GK CRS)."""
    out: list[tuple[str, float]] = []
    for record, geom in candidates:
        if point is not None:
            distance = float(geom.distance(point))
            if distance <= rule.point_tolerance_m:
                out.append((record.id, -distance))
            continue
        overlap = float(shapely.intersection(issued_geom, geom).area)
        smaller = min(float(issued_geom.area), float(geom.area))
        if smaller > 0 and overlap >= rule.min_overlap_share * smaller:
            out.append((record.id, overlap / smaller))
    return sorted(out, key=lambda kv: (-kv[1], kv[0]))


def import_issued(
    session: Session,
    path: str | Path,
    *,
    county_code: str,
    period: str,
    mapping: IssuedFields | None = None,
    by: str = "cspon-rs",
) -> IssuedImport:
    """Import issued 图斑 for a county and period, match them, create warnings for the missed ones (one
    transaction) and return the three lists.

    Raises:
        MissingFileError, SchemaError: See :func:`load_issued`.
    """
    from cspon_rs.rules.config import RulesConfig
    from cspon_rs.rules.engine import priority_score

    mapping = mapping or load_issued_fields()
    issued = load_issued(path, mapping=mapping)
    result = IssuedImport(county_code=county_code, period=period)
    stored = {r.number for r in session.scalars(select(IssuedTuban).where(
        IssuedTuban.county_code == county_code, IssuedTuban.period == period))}
    warnings = list(session.scalars(select(WarningRecord).where(
        WarningRecord.county_code == county_code, WarningRecord.period == period,
        WarningRecord.is_warning.is_(True))))
    if len(issued):
        gk = gk_crs_for(issued)
        issued_gk = issued.to_crs(gk)
        points = gpd.GeoSeries([p for p in issued["_point"]], crs=4490)
        points_gk = list(points.to_crs(gk)) if points.notna().any() else [None] * len(issued)
        w_geoms = (list(gpd.GeoSeries([shapely_wkt.loads(w.geometry_wkt) for w in warnings], crs=4326).to_crs(gk))
                   if warnings else [])
        detected = [(w, g) for w, g in zip(warnings, w_geoms, strict=True) if w.category != ISSUED_CATEGORY]
        tree = shapely.STRtree([g for _, g in detected]) if detected else None
        by_id = {w.id: w for w in warnings}
        best_for_warning: dict[str, tuple[float, str]] = {}
        max_seq = max((int(s) for s in session.scalars(select(WarningRecord.seq).where(
            WarningRecord.county_code == county_code, WarningRecord.period == period))), default=0)
        rules = RulesConfig()
        for k, row in enumerate(issued.itertuples(index=False)):
            number = str(row.number)
            if number in stored:
                result.skipped.append(number)
                continue
            if row.county_code and row.county_code[:6] != county_code[:6]:
                result.other_county.append(number)
            geom_gk = issued_gk.geometry.iat[k]
            point = points_gk[k]
            probe = point.buffer(mapping.point_tolerance_m) if point is not None else geom_gk
            near = [detected[int(j)] for j in tree.query(probe, predicate="intersects")] if tree is not None else []
            matches = _match(geom_gk, point, near, mapping)
            area_m2 = float(geom_gk.area)
            record = IssuedTuban(
                county_code=county_code, period=period, number=number, issued_area_m2=row.issued_area_m2,
                area_m2=round(area_m2, 2), change_type=row.change_type, t1=row.t1, t2=row.t2,
                geometry_kind=row.geometry_kind, geometry_wkt=issued.geometry.iat[k].wkt,
                matched_ids=[m[0] for m in matches], match_share=round(matches[0][1], 4) if matches and point is None
                else None, detected=bool(matches), attributes=row.attributes, source_file=str(Path(path).resolve()),
                imported_by=by,
            )
            if matches:
                record.warning_id = matches[0][0]
                for warning_id, score in matches:
                    current = best_for_warning.get(warning_id)
                    if current is None or score > current[0]:
                        best_for_warning[warning_id] = (score, number)
            else:
                max_seq += 1
                created = _issued_warning(row, issued.geometry.iat[k], area_m2, county_code, period, max_seq,
                                          priority_score([], area_m2 / SQM_PER_MU, None, rules) + ISSUED_PRIORITY, by)
                session.add(created)
                session.flush()  # the warning row before the issued row that points at it
                record.warning_id = created.id
            session.add(record)
        for warning_id, (score, number) in best_for_warning.items():
            warning = by_id[warning_id]
            if warning.issued_no != number:
                warning.issued_no = number
                warning.history.append(WarningHistory(
                    event="issued", by=by, from_status=warning.status, to_status=warning.status,
                    why=f"matches issued 图斑 {number} ({period})", details={"issued_no": number,
                                                                           "score": round(score, 4)}))
    session.commit()
    lists = issued_lists(session, county_code=county_code, period=period)
    result.matched, result.missed, result.self_found, result.recall = (
        lists.matched, lists.missed, lists.self_found, lists.recall)
    return result


def _issued_warning(row: Any, geom_4490: Any, area_m2: float, county_code: str, period: str, seq: int,
                    priority: float, by: str) -> WarningRecord:
    """A warning for an issued 图斑 nothing detected (stored in EPSG:4326 like every warning)."""
    geom = gpd.GeoSeries([geom_4490], crs=4490).to_crs(4326).iat[0]
    minx, miny, maxx, maxy = geom.bounds
    point = geom.representative_point()
    number = str(row.number)
    zh = f"下发监测图斑 {number}{'（' + row.change_type + '）' if row.change_type else ''}，本系统未检出，需实地核查"
    en = f"issued 图斑 {number}{' (' + row.change_type + ')' if row.change_type else ''} not detected here; check it"
    record = WarningRecord(
        id=f"{county_code}-{period}-{seq:04d}", period=period, county_code=county_code, seq=seq,
        source_key=f"issued:{number}", patch_id=None, category=ISSUED_CATEGORY, is_warning=True, flags=[],
        area_m2=round(area_m2, 2), area_mu=round(area_m2 / SQM_PER_MU, 4), covered_m2=0.0, excess_m2=0.0,
        farmland_overlap_m2=0.0, redline_overlap_m2=0.0, outside_urban_m2=0.0,
        reasons=[{"code": "ISSUED", "zh": zh, "en": en, "change_type": row.change_type}], permits=[],
        priority=round(priority, 4), rank=None,
        confidence=None, status="new", rule_set_version="issued", t1=row.t1, t2=row.t2,
        geometry_wkt=geom.wkt, minx=minx, miny=miny, maxx=maxx, maxy=maxy, centroid_lon=point.x,
        centroid_lat=point.y, linked_ids=[], seen_periods=[], issued_no=number, version=1,
    )
    record.history.append(WarningHistory(event="created", by=by, to_status="new",
                                         why=f"issued 图斑 {number} imported, not detected",
                                         details={"period": period, "issued_no": number}))
    return record


def issued_lists(session: Session, *, county_code: str, period: str) -> IssuedImport:
    """The three lists and the recall of a county and period, from the store."""
    rows = list(session.scalars(select(IssuedTuban).where(
        IssuedTuban.county_code == county_code, IssuedTuban.period == period).order_by(IssuedTuban.number)))
    out = IssuedImport(county_code=county_code, period=period)
    answered: set[str] = set()
    for row in rows:
        if row.detected:
            out.matched.append((row.number, list(row.matched_ids or [])))
            answered.update(row.matched_ids or [])
        else:
            out.missed.append((row.number, row.warning_id))
    warnings = session.scalars(select(WarningRecord).where(
        WarningRecord.county_code == county_code, WarningRecord.period == period,
        WarningRecord.is_warning.is_(True), WarningRecord.category != ISSUED_CATEGORY).order_by(WarningRecord.id))
    out.self_found = [w.id for w in warnings if w.id not in answered]
    out.recall = round(len(out.matched) / len(rows), 4) if rows else None
    return out

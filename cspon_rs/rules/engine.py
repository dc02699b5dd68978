"""Classify change patches against permits and control lines into warnings (pure, no I/O).

The rules, for a change patch P of area A (m²) detected between dates t1 < t2 (all areas measured in one
projected CRS chosen by :func:`cspon_rs.geo.crs.area_crs_for`; tolerance ``tol = max(share·A, m2)``):

A permit is *valid at t2* when its status is approved (or expired with an expiry date after t2), it was
approved on/before t2 and has not expired before t2; revoked permits are never valid. ``C`` is the area of
P covered by the union of valid permits, ``C_old`` the part covered by permits approved on/before t1.

=========================  ================================================================================
category                   when
=========================  ================================================================================
``none`` (合法)              ``C ≥ min_covered_share·A`` and ``A − C ≤ tol`` and ``A − C_old ≤ tol``
``exceeding_approval``      ``C ≥ min_covered_share·A`` and ``A − C > tol`` (excess = A − C) 少批多建
``building_while_pending``  covered (``A − C ≤ tol``) only thanks to permits approved in (t1, t2], or not
                            covered by valid permits but ≥ min_covered_share covered by a pending permit 边批边建
``built_before_approval``   not covered; ≥ min_covered_share covered by a permit approved *after* t2
                            ("confirmed late") or by nothing at all 未批先建
``built_elsewhere``         not covered, but a valid permit lies within ``built_elsewhere_max_distance_m``
                            and shows no change of its own (< ``not_built_max_share``) 批东建西
``approved_not_built``      a valid permit approved > ``not_built_min_age_days`` before t2 with detected
                            change < ``not_built_max_share`` of it (geometry = the permit) 批而不建
=========================  ================================================================================

Independently, flags: ``YJJBNT``/``STBHHX`` when the overlap with permanent basic farmland / the
ecological red line exceeds both ``control_line_min_overlap_m2`` and ``control_line_min_overlap_share``·A;
``CZKFBJ`` when urban-type construction (not covered by ``non_urban_permit_types`` permits) lies outside the
urban development boundary by more than both ``urban_boundary_min_outside_m2`` and ``..._share``·A.

Priority (higher = look first)::

    priority = 100 · Σ priority_weights[flag] + area_weight · min(1, ln(1+mu)/ln(1+area_cap_mu))
               + confidence_weight · confidence

so control-line violations dominate, then confidence (the warning classifier's calibrated probability that
the patch is real change when the detector ran one, else the mean change probability), then area. Rows that
are not warnings (category ``none`` without flags) get priority 0 and no rank. Every row is *suspected* (疑似) until a
field check.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from cspon_rs.errors import CRSError, SchemaError
from cspon_rs.geo.crs import SQM_PER_MU, area_crs_for
from cspon_rs.rules.config import CATEGORY_ZH, RulesConfig

__all__ = ["WARNING_COLUMNS", "classify", "permit_state_at", "priority_score"]

#: Columns of the warnings frame returned by :func:`classify` (plus ``geometry``).
WARNING_COLUMNS: tuple[str, ...] = (
    "source_key", "patch_id", "category", "category_zh", "is_warning", "suspected", "flags",
    "area_m2", "area_mu", "covered_m2", "excess_m2", "excess_mu",
    "farmland_overlap_m2", "redline_overlap_m2", "outside_urban_m2",
    "reasons", "reason_zh", "reason_en", "permits", "permit_nos",
    "confidence", "prob_max", "priority", "rank", "township_code", "township_name", "status",
    "t1", "t2", "centroid_lon", "centroid_lat", "rule_set_version",
)

_CONTROL_ZH = {"YJJBNT": "永久基本农田", "STBHHX": "生态保护红线", "CZKFBJ": "城镇开发边界"}
_CONTROL_EN = {
    "YJJBNT": "permanent basic farmland (YJJBNT)",
    "STBHHX": "ecological protection red line (STBHHX)",
    "CZKFBJ": "urban development boundary (CZKFBJ)",
}


def _as_date(value: Any, name: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError as exc:
        raise SchemaError(f"{name}: cannot parse date {value!r} (use YYYY-MM-DD)") from exc


def permit_state_at(permit: pd.Series, t1: dt.date, t2: dt.date) -> str:
    """State of one permit with respect to a detection interval.

    Returns:
        ``"valid_old"`` (valid at t2, approved on/before t1 or on an unknown date), ``"valid_new"`` (valid
        at t2, approved in (t1, t2]), ``"pending"`` (still pending), ``"late"`` (approved after t2),
        ``"revoked"`` or ``"expired"`` (expired before t2).
    """
    status = permit["status"]
    approved: dt.date | None = permit["approved_on"]
    expires: dt.date | None = permit["expires_on"]
    if status == "revoked":
        return "revoked"
    if status == "pending":
        return "pending"
    if approved is not None and approved > t2:
        return "late"
    if expires is not None and expires < t2:
        return "expired"
    if status == "expired" and expires is None:
        return "expired"
    if approved is not None and approved > t1:
        return "valid_new"
    return "valid_old"


def priority_score(flags: Iterable[str], area_mu: float, confidence: float | None, config: RulesConfig) -> float:
    """The documented priority formula (see module docstring); higher means more urgent."""
    control = sum(config.priority_weights.get(f, 0.0) for f in flags)  # type: ignore[call-overload]
    area_term = min(1.0, math.log1p(max(area_mu, 0.0)) / math.log1p(config.area_cap_mu))
    conf = 0.0 if confidence is None or not np.isfinite(confidence) else float(confidence)
    return round(100.0 * control + config.area_weight * area_term + config.confidence_weight * conf, 4)


def _area(geom: BaseGeometry | None) -> float:
    return 0.0 if geom is None or geom.is_empty else float(geom.area)


def _union(geoms: list[BaseGeometry]) -> BaseGeometry | None:
    if not geoms:
        return None
    return shapely.union_all(geoms)


def _inter_area(geom: BaseGeometry, other: BaseGeometry | None) -> float:
    if other is None:
        return 0.0
    return _area(shapely.intersection(geom, other))


def _date_str(value: dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _patch_confidence(patch: pd.Series) -> float | None:
    """The warning classifier's calibrated ``confidence`` when the patch has one, else ``prob_mean``."""
    for key in ("confidence", "prob_mean"):
        value = patch.get(key)
        if value is not None and not pd.isna(value):
            return round(float(value), 4)
    return None


def _reason(code: str, zh: str, en: str) -> dict[str, str]:
    return {"code": code, "zh": zh, "en": en}


def _permit_entry(permit: pd.Series, role: str, overlap: float, share: float, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "permit_no": permit["permit_no"],
        "permit_type": permit["permit_type"],
        "status": permit["status"],
        "approved_on": _date_str(permit["approved_on"]),
        "expires_on": _date_str(permit["expires_on"]),
        "project": permit["project"],
        "applicant": permit["applicant"],
        "role": role,
        "overlap_m2": round(overlap, 2),
        "share": round(share, 4),
    }
    entry.update(extra)
    return entry


def _to_crs(gdf: gpd.GeoDataFrame, crs: CRS, what: str) -> gpd.GeoDataFrame:
    """Reproject to the working CRS and make geometries valid (reprojection can break thin rings)."""
    if gdf.crs is None:
        if len(gdf) == 0:
            return gdf.set_crs(crs)
        raise CRSError(f"{what}: layer has no CRS; set one (e.g. EPSG:4490)")
    out = gdf.to_crs(crs) if CRS.from_user_input(gdf.crs) != crs else gdf
    if len(out) and not out.geometry.is_valid.all():
        out = out.copy()
        fixed = shapely.make_valid(out.geometry.values)
        out[out.geometry.name] = [
            g if g.geom_type in ("Polygon", "MultiPolygon")
            else shapely.union_all([p for p in getattr(g, "geoms", []) if p.geom_type in ("Polygon", "MultiPolygon")])
            for g in fixed
        ]
    return out


def _current_control(control_lines: gpd.GeoDataFrame | None, t2: dt.date) -> dict[str, BaseGeometry | None]:
    """Union per kind of the control-line version in force at t2.

    The newest ``valid_from`` on/before t2 is used (rows without a date always count); when every version
    of a kind starts after t2 (lines delimited later than the scene), the oldest version is used instead,
    since it is the closest available approximation of the lines at t2.
    """
    out: dict[str, BaseGeometry | None] = {"YJJBNT": None, "STBHHX": None, "CZKFBJ": None}
    if control_lines is None or len(control_lines) == 0:
        return out
    for kind in out:
        rows = control_lines[control_lines["kind"] == kind]
        if len(rows) and "valid_from" in rows.columns:
            starts = [v if isinstance(v, dt.date) else None for v in rows["valid_from"]]
            dated = [v for v in starts if v is not None]
            if dated:
                before = [v for v in dated if v <= t2]
                chosen = max(before) if before else min(dated)
                rows = rows[[v is None or v == chosen for v in starts]]
        if len(rows):
            out[kind] = shapely.union_all(rows.geometry.values)
    return out


def classify(
    patches: gpd.GeoDataFrame,
    permits: gpd.GeoDataFrame,
    control_lines: gpd.GeoDataFrame | None,
    *,
    t1: dt.date | str,
    t2: dt.date | str,
    config: RulesConfig | None = None,
    townships: gpd.GeoDataFrame | None = None,
    footprint: gpd.GeoSeries | None = None,
) -> gpd.GeoDataFrame:
    """Classify change patches into warning categories, with flags, reasons and a priority.

    Pure function: reads nothing, writes nothing. Inputs may be in any CRSs (EPSG:4490, GK zones
    EPSG:4513-4554, UTM...); all geometry work happens in :func:`~cspon_rs.geo.crs.area_crs_for` of the
    patches (their own CRS when projected in metres), so every area is in m².

    Args:
        patches: ``change_patches`` layer (needs ``patch_id``, ``prob_mean``; ``prob_max`` optional).
        permits: Canonical permits from :func:`~cspon_rs.rules.inputs.load_permits`.
        control_lines: Canonical control lines from :func:`~cspon_rs.rules.inputs.load_control_lines`
            (``kind``, ``valid_from``), or None.
        t1: Date of the before scene.
        t2: Date of the after scene (permits are judged "at t2").
        config: Rule thresholds; defaults to :class:`RulesConfig()`.
        townships: Optional ``township_code``/``township_name`` polygons; each row gets the township it
            overlaps most.
        footprint: Optional area actually observed (e.g. the scene extent); 批而不建 is only judged for
            permits at least half inside it. Without it every permit is judged.

    Returns:
        One row per patch plus one per 批而不建 permit, columns :data:`WARNING_COLUMNS`, geometry in the
        patches' CRS (the permits' CRS when there are no patches), sorted by rank (non-warnings last).

    Raises:
        SchemaError: ``t1`` is not before ``t2`` or a required column is missing.
        CRSError: A non-empty layer has no CRS.
    """
    config = config or RulesConfig()
    d1, d2 = _as_date(t1, "t1"), _as_date(t2, "t2")
    if d1 >= d2:
        raise SchemaError(f"t1 ({d1}) must be before t2 ({d2})")
    for column in ("patch_id",):
        if column not in patches.columns:
            raise SchemaError(f"change patches: column {column!r} missing")
    ref = patches if len(patches) else permits
    if ref.crs is None:
        raise CRSError("change patches: layer has no CRS")
    out_crs = CRS.from_user_input(ref.crs)
    work = area_crs_for(ref)
    pw = _to_crs(patches, work, "change patches").reset_index(drop=True)
    qw = _to_crs(permits, work, "permits").reset_index(drop=True)
    states = [permit_state_at(row, d1, d2) for _, row in qw.iterrows()] if len(qw) else []
    qw = qw.assign(_state=states) if len(qw) else qw.assign(_state=pd.Series([], dtype=object))
    qw["_area"] = qw.geometry.area if len(qw) else pd.Series([], dtype=float)
    control = _current_control(
        _to_crs(control_lines, work, "control lines") if control_lines is not None else None, d2
    )
    tw = _to_crs(townships, work, "townships").reset_index(drop=True) if townships is not None else None

    # Change inside each permit (share of the permit's own area), used by 批东建西 and 批而不建.
    change_share = np.zeros(len(qw))
    if len(qw) and len(pw):
        change_union = shapely.union_all(pw.geometry.values)
        change_share = np.array(
            [_inter_area(g, change_union) / a if a > 0 else 0.0 for g, a in zip(qw.geometry, qw["_area"],
                                                                                strict=True)]
        )
    qw["_change_share"] = change_share

    rows: list[dict[str, Any]] = []
    geoms: list[BaseGeometry] = []
    sindex = qw.sindex if len(qw) else None
    pairs: list[tuple[bool, float, str, str, int, int]] = []
    for k, (_, patch) in enumerate(pw.iterrows()):
        geom: BaseGeometry = patch.geometry
        row, candidates = _classify_patch(patch, geom, qw, sindex, control, d1, d2, config)
        pairs.extend((c[0], c[1], c[2], row["source_key"], k, c[3]) for c in candidates)
        rows.append(row)
        geoms.append(geom)
    # 批东建西 is one-to-one: each idle permit explains at most one patch, the closest (same project or
    # applicant first); each patch names at most one permit.
    elsewhere_permits: set[int] = set()
    matched: set[int] = set()
    for _, distance, _, _, k, i in sorted(pairs):
        if k in matched or i in elsewhere_permits:
            continue
        matched.add(k)
        elsewhere_permits.add(i)
        _make_elsewhere(rows[k], qw.iloc[i], distance)

    # 批而不建: old valid permits with (almost) no detected change inside.
    limit = d2 - dt.timedelta(days=config.not_built_min_age_days)
    observed = None
    if footprint is not None and len(footprint):
        observed = shapely.union_all(_to_crs(gpd.GeoDataFrame(geometry=footprint), work, "footprint").geometry.values)
    for idx, permit in qw.iterrows():
        if permit["_state"] not in ("valid_old", "valid_new") or permit["approved_on"] is None:
            continue
        if permit["approved_on"] >= limit or permit["permit_type"] not in config.not_built_permit_types:
            continue
        if permit["_change_share"] >= config.not_built_max_share or idx in elsewhere_permits:
            continue
        if observed is not None and _inter_area(permit.geometry, observed) < 0.5 * permit["_area"]:
            continue
        rows.append(_not_built_row(permit, d2, config))
        geoms.append(permit.geometry)

    result = gpd.GeoDataFrame(rows, geometry=geoms, crs=work) if rows else gpd.GeoDataFrame(
        {c: [] for c in WARNING_COLUMNS}, geometry=[], crs=work
    )
    for column in WARNING_COLUMNS:
        if column not in result.columns:
            result[column] = None
    _assign_townships(result, tw)
    if len(result):
        lonlat = result.geometry.representative_point().to_crs(4326)
        result["centroid_lon"] = lonlat.x.round(7).to_numpy()
        result["centroid_lat"] = lonlat.y.round(7).to_numpy()
        result["priority"] = [
            priority_score(f, mu, c, config) if w else 0.0
            for f, mu, c, w in zip(result["flags"], result["area_mu"], result["confidence"], result["is_warning"],
                                   strict=True)
        ]
        order = sorted(
            range(len(result)),
            key=lambda i: (not result["is_warning"].iat[i], -result["priority"].iat[i],
                           -result["area_m2"].iat[i], str(result["source_key"].iat[i])),
        )
        result = result.iloc[order].reset_index(drop=True)
        ranks: list[int | None] = []
        n = 0
        for is_warning in result["is_warning"]:
            n += 1 if is_warning else 0
            ranks.append(n if is_warning else None)
        result["rank"] = pd.array(ranks, dtype="Int64")
    result["t1"] = d1.isoformat()
    result["t2"] = d2.isoformat()
    result["status"] = "new"
    result["suspected"] = True
    result["rule_set_version"] = config.rule_set_version
    result = result[[*WARNING_COLUMNS, "geometry"]]
    result = result.set_geometry("geometry")
    return result.to_crs(out_crs) if CRS.from_user_input(result.crs) != out_crs else result


def _classify_patch(
    patch: pd.Series,
    geom: BaseGeometry,
    qw: gpd.GeoDataFrame,
    sindex: Any,
    control: dict[str, BaseGeometry | None],
    t1: dt.date,
    t2: dt.date,
    config: RulesConfig,
) -> tuple[dict[str, Any], list[tuple[bool, float, str, int]]]:
    area = _area(geom)
    tol = config.tolerance_m2(area)
    min_cov = config.min_covered_share * area
    hits = [int(i) for i in sindex.query(geom, predicate="intersects")] if sindex is not None else []
    by_state: dict[str, list[int]] = {}
    overlaps: dict[int, float] = {}
    for i in hits:
        ov = _inter_area(geom, qw.geometry.iat[i])
        if ov <= 0:
            continue
        overlaps[i] = ov
        by_state.setdefault(qw["_state"].iat[i], []).append(i)

    def covered(states: tuple[str, ...]) -> float:
        idx = [i for s in states for i in by_state.get(s, [])]
        return _inter_area(geom, _union([qw.geometry.iat[i] for i in idx])) if idx else 0.0

    def entries(states: tuple[str, ...], role: str) -> list[dict[str, Any]]:
        return [
            _permit_entry(qw.iloc[i], role, overlaps[i], overlaps[i] / area if area else 0.0)
            for s in states for i in sorted(by_state.get(s, []), key=lambda j: -overlaps[j])
        ]

    def nos(states: tuple[str, ...]) -> str:
        return "、".join(str(qw["permit_no"].iat[i]) for s in states for i in by_state.get(s, []))

    reasons: list[dict[str, str]] = []
    permits: list[dict[str, Any]] = []
    candidates: list[tuple[bool, float, str, int]] = []
    c_valid = covered(("valid_old", "valid_new"))
    c_old = covered(("valid_old",))
    excess = 0.0
    mu = area / SQM_PER_MU
    if area > 0 and c_valid >= min_cov and c_valid > 0:
        permits += entries(("valid_old", "valid_new"), "covering")
        share = c_valid / area
        if area - c_valid > tol:
            category = "exceeding_approval"
            excess = area - c_valid
            reasons.append(_reason(
                "exceeding_approval",
                f"超出批准范围建设 {excess:.0f} m²（{excess / SQM_PER_MU:.2f} 亩）；"
                f"批准范围（{nos(('valid_old', 'valid_new'))}）仅覆盖图斑 {share:.0%}",
                f"{excess:.0f} m² ({excess / SQM_PER_MU:.2f} mu) built beyond the approved area; permit(s) "
                f"{nos(('valid_old', 'valid_new'))} cover only {share:.0%} of the patch",
            ))
        elif area - c_old > tol:
            category = "building_while_pending"
            for i in by_state.get("valid_new", []):
                p = qw.iloc[i]
                reasons.append(_reason(
                    "approved_after_t1",
                    f"批准文号 {p['permit_no']} 于 {p['approved_on']} 批准，晚于前时相 {t1}：批准前已开工（边批边建）",
                    f"permit {p['permit_no']} approved on {p['approved_on']}, after the before scene ({t1}): "
                    "construction started before approval (building while pending)",
                ))
        else:
            category = "none"
            reasons.append(_reason(
                "covered",
                f"变化图斑在有效批准范围内（{nos(('valid_old', 'valid_new'))}，覆盖 {share:.0%}）",
                f"covered by valid permit(s) {nos(('valid_old', 'valid_new'))} ({share:.0%} of the patch)",
            ))
        # Uncovered remainder partly covered by pending / late permits: say so.
        for state, zh, en in (
            ("pending", "仍在审批中", "still pending"),
            ("late", "迟于后时相批准", "approved after t2"),
        ):
            for i in by_state.get(state, []):
                p = qw.iloc[i]
                permits.append(_permit_entry(p, state, overlaps[i], overlaps[i] / area))
                if category != "none":
                    reasons.append(_reason(f"{state}_part", f"部分范围的批准文号 {p['permit_no']} {zh}",
                                           f"part of it is covered by permit {p['permit_no']}, {en}"))
    else:
        c_pending = covered(("pending",))
        c_late = covered(("late",))
        if area > 0 and c_pending >= min_cov and c_pending > 0:
            category = "building_while_pending"
            permits += entries(("pending",), "pending")
            for i in by_state["pending"]:
                p = qw.iloc[i]
                reasons.append(_reason(
                    "pending_at_t2",
                    f"批准文号 {p['permit_no']} 在后时相 {t2} 仍在审批中（边批边建）",
                    f"permit {p['permit_no']} still pending approval at t2 ({t2}) (building while pending)",
                ))
        elif area > 0 and c_late >= min_cov and c_late > 0:
            category = "built_before_approval"
            permits += entries(("late",), "late")
            for i in by_state["late"]:
                p = qw.iloc[i]
                reasons.append(_reason(
                    "confirmed_late",
                    f"确认迟批：批准文号 {p['permit_no']} 于 {p['approved_on']} 批准，晚于后时相 {t2}（未批先建）",
                    f"confirmed late: permit {p['permit_no']} approved on {p['approved_on']} after t2 ({t2}) "
                    "(built before approval)",
                ))
        else:
            candidates = _nearby_permits(geom, area, qw, sindex, overlaps, config)
            category = "built_before_approval"
            reasons.append(_reason("no_approval", "无任何有效批准（未批先建）",
                                   "no approval covers the change (built before approval)"))
        # Below-threshold overlaps and invalid permits are listed, not used.
        for state in ("valid_old", "valid_new", "pending", "late", "revoked", "expired"):
            for i in by_state.get(state, []):
                if any(e["permit_no"] == qw["permit_no"].iat[i] for e in permits):
                    continue
                p = qw.iloc[i]
                permits.append(_permit_entry(p, state if state in ("revoked", "expired") else "touching",
                                             overlaps[i], overlaps[i] / area if area else 0.0))
                if state == "revoked":
                    reasons.append(_reason("revoked", f"批准文号 {p['permit_no']} 已撤销",
                                           f"permit {p['permit_no']} was revoked"))
                elif state == "expired":
                    reasons.append(_reason("expired", f"批准文号 {p['permit_no']} 已于 {p['expires_on']} 过期",
                                           f"permit {p['permit_no']} expired on {p['expires_on']}"))

    # Control lines (independent of the category).
    flags: list[str] = []
    ov_farm = _inter_area(geom, control["YJJBNT"])
    ov_red = _inter_area(geom, control["STBHHX"])
    for kind, ov in (("YJJBNT", ov_farm), ("STBHHX", ov_red)):
        if area > 0 and ov > config.control_line_min_overlap_m2 and ov / area > config.control_line_min_overlap_share:
            flags.append(kind)
            reasons.append(_reason(
                kind,
                f"占用{_CONTROL_ZH[kind]} {ov:.0f} m²（{ov / SQM_PER_MU:.2f} 亩，占图斑 {ov / area:.0%}）",
                f"overlaps the {_CONTROL_EN[kind]} by {ov:.0f} m² ({ov / SQM_PER_MU:.2f} mu, {ov / area:.0%} "
                "of the patch)",
            ))
    outside = 0.0
    if control["CZKFBJ"] is not None and area > 0:
        outside = area - _inter_area(geom, control["CZKFBJ"])
        non_urban = [i for s in ("valid_old", "valid_new") for i in by_state.get(s, [])
                     if qw["permit_type"].iat[i] in config.non_urban_permit_types]
        c_non_urban = _inter_area(geom, _union([qw.geometry.iat[i] for i in non_urban])) if non_urban else 0.0
        urban_type = area - c_non_urban > config.tolerance_m2(area)
        if (urban_type and outside > config.urban_boundary_min_outside_m2
                and outside / area > config.urban_boundary_min_outside_share):
            flags.append("CZKFBJ")
            reasons.append(_reason(
                "CZKFBJ",
                f"城镇开发边界外城镇建设 {outside:.0f} m²"
                f"（{outside / SQM_PER_MU:.2f} 亩，占图斑 {outside / area:.0%}）",
                f"urban-type construction outside the {_CONTROL_EN['CZKFBJ']}: {outside:.0f} m² "
                f"({outside / SQM_PER_MU:.2f} mu, {outside / area:.0%} of the patch)",
            ))
    confidence = _patch_confidence(patch)
    if confidence is not None and _is_text(patch.get("confidence_reason")):
        why = str(patch["confidence_reason"])
        reasons.append(_reason("confidence", f"预警置信度 {confidence:.2f}（{why}）",
                               f"warning confidence {confidence:.2f} ({why})"))
    prob_max = patch.get("prob_max")
    row = {
        "source_key": str(patch["patch_id"]),
        "patch_id": str(patch["patch_id"]),
        "category": category,
        "category_zh": CATEGORY_ZH[category],
        "is_warning": category != "none" or bool(flags),
        "flags": flags,
        "area_m2": round(area, 2),
        "area_mu": round(mu, 4),
        "covered_m2": round(c_valid, 2),
        "excess_m2": round(excess, 2),
        "excess_mu": round(excess / SQM_PER_MU, 4),
        "farmland_overlap_m2": round(ov_farm, 2),
        "redline_overlap_m2": round(ov_red, 2),
        "outside_urban_m2": round(outside, 2),
        "reasons": reasons,
        "reason_zh": "；".join(r["zh"] for r in reasons),
        "reason_en": "; ".join(r["en"] for r in reasons),
        "permits": permits,
        "permit_nos": ", ".join(dict.fromkeys(str(p["permit_no"]) for p in permits)),
        "confidence": confidence,
        "prob_max": None if prob_max is None or pd.isna(prob_max) else round(float(prob_max), 4),
    }
    return row, candidates


def _make_elsewhere(row: dict[str, Any], permit: pd.Series, distance: float) -> None:
    """Turn a provisional 未批先建 row into 批东建西 naming ``permit`` (in place)."""
    row["category"] = "built_elsewhere"
    row["category_zh"] = CATEGORY_ZH["built_elsewhere"]
    row["permits"] = [
        _permit_entry(permit, "nearby", 0.0, 0.0, distance_m=round(distance, 1),
                      permit_change_share=round(float(permit["_change_share"]), 4)),
        *row["permits"],
    ]
    reason = _reason(
        "built_elsewhere",
        f"不在任何有效批准范围内；{distance:.0f} m 外的批准文号 {permit['permit_no']}"
        f"（{permit['project'] or '-'}，{permit['applicant'] or '-'}）范围内未检测到变化（批东建西）",
        f"not covered by any permit; permit {permit['permit_no']} ({permit['project'] or '-'}, "
        f"{permit['applicant'] or '-'}) {distance:.0f} m away shows no change of its own "
        "(built elsewhere than approved)",
    )
    row["reasons"] = [reason if r["code"] == "no_approval" else r for r in row["reasons"]]
    row["reason_zh"] = "；".join(r["zh"] for r in row["reasons"])
    row["reason_en"] = "; ".join(r["en"] for r in row["reasons"])
    row["permit_nos"] = ", ".join(dict.fromkeys(str(p["permit_no"]) for p in row["permits"]))


def _nearby_permits(
    geom: BaseGeometry,
    area: float,
    qw: gpd.GeoDataFrame,
    sindex: Any,
    overlaps: dict[int, float],
    config: RulesConfig,
) -> list[tuple[bool, float, str, int]]:
    """批东建西 candidates: valid permits within the distance that show no change of their own.

    Returns:
        ``(not_same_project_or_applicant, distance_m, permit_no, permit_index)`` tuples; smaller is better.
    """
    if sindex is None:
        return []
    near = [int(i) for i in sindex.query(geom, predicate="dwithin", distance=config.built_elsewhere_max_distance_m)]
    touching = [qw.iloc[i] for i in overlaps]
    projects = {p["project"] for p in touching if p["project"]}
    applicants = {p["applicant"] for p in touching if p["applicant"]}
    candidates = []
    for i in near:
        p = qw.iloc[i]
        if p["_state"] not in ("valid_old", "valid_new") or p["_change_share"] >= config.not_built_max_share:
            continue
        ratio = config.built_elsewhere_max_area_ratio
        if ratio is not None and p["_area"] > 0 and not (1 / ratio <= area / p["_area"] <= ratio):
            continue
        same = (p["project"] in projects) or (p["applicant"] in applicants)
        candidates.append((not same, float(geom.distance(p.geometry)), str(p["permit_no"]), i))
    return sorted(candidates)


def _not_built_row(permit: pd.Series, t2: dt.date, config: RulesConfig) -> dict[str, Any]:
    area = float(permit["_area"])
    share = float(permit["_change_share"])
    age = (t2 - permit["approved_on"]).days
    reasons = [_reason(
        "approved_not_built",
        f"批准文号 {permit['permit_no']} 于 {permit['approved_on']} 批准，距后时相 {t2} 已 {age} 天"
        f"（>{config.not_built_min_age_days} 天），范围内检测到的变化仅占 {share:.1%}（批而不建）",
        f"permit {permit['permit_no']} approved on {permit['approved_on']}, {age} days before t2 ({t2}) "
        f"(> {config.not_built_min_age_days}), detected change covers only {share:.1%} of it (approved but not built)",
    )]
    return {
        "source_key": f"permit:{permit['permit_no']}",
        "patch_id": None,
        "category": "approved_not_built",
        "category_zh": CATEGORY_ZH["approved_not_built"],
        "is_warning": True,
        "flags": [],
        "area_m2": round(area, 2),
        "area_mu": round(area / SQM_PER_MU, 4),
        "covered_m2": round(area, 2),
        "excess_m2": 0.0,
        "excess_mu": 0.0,
        "farmland_overlap_m2": 0.0,
        "redline_overlap_m2": 0.0,
        "outside_urban_m2": 0.0,
        "reasons": reasons,
        "reason_zh": reasons[0]["zh"],
        "reason_en": reasons[0]["en"],
        "permits": [_permit_entry(permit, "not_built", area * share, share, permit_change_share=round(share, 4))],
        "permit_nos": str(permit["permit_no"]),
        "confidence": None,
        "prob_max": None,
    }


def _assign_townships(result: gpd.GeoDataFrame, townships: gpd.GeoDataFrame | None) -> None:
    """Set township_code/name to the township each row overlaps most (in place)."""
    codes: list[str | None] = [None] * len(result)
    names: list[str | None] = [None] * len(result)
    if townships is not None and len(townships) and len(result):
        tindex = townships.sindex
        for k, geom in enumerate(result.geometry):
            best, best_area = None, 0.0
            for j in tindex.query(geom, predicate="intersects"):
                ov = _inter_area(geom, townships.geometry.iat[int(j)])
                if ov > best_area:
                    best, best_area = int(j), ov
            if best is not None:
                codes[k] = townships["township_code"].iat[best]
                names[k] = townships["township_name"].iat[best]
    result["township_code"] = codes
    result["township_name"] = names

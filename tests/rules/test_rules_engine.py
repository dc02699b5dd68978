"""Every rule on hand-made geometries, in GK zone 38 and in EPSG:4490, with tolerance boundaries."""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import pandas as pd
import pytest

from cspon_rs.errors import CRSError, SchemaError
from cspon_rs.geo.crs import SQM_PER_MU
from cspon_rs.rules.config import RulesConfig
from cspon_rs.rules.engine import WARNING_COLUMNS, classify, priority_score

T1 = "2025-03-01"
T2 = "2025-09-01"
Scenario = Any


def _control(grid, crs: str, **geoms) -> gpd.GeoDataFrame:  # type: ignore[no-untyped-def]
    kinds = list(geoms)
    return gpd.GeoDataFrame(
        {"kind": kinds, "county_code": ["510000"] * len(kinds), "version": ["v1"] * len(kinds),
         "valid_from": [None] * len(kinds)},
        geometry=[geoms[k] for k in kinds], crs=grid.crs,
    ).to_crs(crs)


def _one(result: gpd.GeoDataFrame, key: str) -> dict:  # type: ignore[type-arg]
    rows = result[result["source_key"] == key]
    assert len(rows) == 1, result[["source_key", "category"]]
    return rows.iloc[0].to_dict()


def test_fully_covered_is_legal(scenario: Scenario) -> None:
    g = scenario.grid
    patches = scenario.patches([g.rect(0, 0, 100, 100)])
    permits = scenario.permits([{"permit_no": "P1", "approved_on": "2024-01-10"}], [g.rect(-10, -10, 120, 120)])
    result = classify(patches, permits, None, t1=T1, t2=T2)
    row = _one(result, "p0001")
    assert row["category"] == "none" and not row["is_warning"]
    assert row["priority"] == 0.0 and pd.isna(row["rank"])
    assert row["area_m2"] == pytest.approx(10000, abs=0.5)
    assert row["permits"][0]["permit_no"] == "P1" and row["permits"][0]["share"] == pytest.approx(1.0, abs=1e-4)
    assert result.crs == patches.crs
    assert list(result.columns) == [*WARNING_COLUMNS, "geometry"]


@pytest.mark.parametrize(("uncovered", "expected"), [(495.0, "none"), (505.0, "exceeding_approval")])
def test_coverage_tolerance_boundary(scenario: Scenario, uncovered: float, expected: str) -> None:
    """Tolerance = max(5 % of 10 000 m², 50 m²) = 500 m² of uncovered area."""
    g = scenario.grid
    patches = scenario.patches([g.rect(0, 0, 100, 100)])
    strip = uncovered / 100.0  # metres of the patch left uncovered on its east side
    permits = scenario.permits([{"permit_no": "P1", "approved_on": "2024-01-10"}],
                               [g.rect(-10, -10, 110 - strip, 120)])
    row = _one(classify(patches, permits, None, t1=T1, t2=T2), "p0001")
    assert row["category"] == expected
    if expected == "exceeding_approval":
        assert row["excess_m2"] == pytest.approx(uncovered, abs=0.5)
        assert row["excess_mu"] == pytest.approx(uncovered / SQM_PER_MU, abs=1e-3)
        assert "P1" in row["reason_en"] and "超出批准范围" in row["reason_zh"]
        assert row["covered_m2"] == pytest.approx(10000 - uncovered, abs=0.5)


def test_small_patch_uses_absolute_tolerance(scenario: Scenario) -> None:
    """For a 20x20 m patch 5 % is 20 m², so the 50 m² floor applies: 45 m² uncovered is legal, 55 is not."""
    g = scenario.grid
    patches = scenario.patches([g.rect(0, 0, 20, 20), g.rect(1000, 0, 20, 20)])
    permits = scenario.permits(
        [{"permit_no": "A", "approved_on": "2024-01-01"}, {"permit_no": "B", "approved_on": "2024-01-01"}],
        [g.rect(-5, -5, 25 - 45 / 20, 30), g.rect(995, -5, 25 - 55 / 20, 30)],
    )
    result = classify(patches, permits, None, t1=T1, t2=T2)
    assert _one(result, "p0001")["category"] == "none"
    assert _one(result, "p0002")["category"] == "exceeding_approval"


def test_approved_between_t1_and_t2_is_building_while_pending(scenario: Scenario) -> None:
    g = scenario.grid
    patches = scenario.patches([g.rect(0, 0, 100, 100)])
    permits = scenario.permits([{"permit_no": "P9", "approved_on": "2025-05-20"}], [g.rect(-10, -10, 120, 120)])
    row = _one(classify(patches, permits, None, t1=T1, t2=T2), "p0001")
    assert row["category"] == "building_while_pending" and row["category_zh"] == "边批边建"
    assert "P9" in row["reason_en"] and "2025-05-20" in row["reason_en"]


def test_pending_permit_is_building_while_pending(scenario: Scenario) -> None:
    g = scenario.grid
    patches = scenario.patches([g.rect(0, 0, 100, 100)])
    permits = scenario.permits([{"permit_no": "P-pend", "approved_on": None, "status": "待批"}],
                               [g.rect(-10, -10, 120, 120)])
    row = _one(classify(patches, permits, None, t1=T1, t2=T2), "p0001")
    assert row["category"] == "building_while_pending"
    assert row["permits"][0]["role"] == "pending" and "still pending" in row["reason_en"]
    assert "审批中" in row["reason_zh"]


def test_permit_approved_after_t2_is_confirmed_late(scenario: Scenario) -> None:
    g = scenario.grid
    patches = scenario.patches([g.rect(0, 0, 100, 100)])
    permits = scenario.permits([{"permit_no": "LATE-1", "approved_on": "2025-12-01"}], [g.rect(-10, -10, 120, 120)])
    row = _one(classify(patches, permits, None, t1=T1, t2=T2), "p0001")
    assert row["category"] == "built_before_approval"
    assert "confirmed late: permit LATE-1 approved on 2025-12-01 after t2" in row["reason_en"]
    assert "确认迟批" in row["reason_zh"]


def test_no_permit_is_built_before_approval(scenario: Scenario) -> None:
    g = scenario.grid
    patches = scenario.patches([g.rect(0, 0, 100, 100)])
    permits = scenario.permits([{"permit_no": "FAR", "approved_on": "2025-01-01"}], [g.rect(5000, 0, 50, 50)])
    row = _one(classify(patches, permits, None, t1=T1, t2=T2), "p0001")
    assert row["category"] == "built_before_approval" and row["permits"] == []
    assert row["is_warning"] and row["rank"] == 1


def test_revoked_and_expired_permits_do_not_cover(scenario: Scenario) -> None:
    g = scenario.grid
    patches = scenario.patches([g.rect(0, 0, 100, 100), g.rect(1000, 0, 100, 100), g.rect(2000, 0, 100, 100)])
    permits = scenario.permits(
        [
            {"permit_no": "REV", "approved_on": "2024-01-01", "status": "撤销"},
            {"permit_no": "EXP", "approved_on": "2020-01-01", "expires_on": "2024-12-31", "status": "已批"},
            # marked expired today, but its expiry is after t2: it was valid at t2
            {"permit_no": "EXP-LATER", "approved_on": "2020-01-01", "expires_on": "2026-01-01", "status": "过期"},
        ],
        [g.rect(-10, -10, 120, 120), g.rect(990, -10, 120, 120), g.rect(1990, -10, 120, 120)],
    )
    result = classify(patches, permits, None, t1=T1, t2=T2, config=RulesConfig(built_elsewhere_max_distance_m=0))
    rev, exp, later = (_one(result, k) for k in ("p0001", "p0002", "p0003"))
    assert rev["category"] == "built_before_approval" and "REV was revoked" in rev["reason_en"]
    assert exp["category"] == "built_before_approval" and "expired on 2024-12-31" in exp["reason_en"]
    assert later["category"] == "none"


@pytest.mark.parametrize(("distance", "expected"), [(300.0, "built_elsewhere"), (700.0, "built_before_approval")])
def test_built_elsewhere_within_distance(scenario: Scenario, distance: float, expected: str) -> None:
    g = scenario.grid
    patches = scenario.patches([g.rect(0, 0, 100, 100)])
    permits = scenario.permits(
        [{"permit_no": "MOVED", "approved_on": "2024-06-01", "project": "仓储中心", "applicant": "某公司"}],
        [g.rect(100 + distance, 0, 100, 100)],
    )
    row = _one(classify(patches, permits, None, t1=T1, t2=T2), "p0001")  # default max distance 500 m
    assert row["category"] == expected
    if expected == "built_elsewhere":
        assert row["permits"][0]["permit_no"] == "MOVED"
        assert row["permits"][0]["distance_m"] == pytest.approx(distance, abs=0.5)
        assert "MOVED" in row["reason_en"] and "仓储中心" in row["reason_zh"]


def test_built_elsewhere_needs_permit_without_change_and_is_one_to_one(scenario: Scenario) -> None:
    g = scenario.grid
    # p1, p2 unpermitted near the idle permit IDLE; p3 lies inside permit BUSY (so BUSY has change).
    patches = scenario.patches([g.rect(0, 0, 100, 100), g.rect(0, 400, 100, 100), g.rect(-400, 0, 100, 100)])
    permits = scenario.permits(
        [{"permit_no": "IDLE", "approved_on": "2024-06-01"}, {"permit_no": "BUSY", "approved_on": "2024-06-01"}],
        [g.rect(150, 0, 80, 80), g.rect(-410, -10, 120, 120)],
    )
    result = classify(patches, permits, None, t1=T1, t2=T2)
    p1, p2 = _one(result, "p0001"), _one(result, "p0002")
    assert p1["category"] == "built_elsewhere" and p1["permits"][0]["permit_no"] == "IDLE"  # the closest
    assert p2["category"] == "built_before_approval"  # IDLE already explains p1; BUSY shows change
    assert _one(result, "p0003")["category"] == "none"


def test_approved_not_built(scenario: Scenario) -> None:
    g = scenario.grid
    patches = scenario.patches([g.rect(0, 0, 100, 100)])
    permits = scenario.permits(
        [
            {"permit_no": "OLD-IDLE", "approved_on": "2022-01-01", "permit_type": "农转用"},  # > 730 days
            {"permit_no": "YOUNG-IDLE", "approved_on": "2024-06-01"},  # < 730 days
            {"permit_no": "OLD-BUILT", "approved_on": "2022-01-01"},  # change inside
            {"permit_no": "OLD-TEMP", "approved_on": "2022-01-01", "permit_type": "临时用地"},  # type excluded
        ],
        [g.rect(3000, 0, 200, 200), g.rect(6000, 0, 200, 200), g.rect(-10, -10, 120, 120),
         g.rect(9000, 0, 100, 100)],
    )
    result = classify(patches, permits, None, t1=T1, t2=T2)
    nb = result[result["category"] == "approved_not_built"]
    assert list(nb["source_key"]) == ["permit:OLD-IDLE"]
    row = nb.iloc[0]
    assert row["area_m2"] == pytest.approx(40000, abs=1)
    assert row["geometry"].area == pytest.approx(nb.geometry.iloc[0].area)  # the permit polygon
    assert "批而不建" in row["reason_zh"] and "OLD-IDLE" in row["reason_en"]
    assert pd.isna(row["confidence"])
    # a footprint that does not contain the permit suppresses the judgement
    footprint = gpd.GeoSeries([scenario.grid.rect(-100, -100, 500, 500)], crs=scenario.grid.crs)
    result = classify(patches, permits, None, t1=T1, t2=T2, footprint=footprint)
    assert (result["category"] == "approved_not_built").sum() == 0


@pytest.mark.parametrize(("overlap", "flagged"), [(95.0, False), (105.0, True)])
def test_control_line_overlap_boundary(scenario: Scenario, overlap: float, flagged: bool) -> None:
    """Flag needs overlap > 50 m² AND > 1 % of the 10 000 m² patch, i.e. > 100 m²."""
    g = scenario.grid
    patches = scenario.patches([g.rect(0, 0, 100, 100)])
    permits = scenario.permits([], [])
    control = _control(g, scenario.crs, YJJBNT=g.rect(100 - overlap / 100, -50, 200, 200),
                       STBHHX=g.rect(-300, -300, 100, 100))
    row = _one(classify(patches, permits, control, t1=T1, t2=T2), "p0001")
    assert ("YJJBNT" in row["flags"]) is flagged
    assert "STBHHX" not in row["flags"]
    assert row["farmland_overlap_m2"] == pytest.approx(overlap, abs=0.5)
    if flagged:
        assert "永久基本农田" in row["reason_zh"] and "YJJBNT" in row["reason_en"]


def test_red_line_and_urban_boundary_flags(scenario: Scenario) -> None:
    g = scenario.grid
    patches = scenario.patches([g.rect(0, 0, 100, 100), g.rect(1000, 0, 100, 100), g.rect(2000, 0, 100, 100)])
    # permit of a facility-agricultural type makes p3 not urban-type
    permits = scenario.permits([{"permit_no": "FARM", "approved_on": "2024-01-01", "permit_type": "设施农用地"}],
                               [g.rect(1990, -10, 120, 120)])
    control = _control(
        g, scenario.crs,
        STBHHX=g.rect(-50, -50, 100, 200),  # half of p1
        CZKFBJ=g.rect(-500, -500, 1000, 1000),  # p1 inside; p2 and p3 entirely outside
    )
    result = classify(patches, permits, control, t1=T1, t2=T2)
    p1, p2, p3 = (_one(result, k) for k in ("p0001", "p0002", "p0003"))
    assert p1["flags"] == ["STBHHX"] and p1["redline_overlap_m2"] == pytest.approx(5000, abs=1)
    assert p2["flags"] == ["CZKFBJ"] and p2["outside_urban_m2"] == pytest.approx(10000, abs=1)
    assert p3["category"] == "none" and p3["flags"] == [] and not p3["is_warning"]
    # control-line violations rank first
    assert p1["rank"] == 1 and p2["rank"] == 2


@pytest.mark.parametrize(("outside", "flagged"), [(495.0, False), (505.0, True)])
def test_urban_boundary_tolerance(scenario: Scenario, outside: float, flagged: bool) -> None:
    """Outside part must exceed 50 m² and 5 % (500 m²) of the 10 000 m² patch."""
    g = scenario.grid
    patches = scenario.patches([g.rect(0, 0, 100, 100)])
    control = _control(g, scenario.crs, CZKFBJ=g.rect(-200, -200, 300 - outside / 100, 500))
    row = _one(classify(patches, scenario.permits([], []), control, t1=T1, t2=T2), "p0001")
    assert ("CZKFBJ" in row["flags"]) is flagged
    assert row["outside_urban_m2"] == pytest.approx(outside, abs=0.5)


def test_control_line_version_in_force_at_t2(grid) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from cspon_rs.rules.synthetic import patches_frame

    patches = patches_frame([grid.rect(0, 0, 100, 100)], grid.crs, t1=T1, t2=T2)
    control = gpd.GeoDataFrame(
        {"kind": ["YJJBNT", "YJJBNT"], "county_code": ["1", "1"], "version": ["2020", "2026"],
         "valid_from": [dt.date(2020, 1, 1), dt.date(2026, 1, 1)]},
        geometry=[grid.rect(-10, -10, 50, 120), grid.rect(-10, -10, 120, 120)], crs=grid.crs,
    )
    empty = gpd.GeoDataFrame({"permit_no": []}, geometry=[], crs=grid.crs)
    row = _one(classify(patches, empty, control, t1=T1, t2=T2), "p0001")
    assert row["farmland_overlap_m2"] == pytest.approx(4000, abs=1)  # the 2020 version, not 2026


def test_priority_formula_and_ranking(scenario: Scenario) -> None:
    g = scenario.grid
    patches = scenario.patches(
        [g.rect(0, 0, 100, 100), g.rect(1000, 0, 200, 200), g.rect(2000, 0, 200, 200)],
        prob_mean=[0.9, 0.6, 0.95],
    )
    control = _control(g, scenario.crs, YJJBNT=g.rect(-10, -10, 120, 120))
    result = classify(patches, scenario.permits([], []), control, t1=T1, t2=T2)
    ranked = result.sort_values("rank")
    assert list(ranked["source_key"]) == ["p0001", "p0003", "p0002"]  # control line, then confidence
    cfg = RulesConfig()
    p1 = _one(result, "p0001")
    assert p1["priority"] == pytest.approx(priority_score(["YJJBNT"], p1["area_mu"], 0.9, cfg))
    assert p1["priority"] > 300
    assert priority_score([], 10.0, 0.5, cfg) < priority_score([], 10.0, 0.6, cfg)
    # confidence outweighs area (the warning classifier ranks), area still breaks ties
    assert priority_score([], 20.0, 0.5, cfg) < priority_score([], 1.0, 0.9, cfg)
    assert priority_score([], 10.0, 0.5, cfg) < priority_score([], 20.0, 0.5, cfg)


def test_permits_in_another_crs_are_reprojected(grid) -> None:  # type: ignore[no-untyped-def]
    from cspon_rs.rules.synthetic import patches_frame, permits_frame

    patches = patches_frame([grid.rect(0, 0, 100, 100)], grid.crs, t1=T1, t2=T2, to_crs="EPSG:32649")
    permits = permits_frame([{"permit_no": "X", "approved_on": "2024-01-01"}], [grid.rect(-10, -10, 120, 120)],
                            grid.crs, to_crs="EPSG:4490")
    from cspon_rs.rules.inputs import _DEFAULT_STATUS  # noqa: F401 - mapping loaded

    canonical = permits.rename(columns={"PZWH": "permit_no"})
    canonical["permit_type"] = "land_supply"
    canonical["project"] = None
    canonical["applicant"] = None
    canonical["approved_on"] = [__import__("datetime").date(2024, 1, 1)]
    canonical["expires_on"] = [None]
    canonical["status"] = "approved"
    result = classify(patches, canonical, None, t1=T1, t2=T2)
    assert result.iloc[0]["category"] == "none"
    assert result.crs.to_epsg() == 32649


def test_townships_assigned_by_largest_overlap(scenario: Scenario) -> None:
    g = scenario.grid
    patches = scenario.patches([g.rect(0, 0, 100, 100)])
    towns = gpd.GeoDataFrame(
        {"township_code": ["510000001", "510000002"], "township_name": ["甲镇", "乙镇"]},
        geometry=[g.rect(-500, -500, 530, 1000), g.rect(30, -500, 500, 1000)], crs=g.crs,
    ).to_crs(scenario.crs)
    row = _one(classify(patches, scenario.permits([], []), None, t1=T1, t2=T2, townships=towns), "p0001")
    assert row["township_code"] == "510000002" and row["township_name"] == "乙镇"


def test_bad_arguments(grid) -> None:  # type: ignore[no-untyped-def]
    from cspon_rs.rules.synthetic import patches_frame

    patches = patches_frame([grid.rect(0, 0, 10, 10)], grid.crs)
    empty = gpd.GeoDataFrame({"permit_no": []}, geometry=[], crs=grid.crs)
    with pytest.raises(SchemaError, match="must be before"):
        classify(patches, empty, None, t1=T2, t2=T1)
    with pytest.raises(CRSError):
        classify(patches.set_crs(None, allow_override=True), empty, None, t1=T1, t2=T2)


def test_empty_inputs(grid) -> None:  # type: ignore[no-untyped-def]
    from cspon_rs.rules.synthetic import patches_frame

    patches = patches_frame([], grid.crs)
    empty = gpd.GeoDataFrame({"permit_no": []}, geometry=[], crs=grid.crs)
    result = classify(patches, empty, None, t1=T1, t2=T2)
    assert len(result) == 0 and list(result.columns) == [*WARNING_COLUMNS, "geometry"]


def test_gk_zone_without_prefix_same_result(grid) -> None:  # type: ignore[no-untyped-def]
    """EPSG:4547 (GK CM 114°E, no zone prefix) gives the same areas as EPSG:4526 (zone 38)."""
    from cspon_rs.rules.synthetic import patches_frame

    patch = patches_frame([grid.rect(0, 0, 100, 100)], grid.crs, t1=T1, t2=T2, to_crs="EPSG:4547")
    permit = gpd.GeoDataFrame(
        {"permit_no": ["P"], "permit_type": ["land_supply"], "project": [None], "applicant": [None],
         "approved_on": [__import__("datetime").date(2024, 1, 1)], "expires_on": [None], "status": ["approved"]},
        geometry=[grid.rect(-10, -10, 110 - 5.05, 120)], crs=grid.crs,
    )
    row = classify(patch, permit, None, t1=T1, t2=T2).iloc[0]
    assert row["category"] == "exceeding_approval" and row["excess_m2"] == pytest.approx(505, abs=0.5)


def test_invalid_geometry_given_directly_is_repaired(grid) -> None:  # type: ignore[no-untyped-def]
    from cspon_rs.rules.synthetic import patches_frame

    bowtie = grid.polygon([(0, 0), (100, 100), (100, 0), (0, 100), (0, 0)])
    empty = gpd.GeoDataFrame({"permit_no": []}, geometry=[], crs=grid.crs)
    row = classify(patches_frame([bowtie], grid.crs), empty, None, t1=T1, t2=T2).iloc[0]
    assert row["category"] == "built_before_approval" and row["area_m2"] == pytest.approx(5000, abs=0.5)

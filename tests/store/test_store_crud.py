"""Warning store on a real SQLite file (and PostGIS when CSPON_TEST_PG_URL is set)."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import geopandas as gpd
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from cspon_rs.errors import ConflictError, InvalidTransitionError, NotFoundError, SchemaError
from cspon_rs.rules.engine import classify
from cspon_rs.rules.synthetic import LocalFrame, patches_frame
from cspon_rs.store.crud import (
    assign_warning,
    change_status,
    count_warnings,
    false_change_negatives,
    get_warning,
    list_warnings,
    record_verification,
    save_warnings,
    statistics,
)
from cspon_rs.store.db import has_postgis_geom, init_db
from cspon_rs.store.models import Patch, Verification, WarningHistory, WarningRecord

GRID = LocalFrame((114.0, 22.3), 4526)
EMPTY_PERMITS = gpd.GeoDataFrame({"permit_no": []}, geometry=[], crs=GRID.crs)


def _run(rects: list[tuple[float, float, float, float]], t1: str = "2025-03-01", t2: str = "2025-09-01",
         ids: list[str] | None = None) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    patches = patches_frame([GRID.rect(*r) for r in rects], GRID.crs, t1=t1, t2=t2, ids=ids,
                            prob_mean=[0.5 + 0.01 * i for i in range(len(rects))])
    return classify(patches, EMPTY_PERMITS, None, t1=t1, t2=t2), patches


def _counts(session: Session) -> tuple[int, int, int]:
    return (
        session.scalar(select(func.count(WarningRecord.id))) or 0,
        session.scalar(select(func.count(WarningHistory.id))) or 0,
        session.scalar(select(func.count(Patch.id))) or 0,
    )


def test_schema_created_by_alembic(sessions: sessionmaker[Session], store_url: str) -> None:
    init_db(store_url)  # a second upgrade is a no-op
    with sessions() as session:
        heads = [r[0] for r in session.execute(text("SELECT version_num FROM alembic_version"))]
        assert len(heads) == 1
        assert session.scalar(select(func.count(WarningRecord.id))) == 0
        if session.get_bind().dialect.name == "postgresql":
            assert has_postgis_geom(session)


def test_save_is_idempotent_with_stable_ids(sessions: sessionmaker[Session]) -> None:
    warnings, patches = _run([(0, 0, 100, 100), (1000, 0, 300, 300), (3000, 0, 50, 50)])
    with sessions() as session:
        first = save_warnings(session, warnings, period="2025Q3", county_code="510000", patches=patches)
        counts = _counts(session)
        again = save_warnings(session, warnings, period="2025Q3", county_code="510000", patches=patches)
        assert _counts(session) == counts == (3, 3, 3)
    assert sorted(first.created) == ["510000-2025Q3-0001", "510000-2025Q3-0002", "510000-2025Q3-0003"]
    assert again.created == [] and sorted(again.unchanged) == sorted(first.created)
    assert first.ids == again.ids
    # sequence follows priority rank: the biggest patch is 0001
    assert first.ids["p0002"] == "510000-2025Q3-0001"
    with sessions() as session:
        record = get_warning(session, "510000-2025Q3-0001")
        assert record.category == "built_before_approval" and record.status == "new" and record.version == 1
        assert record.area_m2 == pytest.approx(90000, abs=1)
        assert record.reasons[0]["code"] == "no_approval" and record.rule_set_version
        assert -180 < record.minx < record.maxx < 180  # stored in EPSG:4326
        patch = session.scalars(select(Patch).where(Patch.patch_id == "p0002")).one()
        assert patch.warning_id == "510000-2025Q3-0001" and patch.scene_before == "before.tif"


def test_rerun_with_shifted_patch_ids_matches_by_geometry(sessions: sessionmaker[Session]) -> None:
    rects = [(0, 0, 100, 100), (1000, 0, 300, 300), (3000, 0, 50, 50)]
    first_run, _ = _run(rects)
    # a re-run: the same places under shifted positional ids, slightly different outlines, plus a new
    # patch that now carries the id "p0001"
    second_run, _ = _run([(3001, 0, 50, 50), (0, 0, 100, 98), (1000, 0, 300, 300), (7000, 0, 80, 80)],
                         ids=["p0002", "p0003", "p0004", "p0001"])
    with sessions() as session:
        first = save_warnings(session, first_run, period="2025Q3", county_code="510000")
        second = save_warnings(session, second_run, period="2025Q3", county_code="510000")
        assert second.ids["p0003"] == first.ids["p0001"] and second.ids["p0002"] == first.ids["p0003"]
        assert second.ids["p0004"] == first.ids["p0002"]
        assert len(second.created) == 1 and second.ids["p0001"] == second.created[0] == "510000-2025Q3-0004"
        assert get_warning(session, second.created[0]).source_key == "p0001#2"
        assert count_warnings(session, period="2025Q3") == 4
        third = save_warnings(session, second_run, period="2025Q3", county_code="510000")
        assert third.created == [] and third.ids == second.ids


def test_cross_period_merge_and_link(sessions: sessionmaker[Session]) -> None:
    q1, _ = _run([(0, 0, 100, 100), (1000, 0, 100, 100)])
    # Q2: a patch covering 80 % of the first Q1 warning (merge), one touching 20 % of the second (link)
    q2, _ = _run([(20, 0, 100, 100), (1080, 0, 100, 100), (5000, 0, 100, 100)],
                 t1="2025-09-01", t2="2025-12-01", ids=["a", "b", "c"])
    with sessions() as session:
        r1 = save_warnings(session, q1, period="2025Q3", county_code="510000")
        r2 = save_warnings(session, q2, period="2025Q4", county_code="510000")
        first_q1 = r1.ids["p0001"]
        assert r2.merged == {"a": first_q1}
        assert len(r2.created) == 2
        linked = get_warning(session, r2.ids["b"])
        assert linked.linked_ids == [r1.ids["p0002"]]
        assert get_warning(session, r2.ids["c"]).linked_ids == []
        merged = get_warning(session, first_q1)
        assert merged.seen_periods == ["2025Q4"]
        assert [h.event for h in merged.history] == ["created", "seen_again"]
        counts = _counts(session)
        r3 = save_warnings(session, q2, period="2025Q4", county_code="510000")  # re-run Q4
        assert _counts(session) == counts
        assert r3.ids == r2.ids and r3.created == []
        assert len(list_warnings(session, period="2025Q4", limit=None)) == 2


def test_lifecycle_and_invalid_transitions(sessions: sessionmaker[Session]) -> None:
    warnings, _ = _run([(0, 0, 100, 100)])
    with sessions() as session:
        wid = save_warnings(session, warnings, period="2025Q3", county_code="510000").ids["p0001"]
        with pytest.raises(InvalidTransitionError, match="'new' to 'closed'"):
            change_status(session, wid, "closed")
        with pytest.raises(InvalidTransitionError):
            record_verification(session, wid, result="illegal", expected_version=1)
        record = assign_warning(session, wid, team="巡查一队", by="lead")
        assert record.status == "assigned" and record.version == 2
        with pytest.raises(InvalidTransitionError, match="record_verification"):
            change_status(session, wid, "verified")  # type: ignore[arg-type]
        verification = record_verification(session, wid, result="illegal", expected_version=2, by="张三",
                                           reason="无批文", actual_use="厂房", lon=114.0, lat=22.3)
        assert verification.id is not None
        record = get_warning(session, wid)
        assert record.status == "verified" and record.verification_result == "illegal"
        change_status(session, wid, "closed", by="lead", why="立案")
        with pytest.raises(InvalidTransitionError):
            change_status(session, wid, "assigned")
        record = get_warning(session, wid)
        assert [(h.from_status, h.to_status) for h in record.history] == [
            (None, "new"), ("new", "assigned"), ("assigned", "verified"), ("verified", "closed")]
        with pytest.raises(NotFoundError):
            get_warning(session, "510000-2025Q3-9999")
        with pytest.raises(SchemaError):
            record_verification(session, wid, result="maybe", expected_version=4)  # type: ignore[arg-type]


def test_stale_version_is_a_conflict(sessions: sessionmaker[Session]) -> None:
    warnings, _ = _run([(0, 0, 100, 100)])
    with sessions() as session:
        wid = save_warnings(session, warnings, period="2025Q3", county_code="510000").ids["p0001"]
        assign_warning(session, wid, team="A")
        with pytest.raises(ConflictError, match="version"):
            record_verification(session, wid, result="legal", expected_version=1)
        assert get_warning(session, wid).status == "assigned"


def test_concurrent_verifications_one_wins(sessions: sessionmaker[Session]) -> None:
    warnings, _ = _run([(0, 0, 100, 100)])
    with sessions() as session:
        wid = save_warnings(session, warnings, period="2025Q3", county_code="510000").ids["p0001"]
        version = assign_warning(session, wid, team="A").version
    barrier = threading.Barrier(2)
    outcomes: list[Any] = []
    lock = threading.Lock()

    def verify(result: str) -> None:
        with sessions() as session:
            barrier.wait()
            try:
                record_verification(session, wid, result=result, expected_version=version,  # type: ignore[arg-type]
                                    by=result)
                outcome: Any = "ok"
            except ConflictError as exc:
                outcome = exc
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=verify, args=(r,)) for r in ("illegal", "false_change")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(type(o).__name__ for o in outcomes) == ["ConflictError", "str"]
    with sessions() as session:
        assert session.scalar(select(func.count(Verification.id))) == 1
        record = get_warning(session, wid)
        assert record.status == "verified" and record.version == version + 1


def test_filters_statistics_and_negatives(sessions: sessionmaker[Session]) -> None:
    l_shape = GRID.polygon([(0, 0), (300, 0), (300, 50), (50, 50), (50, 300), (0, 300)])
    patches = patches_frame([l_shape, GRID.rect(2000, 0, 100, 100)], GRID.crs, prob_mean=[0.9, 0.7])
    towns = gpd.GeoDataFrame({"township_code": ["510000001", "510000002"], "township_name": ["甲", "乙"]},
                             geometry=[GRID.rect(-100, -100, 1000, 1000), GRID.rect(1500, -100, 1000, 1000)],
                             crs=GRID.crs)
    warnings = classify(patches, EMPTY_PERMITS, None, t1="2025-03-01", t2="2025-09-01", townships=towns)
    with sessions() as session:
        ids = save_warnings(session, warnings, period="2025Q3", county_code="510000", patches=patches).ids
        assert count_warnings(session, period="2025Q3") == 2
        assert [w.id for w in list_warnings(session, township_code="510000002")] == [ids["p0002"]]
        assert list_warnings(session, category="exceeding_approval") == []
        assert len(list_warnings(session, min_priority=0.1, status="new", only_warnings=True)) == 2
        assert len(list_warnings(session, limit=1)) == 1 and len(list_warnings(session, limit=1, offset=1)) == 1
        # a box inside the L's bounding box but off its arms: exact intersection says no
        inner = gpd.GeoSeries([GRID.rect(150, 150, 100, 100)], crs=GRID.crs).to_crs(4326).total_bounds
        assert list_warnings(session, bbox=tuple(inner)) == []
        arm = gpd.GeoSeries([GRID.rect(200, 10, 20, 20)], crs=GRID.crs).to_crs(4326).total_bounds
        assert [w.id for w in list_warnings(session, bbox=tuple(arm))] == [ids["p0001"]]
        # the SQL COUNT agrees with the listing for every kind of filter (bbox: PostGIS or exact in Python)
        for combo in ({"township_code": "510000002"}, {"category": "exceeding_approval"},
                      {"min_priority": 0.1, "status": "new", "only_warnings": True},
                      {"bbox": tuple(inner)}, {"bbox": tuple(arm)}):
            assert count_warnings(session, **combo) == len(list_warnings(session, limit=None, **combo)), combo
        stats = statistics(session, by=("period", "township_name"))
        assert {(s["township_name"], s["count"]) for s in stats} == {("甲", 1), ("乙", 1)}
        total = sum(s["area_m2"] for s in statistics(session, by=("category",)))
        assert total == pytest.approx(l_shape.area + 10000, abs=1)
        wid = ids["p0002"]
        assign_warning(session, wid, team="B")
        record_verification(session, wid, result="false_change", expected_version=2, reason="云影")
        negatives = false_change_negatives(session)
        assert list(negatives["warning_id"]) == [wid] and negatives.crs.to_epsg() == 4326
        assert negatives["scene_after"].iloc[0] == "after.tif" and negatives["reason"].iloc[0] == "云影"
        if has_postgis_geom(session):
            area = session.scalar(text("SELECT ST_Area(geom::geography) FROM warnings WHERE id = :i"),
                                  {"i": wid})
            assert area == pytest.approx(10000, rel=0.01)


def test_failed_save_writes_nothing(sessions: sessionmaker[Session]) -> None:
    warnings, _ = _run([(0, 0, 100, 100), (1000, 0, 100, 100)])
    broken = warnings.copy()
    broken.loc[1, "geometry"] = None  # the second row cannot be stored
    with sessions() as session:
        with pytest.raises(AttributeError):
            save_warnings(session, broken, period="2025Q3", county_code="510000")
        assert _counts(session) == (0, 0, 0)
        with pytest.raises(SchemaError):
            save_warnings(session, warnings, period="2025 Q3!", county_code="510000")


def test_identical_assign_is_a_no_op(sessions: sessionmaker[Session]) -> None:
    warnings, _ = _run([(0, 0, 100, 100)])
    with sessions() as session:
        wid = save_warnings(session, warnings, period="2025Q3", county_code="510000").ids["p0001"]
        due = dt.date(2026, 1, 15)
        first = assign_warning(session, wid, team="A", due_date=due, by="lead")
        version, events = first.version, len(get_warning(session, wid).history)
        for _ in range(3):  # the same assignment again: nothing changes, nothing is recorded
            again = assign_warning(session, wid, team="A", due_date=due, by="lead")
            assert again.version == version and len(get_warning(session, wid).history) == events
        moved = assign_warning(session, wid, team="B", due_date=due, by="lead")
        assert moved.version == version + 1 and len(get_warning(session, wid).history) == events + 1
        # every change of the row is one history event (the version started at 1 with "created")
        assert get_warning(session, wid).version == len(get_warning(session, wid).history)


def test_timestamps_are_read_back_aware_utc(sessions: sessionmaker[Session]) -> None:
    warnings, _ = _run([(0, 0, 100, 100)])
    with sessions() as session:
        wid = save_warnings(session, warnings, period="2025Q3", county_code="510000").ids["p0001"]
    with sessions() as session:  # a fresh session: values come from the database, not the identity map
        record = get_warning(session, wid)
        stamps = [record.created_at, record.updated_at, *(h.at for h in record.history)]
        assert all(s.tzinfo is not None and s.utcoffset() == dt.timedelta(0) for s in stamps), stamps

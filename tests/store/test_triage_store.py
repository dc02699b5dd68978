"""Desk triage in the store (SQLite, and PostGIS with CSPON_TEST_PG_URL): decisions move warnings through the
status workflow with history, can be undone, a second reviewer is refused with the first decision, bulk
selections count exactly what they change, field results override desk labels, exports name the new statuses."""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import pytest
from shapely.geometry import box
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cspon_rs.errors import InvalidTransitionError, SchemaError
from cspon_rs.exports.lists import list_frame, summary_tables
from cspon_rs.store.crud import (
    assign_warning,
    get_warning,
    list_warnings,
    record_verification,
    save_warnings,
    warnings_frame,
)
from cspon_rs.store.models import TriageDecision
from cspon_rs.store.triage import (
    TriageConflictError,
    bulk_decide,
    decide,
    desk_labels,
    triage_counters,
    triage_queue,
    undo_decision,
)

COUNTY, PERIOD = "810000", "2018Q1"
CONFIDENCE = [0.95, 0.35, 0.8, 0.2, 0.6, 0.5, None, 0.3]


def _seed(session: Session, county: str = COUNTY) -> list[str]:
    """Eight warnings along a row, with the confidences above, areas growing, two townships."""
    rows: list[dict[str, Any]] = []
    for i, conf in enumerate(CONFIDENCE):
        x = 114.10 + 0.003 * i
        rows.append({
            "source_key": f"p{i:03d}", "patch_id": f"p{i:03d}", "category": "未批先建", "is_warning": True,
            "flags": [], "area_m2": 500.0 + 100 * i, "priority": 10.0 + i, "rank": i + 1, "confidence": conf,
            "township_code": f"{county}{i % 2:03d}", "township_name": ["乙镇", "甲镇"][i % 2],
            "reasons": [], "permits": [], "rule_set_version": "test", "t1": "2016-09-27", "t2": "2018-03-23",
            "geometry": box(x, 22.30, x + 0.001, 22.301),
        })
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=4326)
    result = save_warnings(session, frame, period=PERIOD, county_code=county)
    return [result.ids[r["source_key"]] for r in rows]


def test_decide_undo_history_and_queue_order(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        ids = _seed(session)
        queue, total = triage_queue(session, county_code=COUNTY, period=PERIOD)
        assert total == 8
        # highest confidence first, the warning without a confidence last
        assert [w.id for w in queue] == [ids[i] for i in (0, 2, 4, 5, 1, 7, 3, 6)]
        by_area, _ = triage_queue(session, county_code=COUNTY, period=PERIOD, order="area")
        assert [w.id for w in by_area] == list(reversed(ids))
        by_town, _ = triage_queue(session, county_code=COUNTY, period=PERIOD, order="township")
        assert [w.township_name for w in by_town] == ["乙镇"] * 4 + ["甲镇"] * 4
        assert [w.id for w in by_town][:4] == [ids[i] for i in (0, 2, 4, 6)]
        page, total = triage_queue(session, county_code=COUNTY, period=PERIOD, limit=3, offset=3)
        assert total == 8 and [w.id for w in page] == [ids[i] for i in (5, 1, 7)]

        w0 = get_warning(session, ids[0])
        row = decide(session, ids[0], "illegal", by="li", expected_version=w0.version)
        assert (row.source, row.decision, row.from_status, row.to_status) == ("desk", "illegal", "new", "to_field")
        assert row.by == "li" and row.at is not None and row.confidence == 0.95
        w0 = get_warning(session, ids[0])
        assert w0.status == "to_field" and w0.version == 2
        assert [(h.event, h.from_status, h.to_status) for h in w0.history][-1] == ("triage", "new", "to_field")
        assert w0.history[-1].details["decision"] == "illegal"
        decide(session, ids[2], "false_alarm", by="li")
        assert get_warning(session, ids[2]).status == "desk_excluded"
        queue, total = triage_queue(session, county_code=COUNTY, period=PERIOD)
        assert total == 6 and ids[0] not in [w.id for w in queue]

        # the same reviewer changes their mind: one active decision, the old one kept as undone
        changed = decide(session, ids[2], "legal", by="li")
        assert get_warning(session, ids[2]).status == "desk_excluded"
        rows = list(session.scalars(select(TriageDecision).where(TriageDecision.warning_id == ids[2])))
        assert [(r.decision, r.undone_at is not None) for r in rows] == [("false_alarm", True), ("legal", False)]
        assert changed.id == rows[1].id
        decide(session, ids[2], "unsure", by="li")
        assert get_warning(session, ids[2]).status == "to_field"

        # undo: back to new, history says so, it is in the queue again
        undone = undo_decision(session, ids[0], by="li")
        assert undone.undone_by == "li" and undone.undone_at is not None
        w0 = get_warning(session, ids[0])
        assert w0.status == "new" and w0.history[-1].event == "triage_undone" and w0.version == 3
        assert ids[0] in [w.id for w in triage_queue(session, county_code=COUNTY, period=PERIOD)[0]]
        with pytest.raises(InvalidTransitionError, match="no desk decision"):
            undo_decision(session, ids[0], by="li")
        with pytest.raises(SchemaError, match="desk decision"):
            decide(session, ids[0], "maybe", by="li")  # type: ignore[arg-type]

        c = triage_counters(session, county_code=COUNTY, period=PERIOD, by="li")
        assert (c.total, c.done, c.left, c.mine) == (8, 1, 7, 1)
        assert c.by_decision == {"illegal": 0, "legal": 0, "false_alarm": 0, "unsure": 1}
        assert c.mine_last_hour == 4 and c.per_hour == 240.0  # 4 decision rows within the first minute


def test_second_reviewer_is_refused_with_the_first_decision(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        ids = _seed(session)
        seen = get_warning(session, ids[1]).version  # both reviewers opened version 1
        decide(session, ids[1], "false_alarm", by="li", expected_version=seen)
        with pytest.raises(TriageConflictError, match="already triaged: false_alarm .* by li") as err:
            decide(session, ids[1], "illegal", by="wang", expected_version=seen)
        assert err.value.first is not None and err.value.first.by == "li"
        assert err.value.first.decision == "false_alarm"
        with pytest.raises(TriageConflictError, match="only they can undo"):
            undo_decision(session, ids[1], by="wang")
        w = get_warning(session, ids[1])
        assert w.status == "desk_excluded" and w.version == 2  # nothing overwritten
        assert undo_decision(session, ids[1], by="admin", admin=True).decision == "false_alarm"
        # a stale version without any decision: refused too
        with pytest.raises(TriageConflictError, match="version"):
            decide(session, ids[1], "legal", by="wang", expected_version=seen)
        # warnings already in the field workflow are not triaged
        assign_warning(session, ids[3], team="t1")
        with pytest.raises(InvalidTransitionError, match="only new"):
            decide(session, ids[3], "legal", by="li")


def test_bulk_by_band_box_and_ids_counts_what_it_changes(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        ids = _seed(session)
        decide(session, ids[5], "illegal", by="li")  # 0.5: decided already, never changed by a bulk
        dry = bulk_decide(session, county_code=COUNTY, period=PERIOD, decision="false_alarm", by="wang",
                          min_confidence=0.2, max_confidence=0.5, dry_run=True)
        assert dry.dry_run and dry.count == 3 and dry.ids == [ids[1], ids[7], ids[3]]
        assert get_warning(session, ids[1]).status == "new"  # a dry run writes nothing
        done = bulk_decide(session, county_code=COUNTY, period=PERIOD, decision="false_alarm", by="wang",
                           min_confidence=0.2, max_confidence=0.5)
        assert done.count == 3 and done.ids == dry.ids
        assert {get_warning(session, i).status for i in dry.ids} == {"desk_excluded"}
        assert get_warning(session, ids[5]).status == "to_field"
        history = get_warning(session, ids[1]).history[-1]
        assert history.event == "triage" and "bulk" in (history.why or "") and "confidence 0.20-0.50" in history.why
        # a box over warnings 0 and 2 (warning 1 between them is decided already)
        area = (114.1000, 22.2995, 114.1065, 22.3015)
        assert bulk_decide(session, county_code=COUNTY, period=PERIOD, decision="legal", by="wang", bbox=area,
                           dry_run=True).ids == [ids[0], ids[2]]
        # ids: decided ones are skipped, not changed
        res = bulk_decide(session, county_code=COUNTY, period=PERIOD, decision="unsure", by="wang",
                          ids=[ids[4], ids[5], "nope"])
        assert res.count == 1 and res.ids == [ids[4]] and res.skipped == sorted([ids[5], "nope"])
        with pytest.raises(SchemaError, match="needs a selection"):
            bulk_decide(session, county_code=COUNTY, period=PERIOD, decision="legal", by="wang")
        with pytest.raises(SchemaError, match="between 0 and 1"):
            bulk_decide(session, county_code=COUNTY, period=PERIOD, decision="legal", by="wang", min_confidence=2.0)
        # another county's warnings are never selected
        other = _seed(session, county="120101")
        res = bulk_decide(session, county_code=COUNTY, period=PERIOD, decision="legal", by="wang", ids=other)
        assert res.count == 0 and {get_warning(session, i).status for i in other} == {"new"}
        c = triage_counters(session, county_code=COUNTY, period=PERIOD, by="wang")
        assert (c.done, c.left, c.mine) == (5, 3, 4)


def test_field_result_overrides_desk_and_exports_name_new_statuses(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        ids = _seed(session)
        decide(session, ids[0], "false_alarm", by="li")   # desk says false alarm ...
        decide(session, ids[1], "illegal", by="li")
        decide(session, ids[2], "unsure", by="li")        # not a label
        decide(session, ids[3], "legal", by="li")
        labels = {r.id: d.decision for r, d, _ in desk_labels(session, county_code=COUNTY)}
        assert labels == {ids[0]: "false_alarm", ids[1]: "illegal", ids[3]: "legal"}
        # ... the bureau sends it to the field anyway, and the field finds illegal construction
        w = assign_warning(session, ids[0], team="t1")
        assert w.history[-1].from_status == "desk_excluded"
        with pytest.raises(InvalidTransitionError, match="un-assign"):
            undo_decision(session, ids[0], by="li")
        record_verification(session, ids[0], result="illegal", expected_version=w.version, by="t1")
        assert get_warning(session, ids[0]).verification_result == "illegal"
        labels = {r.id: d.decision for r, d, _ in desk_labels(session, county_code=COUNTY)}
        assert ids[0] not in labels and set(labels) == {ids[1], ids[3]}

        records = list_warnings(session, county_code=COUNTY, period=PERIOD, limit=None)
        table = list_frame(warnings_frame(records)).set_index("warning_id")
        assert table.loc[ids[1], "status"] == "待外业" and table.loc[ids[3], "status"] == "内业排除"
        assert table.loc[ids[0], "status"] == "已核查"
        status = summary_tables(warnings_frame(records))["status"].set_index("status")
        assert status.loc["to_field", "count"] == 2 and status.loc["desk_excluded", "count"] == 1
        assert status.loc["to_field", "status_zh"] == "待外业"

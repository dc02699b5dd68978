"""Revision 0006 (desk triage) upgrades a store made at revision 0005 with warnings, history and a verification
in it: every row is kept, and the upgraded store takes desk decisions, undoes them and exports them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.orm import sessionmaker
from test_closed_loop_migration import _seed_0002, _upgrade

from cspon_rs.store.crud import get_warning
from cspon_rs.store.db import init_db, make_engine
from cspon_rs.store.triage import decide, desk_labels, triage_queue, undo_decision

SNAPSHOT = ("SELECT id, status, version, verification_result, area_m2, geometry_wkt FROM warnings ORDER BY id",
            "SELECT id, warning_id, event, to_status, why FROM warning_history ORDER BY id",
            "SELECT id, warning_id, result, reason, by FROM verifications ORDER BY id",
            "SELECT id, period, patch_id, warning_id, scene_before FROM patches ORDER BY id")


def test_upgrade_from_0005_keeps_rows_and_takes_desk_decisions(store_url: str, tmp_path: Path) -> None:
    _upgrade(store_url, "0002_api")
    _seed_0002(store_url)
    _upgrade(store_url, "0005_field_capture")
    engine = make_engine(store_url)
    with engine.connect() as conn:
        before = [[tuple(r) for r in conn.execute(text(sql))] for sql in SNAPSHOT]
        assert "triage_decisions" not in inspect(conn).get_table_names()
    engine.dispose()
    assert before[0] and before[2]

    init_db(store_url)  # 0005 -> head, as open_store / serve / the CLI do on start

    engine = make_engine(store_url)
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    try:
        with engine.connect() as conn:
            assert [[tuple(r) for r in conn.execute(text(sql))] for sql in SNAPSHOT] == before
            assert conn.execute(text("SELECT count(*) FROM triage_decisions")).scalar() == 0
        with sessions() as session:
            queue, total = triage_queue(session, county_code="810000", period="2018Q1")
            assert total == 1 and queue[0].id == "810000-2018Q1-0002"  # the verified one is not triaged
            w = get_warning(session, "810000-2018Q1-0002")
            row = decide(session, w.id, "false_alarm", by="li", expected_version=w.version)
            assert row.detector == w.detector == "s2-rgbn-effl0-siamunet@2026.11.2" and row.source == "desk"
            assert get_warning(session, w.id).status == "desk_excluded"
            assert [r.id for r, _, _ in desk_labels(session, county_code="810000")] == [w.id]
            undo_decision(session, w.id, by="li")
            assert get_warning(session, w.id).status == "new"
    finally:
        engine.dispose()

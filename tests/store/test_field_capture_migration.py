"""Revision 0005 (field capture: accuracy, heading, fix time, device time, photo time) upgrades a store made at
revision 0004 with verifications and photos in it: every row is kept, the new columns are NULL for old rows
(their capture details stay in ``notes``), and new verifications store and read back the details."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import sessionmaker
from test_closed_loop_migration import NOW, _seed_0002, _upgrade

from cspon_rs.errors import SchemaError
from cspon_rs.store.api_models import Photo
from cspon_rs.store.crud import assign_warning, field_time, get_warning, record_verification
from cspon_rs.store.db import init_db, make_engine
from cspon_rs.store.models import Verification

PACKED = "云影\n[设备时间 device time 2026-01-05T08:00:00Z; 定位 position 114.100500,22.300500 ±12 m]"


def test_upgrade_from_0004_keeps_verifications_and_photos(store_url: str) -> None:
    _upgrade(store_url, "0002_api")
    _seed_0002(store_url)
    _upgrade(store_url, "0004_job_commits")
    engine = make_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE verifications SET notes = :n, lon = 114.1005, lat = 22.3005"), {"n": PACKED})
        vid = conn.execute(text("SELECT id FROM verifications")).scalar()
        conn.execute(text(
            "INSERT INTO api_photos (warning_id, verification_id, path, content_type, size, sha256, original_name, "
            "created_at) VALUES ('810000-2018Q1-0001', :vid, 'photos/x/a.jpg', 'image/jpeg', 1234, :sha, 'a.jpg', "
            ":now)"), {"vid": vid, "sha": "a" * 64, "now": NOW})
        before = [tuple(r) for r in conn.execute(text(
            "SELECT id, warning_id, result, reason, notes, lon, lat, by FROM verifications ORDER BY id"))]
    engine.dispose()

    init_db(store_url)  # 0004 -> head, as open_store / serve / the CLI do on start

    engine = make_engine(store_url)
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    try:
        with sessions() as session:
            after = [tuple(r) for r in session.execute(text(
                "SELECT id, warning_id, result, reason, notes, lon, lat, by FROM verifications ORDER BY id"))]
            assert after == before
            old = session.scalars(select(Verification)).one()
            assert old.notes == PACKED
            assert (old.position_accuracy_m, old.heading_deg, old.position_at, old.recorded_at) == (
                None, None, None, None)
            photo = session.scalars(select(Photo)).one()
            assert photo.verification_id == old.id and photo.sha256 == "a" * 64 and photo.taken_at is None

            # the upgraded store records the details and reads them back as aware UTC
            w2 = assign_warning(session, "810000-2018Q1-0002", team="t", expected_version=3)
            at = dt.datetime(2026, 5, 1, 9, 32, tzinfo=dt.timezone(dt.timedelta(hours=8)))
            record_verification(session, w2.id, result="illegal", expected_version=w2.version, by="t",
                                lon=114.1, lat=22.3, position_accuracy_m=8.0, heading_deg=90.0,
                                position_at=at - dt.timedelta(minutes=1), recorded_at=at)
        with sessions() as session:
            new = get_warning(session, "810000-2018Q1-0002").verifications[-1]
            assert new.position_accuracy_m == 8.0 and new.heading_deg == 90.0
            assert new.recorded_at == at and new.recorded_at.tzinfo is not None
            assert new.position_at == at - dt.timedelta(minutes=1)
    finally:
        engine.dispose()


def test_capture_values_are_checked(store_url: str) -> None:
    init_db(store_url)
    maker = sessionmaker(bind=make_engine(store_url))
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    assert field_time("recorded_at", now - dt.timedelta(days=1), now) == now - dt.timedelta(days=1)
    assert field_time("recorded_at", now + dt.timedelta(minutes=9), now) == now + dt.timedelta(minutes=9)
    for bad in (dt.datetime(2026, 5, 1, 9, 0), dt.datetime(1999, 12, 31, tzinfo=dt.UTC),
                now + dt.timedelta(minutes=11)):
        with pytest.raises(SchemaError, match="recorded_at"):
            field_time("recorded_at", bad, now)
    with maker() as session:
        for kwargs in ({"position_accuracy_m": -1.0}, {"heading_deg": 361.0}):
            with pytest.raises(SchemaError, match=next(iter(kwargs))):
                record_verification(session, "none", result="legal", expected_version=1, **kwargs)  # type: ignore[arg-type]
    maker.kw["bind"].dispose()

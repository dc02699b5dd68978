"""Revision 0008 (photo evidence: per-photo position, bearing, distance to the 图斑, flags; the check's GPS
track) upgrades a store made at revision 0005 with a verification and a photo in it: the rows are kept, the new
columns are NULL for them, and the upgraded store writes and reads the new columns."""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.orm import sessionmaker
from test_closed_loop_migration import NOW, _seed_0002, _upgrade

from cspon_rs.store.api_models import Photo
from cspon_rs.store.db import init_db, make_engine
from cspon_rs.store.models import Verification


def test_upgrade_from_0005_keeps_photos_and_adds_evidence_columns(store_url: str) -> None:
    _upgrade(store_url, "0002_api")
    _seed_0002(store_url)
    _upgrade(store_url, "0005_field_capture")
    engine = make_engine(store_url)
    with engine.begin() as conn:
        vid = conn.execute(text("SELECT id FROM verifications")).scalar()
        conn.execute(text(
            "INSERT INTO api_photos (warning_id, verification_id, path, content_type, size, sha256, original_name, "
            "created_at, taken_at) VALUES ('810000-2018Q1-0001', :vid, 'photos/x/a.jpg', 'image/jpeg', 1234, :sha, "
            "'a.jpg', :now, :now)"), {"vid": vid, "sha": "b" * 64, "now": NOW})
        before = [tuple(r) for r in conn.execute(text(
            "SELECT id, warning_id, verification_id, path, size, sha256, taken_at FROM api_photos"))]
        checks = [tuple(r) for r in conn.execute(text("SELECT id, result, notes, lon, lat FROM verifications"))]
    engine.dispose()

    init_db(store_url)  # 0005 -> head

    engine = make_engine(store_url)
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    try:
        with sessions() as session:
            assert [tuple(r) for r in session.execute(text(
                "SELECT id, warning_id, verification_id, path, size, sha256, taken_at FROM api_photos"))] == before
            assert [tuple(r) for r in session.execute(text(
                "SELECT id, result, notes, lon, lat FROM verifications"))] == checks
            photo = session.scalars(select(Photo)).one()
            assert (photo.lon, photo.lat, photo.bearing_deg, photo.distance_m, photo.flags) == (
                None, None, None, None, None)
            check = session.scalars(select(Verification)).one()
            assert check.track_json is None and check.has_track is False
            photo.lon, photo.lat, photo.position_source, photo.distance_m, photo.flags = (
                114.1, 22.3, "exif", 2012.5, "far")
            check.track_json = "[[114.1, 22.3, null]]"
            session.commit()
        with sessions() as session:
            photo = session.scalars(select(Photo)).one()
            assert (photo.lon, photo.position_source, photo.distance_m, photo.flags) == (114.1, "exif", 2012.5, "far")
            assert session.scalars(select(Verification)).one().has_track is True
    finally:
        engine.dispose()

"""Revision 0003 (scene identity, model version, model registry) upgrades a store made at revision 0002
with rows in it, without losing or changing any of them; the ORM and the migrations agree."""

from __future__ import annotations

import datetime as dt

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from cspon_rs.store.crud import (
    assign_warning,
    false_change_negatives,
    get_warning,
    list_warnings,
    record_verification,
)
from cspon_rs.store.db import MIGRATIONS_DIR, init_db, make_engine
from cspon_rs.store.labels import export_labels
from cspon_rs.store.models import ModelVersion, Patch, Verification, WarningHistory, WarningRecord

POLY = "POLYGON ((114.1 22.3, 114.101 22.3, 114.101 22.301, 114.1 22.301, 114.1 22.3))"
NOW = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)


def _upgrade(url: str, revision: str) -> None:
    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
    engine.dispose()


def _seed_0002(url: str) -> None:
    """Rows as the previous revision's code stored them: bare scene names, no checksums, a verification."""
    engine = make_engine(url)
    warning = {
        "period": "2018Q1", "county_code": "810000", "category": "built_before_approval", "is_warning": True,
        "flags": "[]", "area_m2": 12345.0, "area_mu": 18.5, "covered_m2": 0.0, "excess_m2": 0.0,
        "farmland_overlap_m2": 0.0, "redline_overlap_m2": 0.0, "outside_urban_m2": 0.0,
        "reasons": '[{"code": "no_permit", "zh": "无批文", "en": "no permit"}]', "permits": "[]",
        "priority": 9.5, "rank": 1, "confidence": 0.8, "status": "verified", "verification_result": "false_change",
        "rule_set_version": "2026.1", "t1": dt.date(2016, 9, 27), "t2": dt.date(2018, 3, 23),
        "geometry_wkt": POLY, "minx": 114.1, "miny": 22.3, "maxx": 114.101, "maxy": 22.301,
        "centroid_lon": 114.1005, "centroid_lat": 22.3005, "linked_ids": "[]", "seen_periods": "[]",
        "created_at": NOW, "updated_at": NOW, "version": 3,
    }
    with engine.begin() as conn:
        for seq, status in ((1, "verified"), (2, "new")):
            conn.execute(text(
                "INSERT INTO warnings (id, seq, source_key, patch_id, period, county_code, category, is_warning, "
                "flags, area_m2, area_mu, covered_m2, excess_m2, farmland_overlap_m2, redline_overlap_m2, "
                "outside_urban_m2, reasons, permits, priority, rank, confidence, status, verification_result, "
                "rule_set_version, t1, t2, geometry_wkt, minx, miny, maxx, maxy, centroid_lon, centroid_lat, "
                "linked_ids, seen_periods, created_at, updated_at, version) VALUES (:id, :seq, :sk, :sk, :period, "
                ":county_code, :category, :is_warning, :flags, :area_m2, :area_mu, :covered_m2, :excess_m2, "
                ":farmland_overlap_m2, :redline_overlap_m2, :outside_urban_m2, :reasons, :permits, :priority, "
                ":rank, :confidence, :status, :vr, :rule_set_version, :t1, :t2, :geometry_wkt, :minx, :miny, "
                ":maxx, :maxy, :centroid_lon, :centroid_lat, :linked_ids, :seen_periods, :created_at, "
                ":updated_at, :version)"),
                {**warning, "id": f"810000-2018Q1-000{seq}", "seq": seq, "sk": f"P00000{seq}", "status": status,
                 "vr": "false_change" if status == "verified" else None})
            conn.execute(text(
                "INSERT INTO patches (period, county_code, patch_id, warning_id, area_m2, prob_mean, prob_max, "
                "t1, t2, scene_before, scene_after, detector, geometry_wkt, created_at) VALUES ('2018Q1', "
                "'810000', :pid, :wid, 12345.0, 0.7, 0.9, :t1, :t2, 'before_20160927.tif', "
                "'after_20180323.tif', 's2-rgbn-effl0-siamunet@2026.11.2', :g, :now)"),
                {"pid": f"P00000{seq}", "wid": f"810000-2018Q1-000{seq}", "t1": warning["t1"], "t2": warning["t2"],
                 "g": POLY, "now": NOW})
        conn.execute(text(
            "INSERT INTO warning_history (warning_id, event, at, by, to_status, why) VALUES "
            "('810000-2018Q1-0001', 'created', :now, 'cspon-rs', 'new', 'detected in 2018Q1')"), {"now": NOW})
        conn.execute(text(
            "INSERT INTO verifications (warning_id, result, reason, actual_use, by, observed_at, created_at) "
            "VALUES ('810000-2018Q1-0001', 'false_change', '云影', NULL, 'team-1', :now, :now)"), {"now": NOW})
        conn.execute(text(
            "INSERT INTO api_users (name, role, county_code, token_hash, active, created_at) VALUES "
            "('old-admin', 'admin', NULL, :h, :t, :now)"), {"h": "0" * 64, "t": True, "now": NOW})
    engine.dispose()


def _snapshot(session: Session) -> list[tuple[object, ...]]:
    rows = session.execute(select(WarningRecord.id, WarningRecord.status, WarningRecord.version,
                                  WarningRecord.area_m2, WarningRecord.geometry_wkt, WarningRecord.reasons))
    return [tuple(r) for r in rows]


def test_upgrade_from_0002_keeps_every_row(store_url: str, tmp_path: object) -> None:
    _upgrade(store_url, "0002_api")
    _seed_0002(store_url)
    engine = make_engine(store_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0002_api"
        before = [tuple(r) for r in conn.execute(text(
            "SELECT id, status, version, area_m2, geometry_wkt FROM warnings ORDER BY id"))]
    engine.dispose()

    init_db(store_url)  # 0002 -> head, as open_store / serve / the CLI do on start

    engine = make_engine(store_url)
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    try:
        with sessions() as session:
            head = ScriptDirectory.from_config(_alembic_cfg()).get_current_head()
            assert session.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
            after = [tuple(r) for r in session.execute(text(
                "SELECT id, status, version, area_m2, geometry_wkt FROM warnings ORDER BY id"))]
            assert after == before
            assert session.scalar(select(func.count(Patch.id))) == 2
            assert session.scalar(select(func.count(Verification.id))) == 1
            assert session.scalar(select(func.count(WarningHistory.id))) == 1
            assert session.scalar(text("SELECT count(*) FROM api_users WHERE name = 'old-admin'")) == 1
            assert session.scalar(select(func.count(ModelVersion.id))) == 0
            old = get_warning(session, "810000-2018Q1-0001")
            # the detector is back-filled from the stored patch; the rest of the identity was never recorded
            assert old.detector == "s2-rgbn-effl0-siamunet@2026.11.2"
            assert old.model_sha256 is None and old.model_version_id is None
            patch = session.scalars(select(Patch).where(Patch.warning_id == old.id)).one()
            assert patch.scene_before == "before_20160927.tif" and patch.scene_before_sha256 is None
            # the upgraded store works: reads, lifecycle, negatives, labels export
            assert [w.id for w in list_warnings(session, county_code="810000")] == [
                "810000-2018Q1-0001", "810000-2018Q1-0002"]
            w2 = assign_warning(session, "810000-2018Q1-0002", team="t", expected_version=3)
            record_verification(session, w2.id, result="illegal", expected_version=w2.version, by="t")
            negatives = false_change_negatives(session, county_code="810000")
            assert list(negatives["warning_id"]) == ["810000-2018Q1-0001"]
            assert negatives["reason"].iloc[0] == "云影"
            result = export_labels(session, tmp_path / "labels.gpkg", county_code="810000")  # type: ignore[operator]
            # rows stored before 0003 have no scene checksum: listed and skipped, never silently used
            assert result.n_labels == 0 and len(result.skipped) == 2
            assert all("no stored identity" in s.reason for s in result.skipped)
    finally:
        engine.dispose()


def test_orm_matches_migrations(store_url: str) -> None:
    from alembic.autogenerate import compare_metadata

    from cspon_rs.store.base import Base

    init_db(store_url)
    engine = make_engine(store_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": False})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    # PostGIS's own tables and the generated geom column are not in the ORM
    diff = [d for d in diff if not (d[0] == "remove_table" or "geom" in str(d) or "spatial_ref_sys" in str(d))]
    assert diff == []


def _alembic_cfg() -> Config:
    from cspon_rs.store.db import MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg

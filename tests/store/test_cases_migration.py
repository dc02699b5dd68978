"""Revision 0007 (卫片执法 content, issue 23) upgrades a store made at revision 0005 with warnings,
verifications and photos in it: every row is kept, the new columns are NULL for old rows, and new rows store
the land class, issued 图斑 and case steps."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import sessionmaker
from test_closed_loop_migration import _seed_0002, _upgrade

from cspon_rs.store.case_models import CaseDocument, CaseStep, IssuedTuban
from cspon_rs.store.crud import get_warning
from cspon_rs.store.db import init_db, make_engine


def test_upgrade_from_0005_keeps_rows_and_adds_land_class(store_url: str) -> None:
    _upgrade(store_url, "0002_api")
    _seed_0002(store_url)
    _upgrade(store_url, "0005_field_capture")
    engine = make_engine(store_url)
    with engine.begin() as conn:
        before = [tuple(r) for r in conn.execute(text(
            "SELECT id, status, area_m2, version, farmland_overlap_m2 FROM warnings ORDER BY id"))]
        n_verifications = conn.execute(text("SELECT count(*) FROM verifications")).scalar()
    engine.dispose()
    assert before

    init_db(store_url)  # 0005 -> head

    engine = make_engine(store_url)
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    try:
        with sessions() as session:
            after = [tuple(r) for r in session.execute(text(
                "SELECT id, status, area_m2, version, farmland_overlap_m2 FROM warnings ORDER BY id"))]
            assert after == before
            assert session.execute(text("SELECT count(*) FROM verifications")).scalar() == n_verifications
            record = get_warning(session, before[0][0])
            assert (record.landuse_areas, record.cropland_m2, record.landuse_main) == (None, None, None)
            record.landuse_areas = {"0103": 120.5, "0301": 10.0}
            record.cropland_m2 = 120.5
            record.landuse_main = "0103"
            session.commit()
        with sessions() as session:
            again = get_warning(session, before[0][0])
            assert again.landuse_areas == {"0103": 120.5, "0301": 10.0} and again.landuse_main == "0103"
            assert (again.issued_no, again.land_user, again.rectification_status) == (None, None, None)
            session.add(IssuedTuban(county_code=again.county_code, period=again.period, number="JC-1",
                                    area_m2=10.0, geometry_kind="polygon", geometry_wkt=again.geometry_wkt,
                                    warning_id=again.id, matched_ids=[again.id], detected=True))
            step = CaseStep(warning_id=again.id, step="filed", to_status="pending", by="t")
            session.add(step)
            session.flush()
            session.add(CaseDocument(warning_id=again.id, step_id=step.id, path="cases/x.pdf",
                                     content_type="application/pdf", size=10, sha256="a" * 64))
            session.commit()
        with sessions() as session:
            assert session.execute(text("SELECT count(*) FROM issued_tuban")).scalar() == 1
            assert session.execute(text("SELECT count(*) FROM case_documents")).scalar() == 1
            assert session.execute(text("SELECT display_name FROM api_users")).fetchall() is not None
    finally:
        engine.dispose()

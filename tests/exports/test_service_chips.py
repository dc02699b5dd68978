"""Chips rendered by the service come from the stored warning through the same ``write_chips`` as the demo
chips: dates, category, area and confidence in the picture and in the PNG's text chunks; a chip on disk is
reused while the warning shows the same things, and rendered again when it changes."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
from PIL import Image

from cspon_rs.api.chips import chip_fingerprint, chip_for_warning
from cspon_rs.rules.synthetic import patches_frame
from cspon_rs.store.crud import RunProvenance, assign_warning, get_warning, save_warnings
from cspon_rs.store.db import open_store, sqlite_url


def test_service_chip_carries_the_stored_warning(warnings: gpd.GeoDataFrame, raster_pair: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    before, after = raster_pair
    rows = warnings[warnings["is_warning"]].head(1).drop(columns=["warning_id"])
    patches = patches_frame([rows.geometry.iloc[0]], rows.crs, t1="2025-03-01", t2="2025-09-01")
    patches["patch_id"] = list(rows["patch_id"])
    sessions = open_store(sqlite_url(tmp_path / "w.sqlite"))
    prov = RunProvenance(scene_before=str(before.resolve()), scene_after=str(after.resolve()))
    try:
        with sessions() as session:
            saved = save_warnings(session, rows, period="2025Q3", county_code="510000", patches=patches,
                                  provenance=prov)
            wid = saved.created[0]
        with sessions() as session:
            record = get_warning(session, wid)
            chip = chip_for_warning(session, record, tmp_path / "cache")
            text = Image.open(chip).text  # type: ignore[attr-defined]
            assert text["warning_id"] == wid and text["t1"] == "2025-03-01" and text["t2"] == "2025-09-01"
            assert text["category"] == record.category and text["category_zh"] == "未批先建"
            assert float(text["area_m2"]) == round(record.area_m2, 2)
            assert float(text["confidence"]) == round(float(record.confidence or 0), 4)
            mtime = chip.stat().st_mtime_ns
            fingerprint = chip_fingerprint(record, (str(before.resolve()), str(after.resolve())))
        with sessions() as session:  # assigning changes the version, not what the chip shows: reused
            assign_warning(session, wid, team="一组")
        with sessions() as session:
            record = get_warning(session, wid)
            again = chip_for_warning(session, record, tmp_path / "cache")
            assert again == chip and again.stat().st_mtime_ns == mtime
            record.category = "built_elsewhere"  # what the chip shows changed: a new chip
            session.commit()
            changed = chip_for_warning(session, get_warning(session, wid), tmp_path / "cache")
            assert changed != chip and Image.open(changed).text["category_zh"] == "批东建西"  # type: ignore[attr-defined]
            assert chip_fingerprint(get_warning(session, wid), (str(before.resolve()), str(after.resolve()))
                                    ) != fingerprint
    finally:
        sessions.kw["bind"].dispose()

"""The 核查表 of the PDF report shows every field photo of a warning (three here, not two) with its evidence
caption (time, lon/lat, bearing, distance to the 图斑, who, flags) made by ``api.photos.caption_text``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import geopandas as gpd
import pytest
from PIL import Image


def test_every_photo_on_the_sheet_with_its_caption(warnings: gpd.GeoDataFrame, tmp_path: Path) -> None:
    from pypdf import PdfReader

    from cspon_rs.api.photos import caption_text
    from cspon_rs.exports.fonts import find_cjk_font
    from cspon_rs.exports.report import SHEET_TITLE, write_report

    if find_cjk_font(warn=False) is None:
        pytest.skip("no CJK font installed (apt-get install fonts-noto-cjk)")
    wid = str(warnings[warnings["is_warning"]]["warning_id"].iloc[0])
    photos = []
    for k in range(3):
        photo = tmp_path / f"p{k}.jpg"
        Image.new("RGB", (400, 300), (30 + 60 * k, 120, 60)).save(photo, format="JPEG")
        photos.append(photo)
    when = dt.datetime(2026, 5, 1, 1, 30, tzinfo=dt.UTC)
    zone = dt.timezone(dt.timedelta(hours=8))
    captions = [
        caption_text(taken_at=when, lon=114.1031, lat=22.3021, position_source="exif", bearing_deg=123.0,
                     distance_m=0.0, by="li.wei", flags=None, zone=zone),
        caption_text(taken_at=when, lon=114.1031, lat=22.3201, position_source="exif", bearing_deg=10.0,
                     distance_m=2012.0, by="li.wei", flags="far", zone=zone),
        caption_text(taken_at=None, lon=None, lat=None, position_source=None, bearing_deg=None, distance_m=None,
                     by="wang.fang", flags="no_position,no_time", zone=zone),
    ]
    assert captions[0] == "2026-05-01 09:30 +0800 · 114.103100, 22.302100 (exif) · 方位 123° · 距图斑 0 m · li.wei"
    assert captions[1].endswith("距图斑 2,012 m · li.wei · ⚠ 远离图斑")
    path = write_report(warnings, tmp_path / "r.pdf", county_code="510000", period="2025Q3", sheet_ids=[wid],
                        top_n=0, photos={wid: photos}, photo_captions={wid: captions})
    reader = PdfReader(path)
    texts = ["".join(p.extract_text().replace("\x00", "").split()) for p in reader.pages]
    first = next(i for i, t in enumerate(texts) if SHEET_TITLE in t)
    sheet = "".join(texts[first:])
    for k, caption in enumerate(captions, start=1):
        assert f"照片{k}" + "".join(caption.split()) in sheet, (k, caption)
    assert sum(len(p.images) for p in reader.pages[first:]) >= 3

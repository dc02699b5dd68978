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


def test_kmz_embeds_every_photo_with_its_caption(warnings: gpd.GeoDataFrame, tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET
    import zipfile

    from cspon_rs.exports.patrol import write_patrol

    rows = warnings[warnings["is_warning"]]
    wid = str(rows["warning_id"].iloc[0])
    photos = []
    for k in range(3):
        photo = tmp_path / f"k{k}.jpg"
        Image.new("RGB", (64, 48), (20 + 70 * k, 90, 90)).save(photo, format="JPEG")
        photos.append((photo, f"2026-05-01 09:3{k} +0800 · 114.1, 22.3 (exif) · 方位 {k * 90}° · <b>li.wei</b>"))
    start = rows.geometry.to_crs(4326).iloc[0].centroid
    result = write_patrol(rows, tmp_path / "p.kmz", start_lonlat=(start.x, start.y), photos={wid: photos})
    with zipfile.ZipFile(result.path) as z:
        embedded = [n for n in z.namelist() if n.startswith("files/") and n.endswith(".jpg")]
        doc = ET.fromstring(z.read("doc.kml"))
    assert len(embedded) == 3
    kml = "{http://www.opengis.net/kml/2.2}"
    place = next(p for p in doc.iter(f"{kml}Placemark") if p.findtext(f"{kml}name") == wid and
                 p.find(f".//{kml}Point") is not None)
    text = place.findtext(f"{kml}description") or ""
    for k, (_, caption) in enumerate(photos, start=1):
        assert f"照片{k} " + caption.replace("<", "&lt;").replace(">", "&gt;") in text
    assert all(f'src="{n}"' in text for n in embedded)

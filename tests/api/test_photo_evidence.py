"""Photo evidence (举证) on a verification: EXIF GPS, GPSImgDirection and DateTimeOriginal are read per photo,
the phone's fix and compass fill in where the file has none, each photo's geodesic distance to the 图斑 is
stored, photos far from it or outside the check's time window are flagged, the same photo is stored once,
and a GPS track recorded with the check comes back as GPX that gpxpy (and gpsbabel, when installed) reads."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import gpxpy
import pytest
from apitest_support import Server, add_user, seed_warnings
from PIL import ExifTags, Image
from pyproj import Geod
from shapely.geometry import Point, shape

COUNTY = "440307"


def _dms(value: float) -> tuple[Fraction, Fraction, Fraction]:
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    s = (value - d - m / 60) * 3600
    return Fraction(d), Fraction(m), Fraction(s).limit_denominator(10000)


def jpeg_with_exif(lon: float | None, lat: float | None, bearing: float | None, taken: str | None,
                   seed: int = 0, size: tuple[int, int] = (32, 24)) -> bytes:
    """A real JPEG with EXIF GPS position, GPSImgDirection and DateTimeOriginal (each when given)."""
    image = Image.new("RGB", size, (30 + seed * 40 % 200, 90, 140))
    exif = Image.Exif()
    if taken is not None:
        exif[ExifTags.IFD.Exif] = {ExifTags.Base.DateTimeOriginal: taken, ExifTags.Base.OffsetTimeOriginal: "+08:00"}
    gps: dict[int, Any] = {}
    if lon is not None and lat is not None:
        gps.update({ExifTags.GPS.GPSLatitudeRef: "N" if lat >= 0 else "S", ExifTags.GPS.GPSLatitude: _dms(lat),
                    ExifTags.GPS.GPSLongitudeRef: "E" if lon >= 0 else "W", ExifTags.GPS.GPSLongitude: _dms(lon)})
    if bearing is not None:
        gps.update({ExifTags.GPS.GPSImgDirectionRef: "T", ExifTags.GPS.GPSImgDirection: Fraction(bearing)})
    if gps:
        exif[ExifTags.IFD.GPSInfo] = gps
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


@pytest.fixture(scope="module")
def seeded(server: Server) -> dict[str, Any]:
    ids = seed_warnings(server.db_url, COUNTY, "2018Q3", 2, seed=11)
    return {
        "ids": ids,
        "bureau": add_user(server.db_url, "bureau-pe", "bureau", COUNTY),
        "field": add_user(server.db_url, "field-pe", "field", COUNTY, "team-pe"),
    }


def test_photos_positioned_checked_flagged_and_deduplicated(server: Server, seeded: dict[str, Any]) -> None:
    wid = seeded["ids"][0]
    with server.client(seeded["bureau"]) as c:
        r = c.post(f"/warnings/{wid}/assign", json={"team": "team-pe"})
        assert r.status_code == 200, r.text
        version = r.json()["version"]
        poly = shape(c.get(f"/warnings/{wid}").json()["geometry"])
    inside = poly.representative_point()
    geod = Geod(ellps="GRS80")
    far_lon, far_lat, _ = geod.fwd(inside.x, inside.y, 0.0, 2000.0)  # 2 km north of a point inside
    near = jpeg_with_exif(inside.x, inside.y, 123.5, "2026:05:01 09:30:00", seed=1)
    far = jpeg_with_exif(far_lon, far_lat, 10.0, "2026:05:01 09:31:00", seed=2)
    old = jpeg_with_exif(None, None, None, "2026:04:01 09:00:00", seed=3)  # a month before the check
    track = [[inside.x, inside.y - 0.01, "2026-05-01T09:00:00+08:00"],
             [inside.x, inside.y - 0.005, "2026-05-01T09:10:00+08:00"], [inside.x, inside.y, None]]
    with server.client(seeded["field"]) as f:
        ok = f.post(
            f"/warnings/{wid}/verifications",
            data={"result": "illegal", "expected_version": str(version), "lon": str(inside.x),
                  "lat": str(inside.y), "heading_deg": "45", "recorded_at": "2026-05-01T09:40:00+08:00",
                  "photo_capture": ["", "", json.dumps({"lon": inside.x, "lat": inside.y, "heading": 200.0})],
                  "track": json.dumps(track)},
            files=[("photos", ("near.jpg", near, "image/jpeg")), ("photos", ("far.jpg", far, "image/jpeg")),
                   ("photos", ("old.jpg", old, "image/jpeg"))],
        )
        assert ok.status_code == 201, ok.text
        body = ok.json()
        detail = f.get(f"/warnings/{wid}").json()
        gpx_resp = f.get(f"/warnings/{wid}/verifications/{body['verification']['id']}/track.gpx")
    photos = body["photos"]
    assert len(photos) == 3
    by_name = dict(zip(["near", "far", "old"], photos, strict=True))
    assert by_name["near"]["position_source"] == "exif" and by_name["near"]["bearing_source"] == "exif"
    assert by_name["near"]["lon"] == pytest.approx(inside.x, abs=1e-5)
    assert by_name["near"]["bearing_deg"] == pytest.approx(123.5)
    assert by_name["near"]["distance_m"] == 0.0 and by_name["near"]["flags"] == []
    assert by_name["near"]["taken_at"].startswith("2026-05-01T01:30:00")
    # 2 km north of a point inside: the distance to the polygon is 2 km less the polygon's extent that way
    expected = 2000.0 - geod.inv(inside.x, inside.y, inside.x, inside.y)[2]
    assert 1500 < by_name["far"]["distance_m"] <= expected + 1
    assert by_name["far"]["flags"] == ["far"]
    assert Point(far_lon, far_lat).distance(poly) > 0
    # no GPS in the file: the phone's fix and compass when the photo was added; a month old: 'early'
    assert (by_name["old"]["position_source"], by_name["old"]["bearing_source"]) == ("device", "device")
    assert by_name["old"]["bearing_deg"] == pytest.approx(200.0)
    assert by_name["old"]["flags"] == ["early"]
    assert {p["by"] for p in detail["photos"]} == {"field-pe"}
    assert [p["flags"] for p in detail["photos"]] == [[], ["far"], ["early"]]
    assert detail["verifications"][0]["has_track"] is True
    with server.client(seeded["bureau"]) as c:
        listed = c.get(f"/warnings/{wid}").json()["photos"]
    assert len({p["sha256"] for p in listed}) == 3

    # the captions the report's 核查表 and the KMZ print under each photo (display zone Asia/Shanghai)
    from cspon_rs.api.db import make_engine, make_sessionmaker, session_scope
    from cspon_rs.api.photos import photo_captions

    engine = make_engine(server.db_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            captions = photo_captions(session, [wid])[wid]
    finally:
        engine.dispose()
    assert len(captions) == 3
    assert captions[0].startswith("2026-05-01 09:30 +0800 · ") and "方位 124°" in captions[0]
    assert "距图斑 0 m · field-pe" in captions[0] and "⚠" not in captions[0]
    assert captions[1].endswith("· field-pe · ⚠ 远离图斑") and captions[2].endswith("⚠ 早于核查")
    assert gpx_resp.status_code == 200, gpx_resp.text
    gpx = gpxpy.parse(gpx_resp.text)
    points = gpx.tracks[0].segments[0].points
    assert [(round(p.longitude, 6), round(p.latitude, 6)) for p in points] == [
        (round(x, 6), round(y, 6)) for x, y, _ in track]
    assert points[0].time is not None and points[0].time.isoformat().startswith("2026-05-01T01:00:00")


def test_same_photo_in_a_later_check_reuses_the_file(server: Server, seeded: dict[str, Any]) -> None:
    wid = seeded["ids"][1]
    photo = jpeg_with_exif(None, None, None, None, seed=5)
    with server.client(seeded["bureau"]) as c:
        version = c.post(f"/warnings/{wid}/assign", json={"team": "team-pe"}).json()["version"]
    with server.client(seeded["field"]) as f:
        first = f.post(f"/warnings/{wid}/verifications", data={"result": "legal", "expected_version": str(version)},
                       files=[("photos", ("a.jpg", photo, "image/jpeg")), ("photos", ("a2.jpg", photo, "image/jpeg"))])
        assert first.status_code == 201, first.text
        assert len(first.json()["photos"]) == 1  # the same photo twice in one check: stored once
    with server.client(seeded["bureau"]) as c:
        v = c.post(f"/warnings/{wid}/status", json={"to_status": "assigned",
                                                    "expected_version": first.json()["warning"]["version"]})
        assert v.status_code == 200, v.text
        version = v.json()["version"]
    with server.client(seeded["field"]) as f:
        second = f.post(f"/warnings/{wid}/verifications", data={"result": "illegal",
                                                                "expected_version": str(version)},
                        files=[("photos", ("b.jpg", photo, "image/jpeg"))])
        assert second.status_code == 201, second.text
        missing = f.get(f"/warnings/{wid}/verifications/{second.json()['verification']['id']}/track.gpx")
    assert missing.status_code == 404
    with sqlite3.connect(server.db_path) as con:
        paths = [row[0] for row in con.execute("SELECT path FROM api_photos WHERE warning_id=?", (wid,))]
    assert len(paths) == 2 and paths[0] == paths[1]
    folder = (Path(server.data_dir) / paths[0]).parent
    assert [p.name for p in folder.iterdir()] == [Path(paths[0]).name]  # one file for both checks


@pytest.mark.skipif(shutil.which("gpsbabel") is None, reason="gpsbabel not installed (apt-get install gpsbabel)")
def test_track_gpx_reads_in_gpsbabel(tmp_path: Path) -> None:
    from cspon_rs.exports.patrol import write_track_gpx

    path = write_track_gpx([[114.1, 22.3, "2026-05-01T01:00:00+00:00"], [114.101, 22.301, None]],
                           tmp_path / "t.gpx")
    out = subprocess.run(["gpsbabel", "-t", "-i", "gpx", "-f", str(path), "-o", "csv", "-F", "-"],
                         capture_output=True, text=True, check=True)
    assert len([ln for ln in out.stdout.splitlines() if ln.strip()]) == 2

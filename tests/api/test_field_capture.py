"""Field capture on a verification: GPS accuracy, heading, fix time, device time and photo times (EXIF
``DateTimeOriginal`` read by the server, else the file time the phone sent) are stored, returned with an
offset, and out-of-range values are 422 naming the field and value."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
from apitest_support import Server, add_user, seed_warnings
from PIL import ExifTags, Image

COUNTY = "440306"


def _jpeg(exif_time: str | None, offset: str | None = None, seed: int = 0) -> bytes:
    """A small real JPEG, with EXIF DateTimeOriginal (and OffsetTimeOriginal) when given."""
    image = Image.new("RGB", (24, 24), (40 + seed * 50, 120, 80))
    buf = io.BytesIO()
    if exif_time is None:
        image.save(buf, "JPEG")
    else:
        exif = Image.Exif()
        tags: dict[int, str] = {ExifTags.Base.DateTimeOriginal: exif_time}
        if offset is not None:
            tags[ExifTags.Base.OffsetTimeOriginal] = offset
        exif[ExifTags.IFD.Exif] = tags
        image.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


@pytest.fixture(scope="module")
def seeded(server: Server) -> dict[str, Any]:
    ids = seed_warnings(server.db_url, COUNTY, "2018Q3", 3, seed=7)
    return {
        "ids": ids,
        "bureau": add_user(server.db_url, "bureau-fc", "bureau", COUNTY),
        "field": add_user(server.db_url, "field-fc", "field", COUNTY, "team-fc"),
    }


def _assign(server: Server, token: str, wid: str) -> int:
    with server.client(token) as c:
        r = c.post(f"/warnings/{wid}/assign", json={"team": "team-fc"})
        assert r.status_code == 200, r.text
        return int(r.json()["version"])


def _t(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text)


def test_capture_fields_stored_and_returned(server: Server, seeded: dict[str, Any]) -> None:
    wid = seeded["ids"][0]
    version = _assign(server, seeded["bureau"], wid)
    form = {
        "result": "illegal", "expected_version": str(version), "actual_use": "厂房", "notes": "新建钢棚",
        "lon": "114.1031", "lat": "22.3021", "accuracy_m": "12.5", "heading_deg": "271.5",
        "position_at": "2026-05-01T09:31:10+08:00", "recorded_at": "2026-05-01T09:32:00+08:00",
    }
    with_exif = _jpeg("2026:05:01 09:30:00", seed=1)  # no offset in the file: the device's +08:00 applies
    with_offset = _jpeg("2026:05:01 01:29:00", "+00:00", seed=2)
    plain = _jpeg(None, seed=3)
    photo_times = ["", "2026-05-01T09:36:00+08:00", "2026-05-01T09:37:00+08:00"]  # '' = unknown file time
    with server.client(seeded["field"]) as f:
        ok = f.post(
            f"/warnings/{wid}/verifications",
            data={**form, "photo_times": photo_times},
            files=[("photos", ("a.jpg", with_exif, "image/jpeg")), ("photos", ("b.jpg", with_offset, "image/jpeg")),
                   ("photos", ("c.jpg", plain, "image/jpeg"))],
        )
        assert ok.status_code == 201, ok.text
        body = ok.json()
    with server.client(seeded["bureau"]) as c:
        detail = c.get(f"/warnings/{wid}").json()
    for verification, photos in ((body["verification"], body["photos"]), (detail["verifications"][0],
                                                                         detail["photos"])):
        assert verification["position_accuracy_m"] == pytest.approx(12.5)
        assert verification["heading_deg"] == pytest.approx(271.5)
        assert _t(verification["position_at"]) == _t(form["position_at"])
        assert _t(verification["recorded_at"]) == _t(form["recorded_at"])
        assert _t(verification["recorded_at"]).utcoffset() is not None  # type: ignore[union-attr]
        assert verification["notes"] == "新建钢棚"
        taken = [_t(p["taken_at"]) for p in sorted(photos, key=lambda p: p["id"])]
        assert taken == [
            dt.datetime(2026, 5, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=8))),  # EXIF, device zone
            dt.datetime(2026, 5, 1, 1, 29, tzinfo=dt.UTC),  # EXIF with its own offset
            _t(photo_times[2]),  # no EXIF: the file time the phone sent
        ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("accuracy_m", "-1"),
        ("accuracy_m", "inf"),
        ("heading_deg", "400"),
        ("heading_deg", "-5"),
        ("recorded_at", "2026-05-01T09:32:00"),  # no offset
        ("recorded_at", "yesterday"),
        ("recorded_at", "1999-12-31T23:59:00Z"),
        ("position_at", "FUTURE"),
        ("photo_times", "2026-05-01T09:35:00"),
    ],
)
def test_bad_capture_values_are_422(server: Server, seeded: dict[str, Any], field: str, value: str) -> None:
    wid = seeded["ids"][1]
    with server.client(seeded["bureau"]) as c:
        current = c.get(f"/warnings/{wid}").json()
    version = current["version"] if current["status"] == "assigned" else _assign(server, seeded["bureau"], wid)
    if value == "FUTURE":
        value = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    form = {"result": "legal", "expected_version": str(version), "lon": "114.1", "lat": "22.3", field: value}
    files = [("photos", ("a.jpg", _jpeg(None), "image/jpeg"))]
    with server.client(seeded["field"]) as f:
        bad = f.post(f"/warnings/{wid}/verifications", data=form, files=files)
        assert bad.status_code == 422, bad.text
        assert field in bad.text and value in bad.text
        assert f.get(f"/warnings/{wid}").json()["status"] == "assigned"


def test_photo_times_count_and_position_needed(server: Server, seeded: dict[str, Any]) -> None:
    wid = seeded["ids"][2]
    version = _assign(server, seeded["bureau"], wid)
    base = {"result": "legal", "expected_version": str(version)}
    with server.client(seeded["field"]) as f:
        two_times = f.post(
            f"/warnings/{wid}/verifications",
            data={**base, "photo_times": ["2026-05-01T09:35:00Z", "2026-05-01T09:36:00Z"]},
            files=[("photos", ("a.jpg", _jpeg(None), "image/jpeg"))],
        )
        assert two_times.status_code == 422 and "photo_times" in two_times.text
        no_position = f.post(f"/warnings/{wid}/verifications", data={**base, "accuracy_m": "5"})
        assert no_position.status_code == 422 and "accuracy_m" in no_position.text
        # a verification without any capture detail (old clients, old queued items) still works
        plain = f.post(f"/warnings/{wid}/verifications", data=base)
        assert plain.status_code == 201, plain.text
        v = plain.json()["verification"]
        assert v["position_accuracy_m"] is None and v["recorded_at"] is None and v["heading_deg"] is None

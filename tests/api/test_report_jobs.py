"""The period report as a job (POST /exports/report-jobs) against a real ``cspon-rs serve`` with its worker,
on a county store made by ``benchmarks/seed_county.py`` (real polygons on the Hong Kong scene, real photo
files, one of them a PNG whose header announces 400 Mpx)."""

from __future__ import annotations

import io
import struct
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_support import Server, add_user

REPO = Path(__file__).resolve().parents[2]
COUNTY, PERIOD = "810000", "2018Q1"
N = 120


def _bomb_png(path: Path, side: int = 20_000) -> None:
    """A valid PNG header of ``side`` x ``side`` px (bit depth 1) with a tiny body: decoding it would need
    hundreds of MB; reading its header costs nothing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not (REPO / "data_samples" / "hongkong" / "before_20160927.tif").exists():
        pytest.skip("bundled demo data not found")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from seed_county import seed_county

    from cspon_rs.store.api_models import Photo
    from cspon_rs.store.db import open_store

    root = tmp_path_factory.mktemp("report_jobs")
    db_url = f"sqlite:///{root / 'county.sqlite'}"
    data = root / "data"
    seed_county(db_url, n=N, county_code=COUNTY, period=PERIOD, data_dir=data, photos=3, photo_warnings=2,
                photo_size=(2400, 1800))
    # the highest-priority verified warning also gets a decompression bomb
    factory = open_store(db_url)
    with factory() as session:
        photo = session.query(Photo).order_by(Photo.id).first()
        assert photo is not None
        bomb = data / "photos" / photo.warning_id / "bomb.png"
        _bomb_png(bomb)
        session.add(Photo(warning_id=photo.warning_id, verification_id=photo.verification_id,
                          path=str(bomb.relative_to(data)), content_type="image/png", size=bomb.stat().st_size,
                          sha256="0" * 64, original_name="bomb.png"))
        session.commit()
        bomb_warning = photo.warning_id
    factory.kw["bind"].dispose()
    server = Server(root / "county.sqlite", data, root / "serve.log").start()
    try:
        yield {
            "server": server,
            "bureau": add_user(server.db_url, "bureau", "bureau", COUNTY),
            "bureau2": add_user(server.db_url, "bureau2", "bureau", COUNTY),
            "other": add_user(server.db_url, "other-county", "bureau", "510000"),
            "bomb_warning": bomb_warning,
        }
    finally:
        server.stop()


def _wait(client: Any, job_id: int, timeout: float = 300.0) -> tuple[dict[str, Any], list[float]]:
    seen: list[float] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        seen.append(job["progress"])
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job, seen
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def _pages(pdf: bytes) -> list[str]:
    from pypdf import PdfReader

    return ["".join((p.extract_text() or "").replace("\x00", "").split()) for p in PdfReader(io.BytesIO(pdf)).pages]


def test_report_job_prints_every_warning_top_sheets_and_every_photo(served: dict[str, Any]) -> None:
    from pypdf import PdfReader

    from cspon_rs.exports.report import SHEET_TITLE

    server = served["server"]
    with server.client(served["bureau"]) as c, server.client(served["bureau2"]) as c2:
        ids = [w["id"] for w in c.get("/warnings", params={"period": PERIOD, "limit": 1000}).json()["items"]]
        body = {"period": PERIOD, "sheets": 4, "ids": None}
        r = c.post("/exports/report-jobs", json=body)
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["kind"] == "report" and job["state"] in ("queued", "running")
        # one report job per user at a time; another user is not blocked
        second = c.post("/exports/report-jobs", json={**body, "sheets": 3})
        assert second.status_code == 409, second.text
        assert str(job["id"]) in second.text
        assert c.get(f"/exports/report-jobs/{job['id']}/report.pdf").status_code in (409, 200)
        done, progress = _wait(c, job["id"])
        assert done["state"] == "succeeded", done["error"]
        assert progress == sorted(progress) and progress[-1] == 1.0
        assert "核查表 4/4" in done["log"]
        result = done["result"]
        assert result["sheets"] == 4 and result["warnings"] == len(ids)
        pdf = c.get(result["download_url"].removeprefix("/api/v1"))
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        assert len(pdf.content) == result["bytes"]
        texts = _pages(pdf.content)
        assert sum(SHEET_TITLE in t for t in texts) == 4
        listed = "".join(texts)
        missing = [i for i in ids if i not in listed]
        assert not missing, f"{len(missing)} warnings not in the report, e.g. {missing[:3]}"
        # the sheets are the four highest-priority warnings; every photo of theirs is printed, downscaled
        top4 = ids[:4]
        sheets = [t for t in texts if SHEET_TITLE in t]
        assert [next(i for i in top4 if i in t) for t in sheets] == top4
        reader = PdfReader(io.BytesIO(pdf.content))
        sizes = [img.image.size for page in reader.pages for img in page.images]
        assert sizes and max(max(s) for s in sizes) <= 1600, sizes
        # the bomb (if it is on a sheet) is accounted for as "not shown", never decoded
        on_sheet = served["bomb_warning"] in top4
        assert result["photos_not_shown"] == (1 if on_sheet else 0)
        # cached: the same request on the unchanged store is the same job, at once
        again = c2.post("/exports/report-jobs", json=body)
        assert again.status_code == 200 and again.json()["id"] == job["id"]
        # a change in the store makes a new report
        w = ids[-1]
        assert c.post(f"/warnings/{w}/assign", json={"team": "一队"}).status_code == 200
        fresh = c.post("/exports/report-jobs", json=body)
        assert fresh.status_code == 202 and fresh.json()["id"] != job["id"]
        assert c.post(f"/jobs/{fresh.json()['id']}/cancel").status_code == 200
        _wait(c, fresh.json()["id"])


def test_report_job_selected_ids_with_the_bomb_and_scoping(served: dict[str, Any]) -> None:
    server = served["server"]
    bomb = served["bomb_warning"]
    with server.client(served["bureau2"]) as c, server.client(served["other"]) as other:
        job = c.post("/exports/report-jobs", json={"period": PERIOD, "ids": [bomb]})
        assert job.status_code == 202, job.text
        done, _ = _wait(c, job.json()["id"])
        assert done["state"] == "succeeded", done["error"]
        assert done["result"]["sheets"] == 1
        assert done["result"]["photos"] == 4 and done["result"]["photos_not_shown"] == 1
        # another county: refused to submit, the job and its file are invisible
        assert other.post("/exports/report-jobs", json={"period": PERIOD, "county_code": COUNTY}).status_code == 403
        assert other.get(f"/exports/report-jobs/{job.json()['id']}/report.pdf").status_code == 404
        assert other.get(f"/jobs/{job.json()['id']}").status_code == 404
        # nothing stored for that period: 404 before anything is queued
        assert c.post("/exports/report-jobs", json={"period": "2019Q4"}).status_code == 404


def test_inline_report_refuses_large_requests_and_serves_small_ones(served: dict[str, Any]) -> None:
    from cspon_rs.api.report_service import SYNC_MAX_SHEETS
    from cspon_rs.exports.report import SHEET_TITLE

    server = served["server"]
    with server.client(served["bureau"]) as c:
        ids = [w["id"] for w in c.get("/warnings", params={"period": PERIOD, "limit": 1000}).json()["items"]]
        big = c.get("/exports/report.pdf", params={"period": PERIOD, "ids": ",".join(
            f"{COUNTY}-{PERIOD}-{k:04d}" for k in range(1, SYNC_MAX_SHEETS + 2))})
        assert big.status_code == 413, big.text
        assert "report-jobs" in big.text
        small = c.get("/exports/report.pdf", params={"period": PERIOD, "ids": ",".join(ids[:2]), "top": 1})
        assert small.status_code == 200, small.text
        assert sum(SHEET_TITLE in t for t in _pages(small.content)) == 2

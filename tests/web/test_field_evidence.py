"""Photo evidence from the phone, in a real headless Chromium (phone viewport) against a real ``cspon-rs serve``:
three 12-Mpx photos with EXIF GPS, bearing and time (made here with Pillow) are downscaled on the phone before
they are queued (long edge 2048 px, JPEG, EXIF kept), the same photo picked twice is kept once, one can be
removed from the form, the check syncs, the server stores each photo's position, bearing and distance to the
图斑, flags the one taken 2 km away, and the review map shows every photo with its caption. The app asks for
persistent storage."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import gpxpy
import numpy as np
import pytest
from PIL import ExifTags, Image
from pyproj import Geod
from shapely.geometry import shape
from webtest_support import COUNTY, HONGKONG, PERIOD, TEAM, Seeded

pytestmark = pytest.mark.browser

TIMEOUT_MS = 120_000
UPLOAD_TARGET_BYTES = 2_500_000  # issue 24: a check with three 12-Mpx photos uploads at most 2.5 MB
SPY_PERSIST = """(() => { window.__persistCalls = 0;
  if (navigator.storage && navigator.storage.persist) {
    const orig = navigator.storage.persist.bind(navigator.storage);
    navigator.storage.persist = () => { window.__persistCalls++; return orig(); };
  } })();"""


def _dms(value: float) -> tuple[Fraction, Fraction, Fraction]:
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    return Fraction(d), Fraction(m), Fraction((value - d - m / 60) * 3600).limit_denominator(10000)


def _scene_rgb() -> np.ndarray:
    import rasterio

    with rasterio.open(HONGKONG / "after_20180323.tif") as src:
        a = src.read([1, 2, 3]).astype("float32")
    lo, hi = np.percentile(a, [2, 98])
    return np.clip((a - lo) / (hi - lo) * 255, 0, 255).astype("uint8").transpose(1, 2, 0)


def _photo(path: Path, rgb: np.ndarray, k: int, lon: float, lat: float, bearing: float, taken: dt.datetime) -> Path:
    """A 12-Mpx (4000 x 3000) camera-like JPEG: real imagery enlarged, sensor noise, EXIF GPS/direction/time."""
    crop = rgb[60 + 40 * k: 360 + 40 * k, 60: 460]
    big = np.asarray(Image.fromarray(crop).resize((4000, 3000), Image.Resampling.BICUBIC), dtype="float32")
    big = big + np.random.default_rng(k).normal(0, 6, big.shape)
    exif = Image.Exif()
    exif[ExifTags.IFD.Exif] = {ExifTags.Base.DateTimeOriginal: taken.strftime("%Y:%m:%d %H:%M:%S"),
                               ExifTags.Base.OffsetTimeOriginal: "+08:00"}
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: _dms(lat),
        ExifTags.GPS.GPSLongitudeRef: "E", ExifTags.GPS.GPSLongitude: _dms(lon),
        ExifTags.GPS.GPSImgDirectionRef: "T", ExifTags.GPS.GPSImgDirection: Fraction(bearing)}
    Image.fromarray(np.clip(big, 0, 255).astype("uint8")).save(path, "JPEG", quality=92, exif=exif)
    return path


def _open_target(seeded: Seeded) -> dict[str, Any]:
    """One warning assigned to the team and not yet verified (assigned through the API when none is left)."""
    with seeded.server.client(seeded.bureau_token) as c:
        mine = [w for w in c.get("/warnings", params={"status": "assigned", "limit": 500}).json()["items"]
                if w["assigned_team"] == TEAM]
        if not mine:
            w = c.get("/warnings", params={"status": "new", "county_code": COUNTY, "period": PERIOD,
                                           "limit": 1}).json()["items"][0]
            r = c.post(f"/warnings/{w['id']}/assign", json={"team": TEAM, "expected_version": w["version"]})
            assert r.status_code == 200, r.text
            mine = [r.json()]
        return dict(c.get(f"/warnings/{mine[0]['id']}").json())


def test_photos_downscaled_deduplicated_synced_flagged_and_captioned(
    browser: Any, seeded: Seeded, shots: Path, tmp_path: Path,
) -> None:
    from cspon_rs.geo.exif import read_exif

    target = _open_target(seeded)
    wid = target["id"]
    inside = shape(target["geometry"]).representative_point()
    far_lon, far_lat, _ = Geod(ellps="GRS80").fwd(inside.x, inside.y, 0.0, 2000.0)
    now = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).replace(microsecond=0) - dt.timedelta(minutes=5)
    rgb = _scene_rgb()
    files = [_photo(tmp_path / "site_a.jpg", rgb, 0, inside.x, inside.y, 45.0, now),
             _photo(tmp_path / "site_b.jpg", rgb, 1, inside.x, inside.y, 135.0, now),
             _photo(tmp_path / "elsewhere.jpg", rgb, 2, far_lon, far_lat, 300.0, now)]
    originals = sum(f.stat().st_size for f in files)

    here = {"latitude": inside.y, "longitude": inside.x, "accuracy": 8}
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True, locale="zh-CN", geolocation=here, permissions=["geolocation"],
                                  timezone_id="Asia/Shanghai")
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script(SPY_PERSIST)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(seeded.server.base + "/field")
        page.fill("#login-token", seeded.field_token)
        page.click("#login-submit")
        page.wait_for_selector("body[data-loaded='1']")
        page.wait_for_selector("body[data-persist]")
        assert page.evaluate("() => window.__persistCalls") >= 1  # navigator.storage.persist() was requested
        # the map scrolled under the sticky header never covers 退出 or the online/offline badge
        page.evaluate("() => { const m = document.getElementById('fmap');"
                      " window.scrollTo(0, m.getBoundingClientRect().top + window.scrollY - 30); }")
        for sel in ("#logout", "#net"):
            assert page.evaluate("""(sel) => { const el = document.querySelector(sel), r = el.getBoundingClientRect();
                const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
                return !!hit && (hit === el || el.contains(hit)); }""", sel), sel
        page.evaluate("() => window.scrollTo(0, 0)")
        # offline navigation: distance and bearing from the phone to the selected target
        card = page.locator(f"#targets li.target[data-id='{wid}']")
        card.locator("button.nav-btn").click()
        page.wait_for_selector(f"#nav[data-target='{wid}']")
        assert int(page.get_attribute("#nav", "data-distance")) < 200
        # a GPS track recorded while walking up to the site (fixes ~100 m apart, back at the site)
        page.click("#track")
        for k in (2, 1):
            context.set_geolocation({"latitude": inside.y - 0.0009 * k, "longitude": inside.x, "accuracy": 5})
            page.wait_for_selector(f"body[data-track-points='{4 - k}']")
        context.set_geolocation(here)
        page.wait_for_selector("body[data-track-points='4']")
        card.locator("button.verify-btn").click()
        form = card.locator("form.vform")
        photos = form.locator(".photo-field")
        form.locator("input[name=photos]").set_input_files([str(f) for f in files])
        page.wait_for_selector(".photo-field[data-count='3']:not([data-busy])")
        assert form.locator(".thumb img.thumb-img").count() == 3
        # the same photo again is kept once; a removed one can be added back
        form.locator("input[name=photos]").set_input_files(str(files[0]))
        page.wait_for_function("() => !document.querySelector('.photo-field[data-busy]')")
        assert photos.get_attribute("data-count") == "3"
        form.locator(".thumb button.remove-photo").nth(1).click()
        assert photos.get_attribute("data-count") == "2"
        form.locator("input[name=photos]").set_input_files(str(files[1]))
        page.wait_for_selector(".photo-field[data-count='3']:not([data-busy])")
        # real labels
        form.get_by_label("实际用途 actual use").fill("厂房 factory")
        form.get_by_label("备注 notes").fill("三张照片 three photos")
        form.locator("input[name=result][value=illegal]").check()
        page.screenshot(path=str(shots / "field_photos.png"))

        context.set_offline(True)  # queue without sending, to look at what would go up
        form.locator("button[type=submit]").click()
        page.wait_for_selector("body[data-queue='1']")
        queued = page.evaluate("""async () => {
            const q = (await CsponOffline.queueAll())[0]; const out = [];
            for (const p of q.photos) { const b = await createImageBitmap(p.blob);
              out.push([b.width, b.height, p.blob.size, p.blob.type, p.original_size]); }
            return out; }""")
        assert len(queued) == 3
        assert all(max(w, h) == 2048 and t == "image/jpeg" for w, h, _, t, _ in queued), queued
        upload = sum(q[2] for q in queued)
        print(f"\nupload of one check with three 12-Mpx photos: {upload / 1e6:.2f} MB "
              f"(originals {originals / 1e6:.2f} MB, target <= {UPLOAD_TARGET_BYTES / 1e6:.1f} MB)")
        assert upload <= UPLOAD_TARGET_BYTES
        assert sorted(q[4] for q in queued) == sorted(f.stat().st_size for f in files)

        context.set_offline(False)
        page.wait_for_selector("body[data-queue='0'][data-synced]")
        assert not errors, errors
    finally:
        context.close()

    with seeded.db() as con:
        vid, track_json = con.execute("SELECT id, track_json FROM verifications WHERE warning_id=? ORDER BY id DESC",
                                      (wid,)).fetchone()
        rows = con.execute("SELECT path, lon, lat, position_source, bearing_deg, bearing_source, distance_m, flags "
                           "FROM api_photos WHERE warning_id=? ORDER BY id", (wid,)).fetchall()
        status, use = con.execute("SELECT status, verification_result FROM warnings WHERE id=?", (wid,)).fetchone()
    assert (status, use) == ("verified", "illegal")
    assert len(rows) == 3
    bearings = sorted(r[4] for r in rows)
    assert bearings == pytest.approx([45.0, 135.0, 300.0])
    assert {r[3] for r in rows} == {"exif"} and {r[5] for r in rows} == {"exif"}
    far = next(r for r in rows if r[4] == pytest.approx(300.0))
    assert far[7] == "far" and 1000 < far[6] <= 2000
    assert all(r[7] is None and r[6] == 0.0 for r in rows if r is not far)
    assert track_json is not None and len(json.loads(track_json)) >= 4
    with seeded.server.client(seeded.field_token) as c:
        gpx = c.get(f"/warnings/{wid}/verifications/{vid}/track.gpx")
    assert gpx.status_code == 200, gpx.text
    track_file = tmp_path / "track.gpx"
    track_file.write_bytes(gpx.content)
    points = gpxpy.parse(gpx.text).tracks[0].segments[0].points
    assert len(points) >= 4 and all(p.time is not None for p in points)
    if shutil.which("gpsbabel"):  # the GPS tool reads it as a track
        out = subprocess.run(["gpsbabel", "-t", "-i", "gpx", "-f", str(track_file), "-o", "unicsv", "-F", "-"],
                             capture_output=True, text=True, check=True)
        assert len(out.stdout.strip().splitlines()) == len(points) + 1  # header + one line per point
    for r in rows:  # stored files: downscaled, EXIF GPS/direction kept through the phone's re-encoding
        stored = Path(seeded.server.data_dir) / r[0]
        with Image.open(stored) as im:
            assert max(im.size) == 2048
        ex = read_exif(stored)
        assert ex.lon == pytest.approx(r[1], abs=1e-6) and ex.bearing_deg == pytest.approx(r[4])
        assert ex.taken_local == now.replace(tzinfo=None)

    review = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
    review.set_default_timeout(TIMEOUT_MS)
    page = review.new_page()
    review_errors: list[str] = []
    page.on("pageerror", lambda e: review_errors.append(str(e)))
    try:
        page.goto(seeded.server.base + "/")
        page.fill("#login-token", seeded.bureau_token)
        page.click("#login-submit")
        try:
            page.wait_for_selector(f"body[data-loaded='{COUNTY}/{PERIOD}']", timeout=60_000)
        except Exception:
            raise AssertionError(f"review map did not load: {review_errors} "
                                 f"{page.evaluate('() => JSON.stringify(document.body.dataset)')}") from None
        page.locator(f"#warning-list li.warning-row[data-id='{wid}']").click()
        page.wait_for_selector(f"#detail-id:text('{wid}')")
        captions = page.locator("#detail-body figure.photo-fig figcaption.photo-caption")
        captions.first.wait_for()
        assert captions.count() == 3
        texts = [captions.nth(i).inner_text() for i in range(3)]
        assert all("距图斑" in t and "方位" in t and "field-web" in t for t in texts), texts
        assert sum("远离图斑" in t for t in texts) == 1
        assert page.locator("#detail-body figure.photo-fig.flagged").count() == 1
        page.screenshot(path=str(shots / "review_photo_captions.png"))
        with page.expect_download() as got:  # the check's GPS track, from the detail
            page.locator("#detail-verifications a.track-link").first.click()
        assert gpxpy.parse(Path(got.value.path()).read_text()).tracks[0].segments[0].points
    finally:
        review.close()

"""The review map and the field view in a real headless Chromium against a real ``cspon-rs serve``."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from webtest_support import COUNTY, HONGKONG, PERIOD, TEAM, Seeded

pytestmark = pytest.mark.browser

LOADED = f"body[data-loaded='{COUNTY}/{PERIOD}']"
#: Generous: the machine running the tests may be busy (the assertions, not the timing, are the test).
TIMEOUT_MS = 120_000


class Console:
    """Collects console errors, uncaught exceptions and failed requests of a page."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: self.errors.append(f"requestfailed: {r.url} {r.failure}"))
        self.external: list[str] = []
        page.on("request", lambda r: self.external.append(r.url)
                if not r.url.startswith(("http://127.0.0.1", "blob:", "data:")) else None)


def _login(page: Any, token: str) -> None:
    page.wait_for_selector("#login-token", state="visible")
    page.fill("#login-token", token)
    page.click("#login-submit")


def _open_review(browser: Any, seeded: Seeded) -> tuple[Any, Any, Console]:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    console = Console(page)
    page.goto(seeded.server.base + "/")
    _login(page, seeded.bureau_token)
    page.wait_for_selector(LOADED)
    page.wait_for_function("() => document.querySelectorAll('.tiles-after img.leaflet-tile-loaded').length >= 1")
    return context, page, console


def test_review_map_shows_the_stored_warnings(browser: Any, seeded: Seeded, shots: Path) -> None:
    context, page, console = _open_review(browser, seeded)
    try:
        n_db = seeded.warning_count()
        assert n_db > 0, "the job stored no warnings"
        assert page.locator("path.warning-poly").count() == n_db
        assert page.locator("#warning-list li.warning-row").count() == n_db
        # list sorted by priority, highest first (as in the store)
        with seeded.db() as con:
            top_db = con.execute("SELECT id FROM warnings WHERE period=? AND county_code=? AND is_warning=1 "
                                 "ORDER BY priority DESC LIMIT 1", (PERIOD, COUNTY)).fetchone()[0]
        assert page.locator("#warning-list li.warning-row").first.get_attribute("data-id") == top_db
        # permits and the three control lines are drawn
        import geopandas as gpd

        n_permits = len(gpd.read_file(HONGKONG / "permits.gpkg"))
        assert page.locator("path.permit-poly").count() == n_permits
        for kind in ("YJJBNT", "STBHHX", "CZKFBJ"):
            assert page.locator(f"path.control-{kind}").count() >= 1, kind
        # the imagery is XYZ tiles of the service (fetched with the page's credentials into blob URLs)
        tiles = page.eval_on_selector_all(".tiles-after img.leaflet-tile-loaded",
                                          "els => els.map(e => [e.src, e.dataset.src])")
        assert tiles and all(s.startswith("blob:") and f"/map/{COUNTY}/{PERIOD}/tiles/after/" in u for s, u in tiles)
        assert page.locator("img.leaflet-image-layer").count() == 0  # no single-PNG overlay any more
        page.screenshot(path=str(shots / "review_map.png"))

        # filter by category: rows and polygons follow the store's counts
        with seeded.db() as con:
            category = con.execute("SELECT category FROM warnings WHERE period=? AND county_code=? AND "
                                   "is_warning=1 GROUP BY category ORDER BY count(*) LIMIT 1",
                                   (PERIOD, COUNTY)).fetchone()[0]
        page.select_option("#filter-category", category)
        page.wait_for_selector(LOADED)  # the list and the map reload from the service
        n_cat = seeded.warning_count(category=category)
        assert page.locator("#warning-list li.warning-row").count() == n_cat
        assert page.locator("path.warning-poly").count() == n_cat
        page.select_option("#filter-category", "")
        page.wait_for_selector(LOADED)  # the list and the map reload from the service
        page.select_option("#filter-status", "assigned")
        page.wait_for_selector(LOADED)  # the list and the map reload from the service
        assert page.locator("#warning-list li.warning-row").count() == seeded.warning_count(status="assigned")
        page.select_option("#filter-status", "")
        page.wait_for_selector(LOADED)  # the list and the map reload from the service
        # exports of the period (the files router), downloaded with the page's credentials
        hrefs = page.eval_on_selector_all("#exports a.export-link", "els => els.map(e => e.getAttribute('href'))")
        assert hrefs and all(h.startswith("/api/v1/exports/") and f"period={PERIOD}" in h for h in hrefs)
        with page.expect_download() as dl:
            page.click("#exports a[data-path='warnings.xlsx']")
        from openpyxl import load_workbook

        assert dl.value.suggested_filename.endswith(".xlsx"), dl.value.suggested_filename
        book = load_workbook(io.BytesIO(Path(dl.value.path()).read_bytes()))
        assert book.active.max_row == 2 + n_db + 1  # two header rows, the warnings, the total row
        assert not console.errors, console.errors
        assert not console.external, f"requests left the machine: {console.external}"
    finally:
        context.close()


def test_clicking_a_warning_zooms_and_shows_chips_reasons_history(
    browser: Any, seeded: Seeded, shots: Path,
) -> None:
    context, page, console = _open_review(browser, seeded)
    try:
        zoom_before = page.evaluate("window.csponReview.map.getZoom()")
        row = page.locator("#warning-list li.warning-row").first
        warning_id = row.get_attribute("data-id")
        row.click()
        page.wait_for_selector(f"#detail-id:text('{warning_id}')")
        # client-side chips (crop of the overlays with outlines) are drawn and not blank
        page.wait_for_selector("#detail canvas.chip-canvas[data-which='after']")
        spread = page.evaluate("""() => Array.from(
            document.querySelectorAll('#detail canvas.chip-canvas')).map(c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let lo = 255, hi = 0;
            for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
            return hi - lo; })""")
        assert len(spread) == 2 and min(spread) > 30, spread
        # the service's chips (PNG, fetched with the token) load
        with seeded.server.client(seeded.bureau_token) as c:
            n_chips = len(c.get(f"/warnings/{warning_id}").json()["chip_urls"])
        assert n_chips >= 1
        page.wait_for_function("() => Array.from(document.querySelectorAll('#detail img.chip-img'))"
                               f".filter(i => i.complete && i.naturalWidth > 0).length === {n_chips}")
        page.wait_for_function(f"() => window.csponReview.map.getZoom() > {zoom_before}")  # zoomed in on it
        bounds = page.evaluate("(() => { const b = window.csponReview.map.getBounds(); "
                               "return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]; })()")
        with seeded.db() as con:
            lon, lat = con.execute("SELECT centroid_lon, centroid_lat FROM warnings WHERE id=?",
                                   (warning_id,)).fetchone()
        assert bounds[0] < lon < bounds[2] and bounds[1] < lat < bounds[3]
        with seeded.db() as con:
            reasons, permits = con.execute("SELECT reasons, permits FROM warnings WHERE id=?",
                                           (warning_id,)).fetchone()
            n_history = con.execute("SELECT count(*) FROM warning_history WHERE warning_id=?",
                                    (warning_id,)).fetchone()[0]
        assert page.locator("#detail ol.reasons > li").count() == len(json.loads(reasons))
        assert page.locator("#detail table.permits tbody tr").count() == len(json.loads(permits or "[]"))
        assert page.locator("#detail-history > li").count() == n_history
        page.screenshot(path=str(shots / "review_detail.png"))
        assert not console.errors, console.errors
    finally:
        context.close()


def test_bureau_assigns_a_warning_from_the_detail_panel(browser: Any, seeded: Seeded) -> None:
    context, page, console = _open_review(browser, seeded)
    try:
        page.select_option("#filter-status", "new")
        page.wait_for_selector(LOADED)  # the list and the map reload from the service
        row = page.locator("#warning-list li.warning-row").first
        warning_id = row.get_attribute("data-id")
        row.click()
        page.wait_for_selector("#detail-actions input[name=team]")
        page.fill("#detail-actions input[name=team]", "二队")
        page.fill("#detail-actions input[name=due_date]", "2026-12-31")
        page.click("#detail-actions button.primary")
        page.wait_for_selector("#detail-status:has-text('assigned')")
        with seeded.db() as con:
            status, team, due = con.execute("SELECT status, assigned_team, due_date FROM warnings WHERE id=?",
                                            (warning_id,)).fetchone()
            by = con.execute("SELECT by FROM warning_history WHERE warning_id=? AND event='assigned'",
                             (warning_id,)).fetchone()
        assert (status, team, str(due)) == ("assigned", "二队", "2026-12-31")
        assert by == ("bureau-web",)
        # the list follows: the row left the "new" filter, and shows up under "assigned"
        assert page.locator(f"#warning-list li[data-id='{warning_id}']").count() == 0
        page.select_option("#filter-status", "assigned")
        page.wait_for_selector(LOADED)  # the list and the map reload from the service
        moved = page.locator(f"#warning-list li[data-id='{warning_id}']")
        assert moved.get_attribute("data-status") == "assigned"
        assert not console.errors, console.errors
    finally:
        context.close()


def _stored_tokens(page: Any) -> list[str]:
    return page.evaluate("Object.values(localStorage).concat(Object.values(sessionStorage))")


def test_page_asks_for_a_token_and_rejects_a_bad_one(browser: Any, seeded: Seeded) -> None:
    """The token is traded for an HttpOnly session cookie: nothing secret is left in the page's storage."""
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(seeded.server.base + "/")
        _login(page, "not-a-token")
        page.wait_for_selector("#login-message:has-text('无效')")
        assert page.locator("#login").is_visible()
        assert seeded.bureau_token not in _stored_tokens(page)
        _login(page, seeded.bureau_token)
        page.wait_for_selector(LOADED)
        assert seeded.bureau_token not in _stored_tokens(page)
        assert page.evaluate("localStorage.getItem('cspon.token')") is None
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["cspon_session"]["httpOnly"] and cookies["cspon_session"]["sameSite"] == "Strict"
        assert page.evaluate("document.cookie").find("cspon_session") < 0  # not readable by scripts
        page.reload()  # the cookie session survives a reload (GET /session gives the CSRF token back)
        page.wait_for_selector(LOADED)
        assert not page.locator("#login").is_visible()
        page.click("#logout")
        page.wait_for_selector("#login-token", state="visible")
        assert "cspon_session" not in {c["name"] for c in context.cookies()}
    finally:
        context.close()


def test_a_token_kept_by_the_old_page_is_traded_for_a_session(browser: Any, seeded: Seeded) -> None:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(seeded.server.base + "/static/favicon.svg")
        page.evaluate(f"localStorage.setItem('cspon.token', {json.dumps(seeded.bureau_token)})")
        page.goto(seeded.server.base + "/")
        page.wait_for_selector(LOADED)
        assert page.evaluate("localStorage.getItem('cspon.token')") is None
        assert "cspon_session" in {c["name"] for c in context.cookies()}
    finally:
        context.close()


def _jpeg(path: Path) -> Path:
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(path, format="JPEG")
    return path


def test_field_view_posts_a_verification_with_a_photo(browser: Any, seeded: Seeded, shots: Path,
                                                      tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True, locale="zh-CN")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    console = Console(page)
    try:
        page.goto(seeded.server.base + "/field")
        _login(page, seeded.field_token)
        page.wait_for_selector("body[data-loaded='1']")
        # due-date labels against the phone's date: a past date is overdue, not "due today"
        labels = page.evaluate("() => { const d = new Date(), p = n => String(n).padStart(2, '0'); "
                               "const today = d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()); "
                               "return [Cspon.dueLabel('2018-05-01'), Cspon.dueLabel(today), "
                               "Cspon.dueLabel('2999-01-01'), Cspon.dueLabel(null)]; }")
        assert labels[0].startswith("逾期") and labels[1].startswith("今日到期") and labels[2].startswith("到期 ")
        assert labels[3] == ""
        with seeded.db() as con:
            open_ids = {r[0] for r in con.execute(
                "SELECT id FROM warnings WHERE assigned_team=? AND status='assigned'", (TEAM,))}
        cards = page.locator("#targets li.target")
        assert {cards.nth(i).get_attribute("data-id") for i in range(cards.count())} == open_ids
        target = page.locator("#targets li.target").first
        warning_id = target.get_attribute("data-id")
        with seeded.db() as con:
            lon, lat = con.execute("SELECT centroid_lon, centroid_lat FROM warnings WHERE id=?",
                                   (warning_id,)).fetchone()
        geo = target.locator("a.geo-link").get_attribute("href")
        assert geo.startswith(f"geo:{lat:.6f},{lon:.6f}")
        assert f"position={lon:.6f},{lat:.6f}" in target.locator("a.amap-link").get_attribute("href")
        page.screenshot(path=str(shots / "field_view.png"))
        # the same route as a GPX file for other apps
        with page.expect_download() as dl:
            page.click("#route-files a[data-fmt='gpx']")
        import gpxpy

        gpx = gpxpy.parse(Path(dl.value.path()).read_text(encoding="utf-8"))
        assert {w.name for w in gpx.waypoints} == open_ids and len(gpx.routes) == 1

        target.locator("button.verify-btn").click()
        form = target.locator("form.vform")
        form.locator("input[name=result][value=illegal]").check()
        form.locator("input[name=actual_use]").fill("厂房 factory")
        form.locator("textarea[name=notes]").fill("现场已建成两层厂房 two-storey shed built")
        form.locator("input[name=photos]").set_input_files(str(_jpeg(tmp_path / "site.jpg")))
        page.screenshot(path=str(shots / "field_form.png"))
        form.locator("button[type=submit]").click()
        page.wait_for_selector(f"li.target[data-id='{warning_id}'].done")

        with seeded.db() as con:
            status, result = con.execute("SELECT status, verification_result FROM warnings WHERE id=?",
                                         (warning_id,)).fetchone()
            notes, by, recorded_at = con.execute("SELECT notes, by, recorded_at FROM verifications WHERE warning_id=?",
                                                 (warning_id,)).fetchone()
            n_photos, taken_at = con.execute("SELECT count(*), max(taken_at) FROM api_photos WHERE warning_id=?",
                                             (warning_id,)).fetchone()
        assert (status, result) == ("verified", "illegal")
        # the card now says what the check found (not "suspected")
        assert "违法" in page.inner_text(f"li.target[data-id='{warning_id}'] .done-note")
        # the notes as typed; the facts the phone recorded (device time, the photo's file time) are columns
        assert by == "field-web"
        assert notes == "现场已建成两层厂房 two-storey shed built"
        assert recorded_at is not None and taken_at is not None
        assert n_photos == 1
        assert not console.errors, console.errors
    finally:
        context.close()

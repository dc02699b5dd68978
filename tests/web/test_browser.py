"""The review map and the field view in a real headless Chromium against a real ``cspon-rs serve``."""

from __future__ import annotations

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
    page.wait_for_function("document.querySelectorAll('img.leaflet-image-layer').length >= 1 && "
                           "Array.from(document.querySelectorAll('img.leaflet-image-layer'))"
                           ".every(i => i.complete && i.naturalWidth > 0)")
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
        # both dates are image overlays from the service (blob URLs fetched with the token)
        srcs = page.eval_on_selector_all("img.leaflet-image-layer", "els => els.map(e => e.src)")
        assert srcs and all(s.startswith("blob:") for s in srcs)
        page.screenshot(path=str(shots / "review_map.png"))

        # filter by category: rows and polygons follow the store's counts
        with seeded.db() as con:
            category = con.execute("SELECT category FROM warnings WHERE period=? AND county_code=? AND "
                                   "is_warning=1 GROUP BY category ORDER BY count(*) LIMIT 1",
                                   (PERIOD, COUNTY)).fetchone()[0]
        page.select_option("#filter-category", category)
        n_cat = seeded.warning_count(category=category)
        assert page.locator("#warning-list li.warning-row").count() == n_cat
        assert page.locator("path.warning-poly").count() == n_cat
        page.select_option("#filter-category", "")
        page.select_option("#filter-status", "assigned")
        assert page.locator("#warning-list li.warning-row").count() == seeded.warning_count(status="assigned")
        page.select_option("#filter-status", "")
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
        page.wait_for_function("Array.from(document.querySelectorAll('#detail img.chip-img'))"
                               f".filter(i => i.complete && i.naturalWidth > 0).length === {n_chips}")
        page.wait_for_function(f"window.csponReview.map.getZoom() > {zoom_before}")  # zoomed in on it
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
        moved = page.locator(f"#warning-list li[data-id='{warning_id}']")
        assert moved.get_attribute("data-status") == "assigned"
        assert not console.errors, console.errors
    finally:
        context.close()


def test_page_asks_for_a_token_and_rejects_a_bad_one(browser: Any, seeded: Seeded) -> None:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(seeded.server.base + "/")
        _login(page, "not-a-token")
        page.wait_for_selector("#login-message:has-text('无效')")
        assert page.locator("#login").is_visible()
        assert page.evaluate("localStorage.getItem('cspon.token')") is None
        _login(page, seeded.bureau_token)
        page.wait_for_selector(LOADED)
        assert page.evaluate("localStorage.getItem('cspon.token')") == seeded.bureau_token
        page.click("#logout")
        page.wait_for_selector("#login-token", state="visible")
        assert page.evaluate("localStorage.getItem('cspon.token')") is None
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
            notes, by = con.execute("SELECT notes, by FROM verifications WHERE warning_id=?",
                                    (warning_id,)).fetchone()
            n_photos = con.execute("SELECT count(*) FROM api_photos WHERE warning_id=?",
                                   (warning_id,)).fetchone()[0]
        assert (status, result) == ("verified", "illegal")
        assert notes == "现场已建成两层厂房 two-storey shed built" and by == "field-web"
        assert n_photos == 1
        assert not console.errors, console.errors
    finally:
        context.close()

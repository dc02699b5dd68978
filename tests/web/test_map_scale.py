"""The review map with a county's 10,000 warnings (``benchmarks/seed_county.py``) in a real Chromium against a
real ``cspon-rs serve``: it opens without downloading the period, draws the view, pages the list, and a click
shows the warning's detail and history quickly. The figures are printed (``-s`` shows them)."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from webtest_support import HONGKONG, REPO, Server, add_user

pytestmark = pytest.mark.browser

COUNTY, PERIOD, N = "810000", "2018Q1", 10_000
LOADED = f"body[data-loaded='{COUNTY}/{PERIOD}']"  # list, view, imagery and layers
DRAWN = f"body[data-drawn='{COUNTY}/{PERIOD}']"  # the first view's warnings are on the map
#: Bounds far above the targets (open ≤ 2 s, click ≤ 300 ms) that a busy shared CI machine still meets; the
#: page before this change needed 7 s to open 2,900 warnings and 22.7 s for its first click.
OPEN_LIMIT_S, CLICK_LIMIT_S = 10.0, 5.0


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    if not (HONGKONG / "before_20160927.tif").exists():
        pytest.skip(f"bundled demo data not found: {HONGKONG}")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from seed_county import seed_county

    root = tmp_path_factory.mktemp("map_scale")
    seed_county(f"sqlite:///{root / 'county.sqlite'}", n=N, county_code=COUNTY, period=PERIOD)
    server = Server(root / "county.sqlite", root / "data", root / "serve.log", ["--no-worker"]).start()
    try:
        yield server, add_user(server.db_url, "bureau-county", "bureau", COUNTY)
    finally:
        server.stop()


def test_review_map_at_county_scale(browser: Any, county: tuple[Server, str]) -> None:
    import sqlite3

    server, token = county
    with sqlite3.connect(server.db_path) as con:
        n_warnings = con.execute("SELECT count(*) FROM warnings WHERE is_warning=1").fetchone()[0]
    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
    context.set_default_timeout(60_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(server.base + "/")
        page.wait_for_selector("#login-token", state="visible")
        page.fill("#login-token", token)
        page.click("#login-submit")
        page.wait_for_selector(LOADED)
        # open to first map: a fresh page with the session cookie, warnings drawn over the imagery
        page.goto("about:blank")
        started = time.perf_counter()
        page.goto(f"{server.base}/#{COUNTY}/{PERIOD}")
        page.wait_for_selector(DRAWN)
        open_s = time.perf_counter() - started
        page.wait_for_selector(LOADED)
        loaded_s = time.perf_counter() - started
        view = page.evaluate("window.csponReview.state.view")
        assert view["total"] == n_warnings and view["mode"] == "points"
        assert page.evaluate("Object.keys(window.csponReview.state.layersById).length") == n_warnings
        sizes = page.evaluate("() => performance.getEntriesByType('resource').map(e => [e.name, e.encodedBodySize])")
        assert not any("warnings.geojson" in url for url, _ in sizes), "the page downloaded the whole period"
        assert page.locator("#warning-list li.warning-row").count() == 200
        assert page.locator("#list-count").inner_text().startswith(f"200 / {n_warnings}")
        warning_bytes = sum(n for url, n in sizes if "/features?" in url or "/list?" in url or "/summary" in url)

        # a detail click on the settled map (imagery tiles loaded: Chromium's 6 connections per host are free)
        page.wait_for_function("() => document.querySelectorAll('.imagery-tiles img').length > 0 && "
                               "document.querySelectorAll('.imagery-tiles img:not(.leaflet-tile-loaded)').length === 0")
        # facts and the whole history of that warning, loaded on demand
        clicks: list[float] = []
        for k in range(6):
            row = page.locator("#warning-list li.warning-row").nth(k)
            warning_id = row.get_attribute("data-id")
            with sqlite3.connect(server.db_path) as con:
                n_history = con.execute("SELECT count(*) FROM warning_history WHERE warning_id=?",
                                        (warning_id,)).fetchone()[0]
            started = time.perf_counter()
            row.click()
            page.wait_for_function(
                "([id, n]) => { const d = document.getElementById('detail-id'); return d && d.textContent === id"
                " && document.querySelectorAll('#detail-history > li').length === n; }",
                arg=[warning_id, n_history])
            clicks.append(time.perf_counter() - started)
            page.wait_for_selector(LOADED)
        # zoomed in on the last one: its view is drawn as outlines again
        page.wait_for_function("() => { const s = window.csponReview.state;"
                               " return !s.viewPending && (s.view || {}).mode === 'polygons'; }")
        # a click on an outline on the map (SVG or canvas) selects the warning under the pointer
        before = page.evaluate("window.csponReview.state.selected")
        x, y = page.evaluate("""() => { const r = window.csponReview, s = r.state;
            const seen = r.map.getBounds().pad(-0.2);
            const id = s.view.features.map(f => f.id).filter(i => i !== s.selected
                && seen.contains(s.layersById[i].getBounds().getCenter()))[0];
            const p = r.map.latLngToContainerPoint(s.layersById[id].getBounds().getCenter());
            const box = document.getElementById('map').getBoundingClientRect();
            return [box.left + p.x, box.top + p.y]; }""")
        page.mouse.click(x, y)
        page.wait_for_function("b => { const s = window.csponReview.state.selected; return s && s !== b &&"
                               " (document.getElementById('detail-id') || {}).textContent === s; }", arg=before)
        # the export row's 报告 PDF submits a report job and shows its state (the worker is off here: queued)
        page.click("#exports a[data-path='report.pdf']")
        page.wait_for_selector("#report-job[data-state='queued']")
        with sqlite3.connect(server.db_path) as con:
            jobs = con.execute("SELECT kind, state, county_code, period FROM api_jobs").fetchall()
        assert jobs == [("report", "queued", COUNTY, PERIOD)], jobs
        page.click("#exports a[data-path='report.pdf']")  # while it runs, a second click submits nothing
        page.wait_for_selector("#toast:has-text('报告生成中')")
        with sqlite3.connect(server.db_path) as con:
            assert con.execute("SELECT count(*) FROM api_jobs").fetchone()[0] == 1
        print(f"\nreview map, {n_warnings:,} warnings: open to first map {open_s:.2f} s "
              f"(layers and list too: {loaded_s:.2f} s) "
              f"(warnings data {warning_bytes / 1e6:.2f} MB: summary, 200 list rows, {n_warnings:,} points); "
              f"detail click first {clicks[0] * 1000:.0f} ms, median of the next five "
              f"{statistics.median(clicks[1:]) * 1000:.0f} ms, slowest {max(clicks) * 1000:.0f} ms")
        assert open_s <= OPEN_LIMIT_S, open_s
        assert max(clicks) <= CLICK_LIMIT_S, clicks
        assert not errors, errors
    finally:
        context.close()


def test_map_endpoints_page_by_view(county: tuple[Server, str]) -> None:
    """features: outlines up to 3000 in view, points beyond, counts per view; list: pages in priority order."""
    server, token = county
    with server.client(token) as c:
        summary = c.get(f"/map/{COUNTY}/{PERIOD}/summary").json()
        (south, west), (north, east) = summary["bounds"]
        everything = c.get(f"/map/{COUNTY}/{PERIOD}/features", params={"bbox": f"{west},{south},{east},{north}"})
        body = everything.json()
        assert body["mode"] == "points" and body["total"] == summary["total"] == len(body["features"])
        assert sum(f["count"] for f in summary["categories"]) == summary["total"]
        # a small view: outlines with the few properties the map draws
        cx, cy = (west + east) / 2, (south + north) / 2
        small = c.get(f"/map/{COUNTY}/{PERIOD}/features",
                      params={"bbox": f"{cx - 0.002},{cy - 0.002},{cx + 0.002},{cy + 0.002}"}).json()
        assert small["mode"] == "polygons" and 0 < small["total"] == len(small["features"]) < 3000
        first = small["features"][0]
        assert set(first) == {"id", "c", "s", "r", "p", "g"} and first["g"]["type"] in ("Polygon", "MultiPolygon")
        priorities = [f["p"] for f in small["features"]]
        assert priorities == sorted(priorities, reverse=True)
        # filters narrow both
        cat = summary["categories"][0]
        only = c.get(f"/map/{COUNTY}/{PERIOD}/features", params={"bbox": f"{west},{south},{east},{north}",
                                                                 "category": cat["value"]}).json()
        assert only["total"] == cat["count"] and {f["c"] for f in only["features"]} == {cat["value"]}
        page1 = c.get(f"/map/{COUNTY}/{PERIOD}/list", params={"limit": 50}).json()
        page2 = c.get(f"/map/{COUNTY}/{PERIOD}/list", params={"limit": 50, "offset": 50}).json()
        assert page1["total"] == summary["total"]
        ranked = [w["priority"] for w in page1["items"] + page2["items"]]
        assert ranked == sorted(ranked, reverse=True) and len({w["id"] for w in page1["items"] + page2["items"]}) == 100
        # another county: 403
        other = add_user(server.db_url, "bureau-other", "bureau", "510000")
    with server.client(other) as c:
        assert c.get(f"/map/{COUNTY}/{PERIOD}/summary").status_code == 403
        assert c.get(f"/map/{COUNTY}/{PERIOD}/features", params={"bbox": "114,22,115,23"}).status_code == 403
